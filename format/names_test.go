package format_test

import (
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"qemu-server.conf": "qemu-server.conf",
		"drive-scsi0":      "drive-scsi0",
		"../x":             "_._x",
		"..":               "__", // a trailing dot: Windows drops it
		".":                "_",
		"x.":               "x_",
		"CON":              "_CON", // Windows' device names, any case, any extension
		"nul.txt":          "_nul.txt",
		"com1":             "_com1",
		"LPT9.raw":         "_LPT9.raw",
		"console":          "console",
		"com10":            "com10",
		"":                 "_",
		"a/b\\c:d":         "a_b_c_d",
		"\x1b[31mred":      "__31mred",
		".hidden":          "_hidden",
		"ünï":              "__n__",
	} {
		if got := format.SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
	}
	long := format.SafeName(strings.Repeat("x", 5000))
	if len(long) != 209 || strings.ContainsAny(long, "/.") {
		t.Errorf("long name sanitised to %d bytes: %q", len(long), long)
	}
}

// plainRules name files as a format without a vmstate stream might.
type plainRules struct{}

func (plainRules) Disk(name string) (string, error) { return name, nil }
func (plainRules) ConfigFile(name string) string    { return format.SafeName(name) }
func (plainRules) MountFile(disk string) string     { return format.SafeName(disk) + ".img" }
func (plainRules) DiskFile(disk, ext string) (string, bool) {
	return format.SafeName(disk) + ext, false
}

// TestNameClashes: every way two names meet, once each, in the order of
// the uses (extracted raw, qcow2, mounted), names quoted where they need
// it; files without a name are not made.
func TestNameClashes(t *testing.T) {
	got := format.NameClashes(plainRules{}, []string{"a.raw", "b c", "b_c", "a.raw", "d.img"}, []string{"a", "d"})
	want := []string{
		`config "b c" and config b_c would both be extracted as b_c`,
		"config a.raw appears twice",
		"config a.raw and device a would both be extracted as a.raw",
		"config d.img and device d would both be mounted as d.img",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("NameClashes:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cs := format.Clashes([]format.NamedFile{{"x", ""}, {"y", ""}, {"z", "f"}}); len(cs) != 0 {
		t.Errorf("unnamed files clash: %v", cs)
	}
}

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

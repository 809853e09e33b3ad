package input_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// infoStream is a stream that describes itself.
type infoStream struct{ fakeStream }

func (infoStream) Info(st format.FileStat) format.Info {
	return format.Info{{Key: "via", Value: "stream"}, {Key: "name", Value: st.Name}, {Key: "size", Value: st.Size}}
}

// describing returns a registry of "st", read as a stream and described
// either way, "noinfo", which info cannot describe, and a "raw" fallback.
func describing() *format.Registry {
	var r format.Registry
	fileInfo := func(via string) func(*os.File, format.FileStat) (format.Info, error) {
		return func(_ *os.File, st format.FileStat) (format.Info, error) {
			return format.Info{{Key: "via", Value: via}, {Key: "name", Value: st.Name}, {Key: "size", Value: st.Size}}, nil
		}
	}
	r.Register(format.Format{
		Name:  "st",
		Probe: func(head []byte) bool { return bytes.HasPrefix(head, []byte("ST")) },
		OpenStream: func(r io.Reader, o format.OpenOptions) (format.Stream, error) {
			if b, _ := io.ReadAll(io.LimitReader(r, 2)); string(b) != "ST" {
				return nil, format.ErrUnknownFormat
			}
			return infoStream{}, nil
		},
		Info: fileInfo("file"),
	})
	r.Register(format.Format{Name: "noinfo", Probe: func(head []byte) bool { return bytes.HasPrefix(head, []byte("NI")) }})
	r.Register(format.Format{Name: "raw", Info: fileInfo("raw")})
	return &r
}

// TestDescribe: a file read at random is described by its format's Info,
// from the file; standard input, a compressed file and a file of a
// format named that reads as a stream by the stream; what no format
// claims as raw; and the refusals name what is wrong.
func TestDescribe(t *testing.T) {
	r := describing()
	dir := t.TempDir()
	at := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	st := at("a.st", []byte("ST and more"))
	var z bytes.Buffer
	w, _ := compress.NewWriter(&z, compress.Zstd, 1)
	w.Write([]byte("ST compressed"))
	w.Close()
	zst := at("a.st.zst", z.Bytes())
	plain := at("plain", []byte("nothing known"))
	describe := func(path string, o input.Options) string {
		t.Helper()
		in, err := input.Describe(context.Background(), r, path, o)
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		in.WriteText(&b)
		return strings.ReplaceAll(strings.TrimSpace(b.String()), "\n", " ")
	}
	for _, tc := range []struct {
		path string
		o    input.Options
		want string
	}{
		{st, input.Options{}, "file " + st + " 11"},
		{st, input.Options{Format: "st"}, "stream " + st + " 11"},
		{zst, input.Options{}, "stream " + zst + " " + strconv.Itoa(z.Len())},
		{"-", input.Options{Stdin: strings.NewReader("ST on stdin")}, "stream <stdin> -1"},
		{plain, input.Options{}, "raw " + plain + " 13"},
		{st, input.Options{Format: "raw"}, "raw " + st + " 11"},
		{at("a.ni", []byte("NI")), input.Options{}, "error: -f noinfo: info cannot describe noinfo files"},
		{dir, input.Options{}, "error: " + dir + " is a directory"},
		{dir, input.Options{Format: "st"}, "error: " + dir + ": is a directory, not an archive"},
		{at("x.vmdk", []byte("KDMV....")), input.Options{}, "error: " + dir + "/x.vmdk: a VMDK image, which vmaconv does not read (qemu-img info -f vmdk reads it)"},
	} {
		if got := describe(tc.path, tc.o); got != tc.want {
			t.Errorf("Describe(%s, -f %q) = %q, want %q", filepath.Base(tc.path), tc.o.Format, got, tc.want)
		}
	}
	for _, f := range []string{"nope", "noinfo"} {
		if _, err := input.Describe(context.Background(), r, st, input.Options{Format: f}); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("-f %s: %v, want a usage error", f, err)
		}
	}
}

// TestShortName: an archive's devices are offered by the short names
// DiskName takes (Proxmox's keys); other devices and images have none.
func TestShortName(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: make([]byte, 4096)},
		{Name: "drive-tpmstate0-backup", Data: make([]byte, 4096)},
		{Name: "vmstate", Data: make([]byte, 4096)},
	}, nil, "seq", 0)
	in, _, err := open(t, format.Ref{Path: file(t, "a.vma", raw)}, input.Options{Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var got []string
	for i := range in.Devices() {
		got = append(got, in.ShortName(i))
	}
	if strings.Join(got, ",") != "scsi0,tpmstate0," {
		t.Errorf("short names %q", got)
	}
	img, _, err := open(t, format.Ref{Path: file(t, "d.raw", make([]byte, 512))}, input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if s := img.ShortName(0); s != "" {
		t.Errorf("an image's disk: short name %q", s)
	}
}

// TestMissingArchive: a missing ARCHIVE:DEVICE is reported as the missing
// archive, by Open and Describe; a name whose last part is not a device
// stays whole.
func TestMissingArchive(t *testing.T) {
	dir := t.TempDir()
	for arg, want := range map[string]string{
		dir + "/backup.vma:scsi0":       "open " + dir + "/backup.vma: no such file or directory",
		dir + "/backup.vma:drive-scsi0": "open " + dir + "/backup.vma: no such file or directory",
		dir + "/a:b.raw":                "open " + dir + "/a:b.raw: no such file or directory",
	} {
		_, err := input.Open(context.Background(), reg, format.ParseRef(arg), input.Options{})
		if err == nil || err.Error() != want || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open(%s): %v, want %s", arg, err, want)
		}
		_, err = input.Describe(context.Background(), reg, arg, input.Options{})
		if err == nil || err.Error() != want {
			t.Errorf("Describe(%s): %v, want %s", arg, err, want)
		}
	}
}

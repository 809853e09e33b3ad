package input_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
		{at("x.qed", []byte("QED\x00....")), input.Options{}, "error: " + dir + "/x.qed: a QED image, which vmaconv does not read (qemu-img info -f qed reads it)"},
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

// TestExported: an archive's disks by their names, those shown refuses
// left out, those named only; an image's one disk under the name given,
// in whole sectors; a name the archive lacks, or no disk, is an error.
func TestExported(t *testing.T) {
	arc := file(t, "a.vma", testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: make([]byte, 4096)},
		{Name: "vmstate", Data: make([]byte, 4096)},
		{Name: "drive-efidisk0", Data: make([]byte, 1000)},
	}, nil, "seq", 0))
	img := file(t, "d.raw", make([]byte, 1000))
	state := file(t, "s.vma", testutil.WriteArchive(t, []testutil.Disk{{Name: "vmstate", Data: make([]byte, 512)}}, nil, "seq", 0))
	for _, tc := range []struct {
		path  string
		names []string
		want  string
	}{
		{arc, nil, "drive-scsi0:4096,drive-efidisk0:1000"},
		{arc, []string{"drive-efidisk0"}, "drive-efidisk0:1000"},
		{arc, []string{"drive-virtio7"}, arc + `: no device "drive-virtio7" in the archive (devices: drive-scsi0, drive-efidisk0)`},
		{arc, []string{"vmstate"}, arc + `: no device "vmstate" in the archive (devices: drive-scsi0, drive-efidisk0)`},
		{img, nil, "disk:1024"},
		{img, []string{"disk"}, "disk:1024"},
		{img, []string{"drive-scsi0"}, img + `: no device "drive-scsi0" in the archive (devices: disk)`},
		{state, nil, state + ": no disk devices in the archive"},
	} {
		in, _, err := open(t, format.Ref{Path: tc.path}, input.Options{RandomAccess: true})
		if err != nil {
			t.Fatal(err)
		}
		ds, err := in.Exported(tc.names, "disk", func(n string) bool { return n != "vmstate" })
		var got []string
		for _, d := range ds {
			got = append(got, fmt.Sprintf("%s:%d", d.Name, d.Source.Size()))
		}
		if err != nil {
			got = []string{err.Error()}
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("Exported(%s, %q) = %s, want %s", filepath.Base(tc.path), tc.names, got, tc.want)
		}
		in.Close()
	}
}

// TestNames: an archive's disks by name and short name, compressed too;
// nothing for an image, a missing file, or a FIFO that says nothing in
// time.
func TestNames(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: make([]byte, 512)}, {Name: "vmstate", Data: make([]byte, 512)}}, nil, "seq", 0)
	var z bytes.Buffer
	w, _ := compress.NewWriter(&z, compress.Gzip, 1)
	w.Write(raw)
	w.Close()
	for _, path := range []string{file(t, "a.vma", raw), file(t, "a.vma.gz", z.Bytes())} {
		if got := strings.Join(input.Names(reg, path, 10*time.Second), ","); got != "drive-scsi0,scsi0,vmstate" {
			t.Errorf("Names(%s) = %s", filepath.Base(path), got)
		}
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file(t, "d.raw", make([]byte, 512)), fifo + ".missing", fifo} {
		if got := input.Names(reg, path, 100*time.Millisecond); got != nil {
			t.Errorf("Names(%s) = %q, want none", filepath.Base(path), got)
		}
	}
	// The FIFO's reader, blocked in its open, is let go.
	if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		f.Close()
	}
}

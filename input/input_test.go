package input_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

var reg = all.Registry()

// disks are the archive's devices: two small disks.
var disks = []testutil.Disk{
	{Name: "drive-efidisk0", Data: testutil.GenDisk(1, 540672, "data")},
	{Name: "drive-scsi0", Data: testutil.GenDisk(2, 1<<20+3*vma.ClusterSize, "mixed")},
}

// archive returns the archive of disks, plain and compressed as given
// (compress.Zstd, compress.Gzip, "seekable", or "").
func archive(t *testing.T, comp string) []byte {
	t.Helper()
	raw := testutil.WriteArchive(t, disks, []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}, "interleave", 0)
	if comp == "" {
		return raw
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	if comp == "seekable" {
		w, err = compress.NewSeekableWriter(&buf, 1)
	} else {
		w, err = compress.NewWriter(&buf, comp, 1)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// file writes b to a file named name in a new directory.
func file(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// open opens ref, collecting the notes.
func open(t *testing.T, ref format.Ref, o input.Options) (*input.Input, []string, error) {
	t.Helper()
	var notes []string
	o.Note = func(msg string) { notes = append(notes, msg) }
	in, err := input.Open(context.Background(), reg, ref, o)
	if in != nil {
		t.Cleanup(func() { in.Close() })
	}
	return in, notes, err
}

// sums reads every disk of in (at random or as a stream) and returns the
// sha256 of each.
func sums(t *testing.T, in *input.Input) [][32]byte {
	t.Helper()
	out := make([][32]byte, len(in.Devices()))
	if st := in.Stream(); st != nil {
		hs := make([]io.Writer, len(out))
		bufs := make([]*bytes.Buffer, len(out))
		for i := range hs {
			bufs[i] = &bytes.Buffer{}
			hs[i] = bufs[i]
		}
		if err := st.Read(context.Background(), format.StreamOptions{InOrder: hs}); err != nil {
			t.Fatal(err)
		}
		for i, b := range bufs {
			out[i] = sha256.Sum256(b.Bytes())
		}
		return out
	}
	for i := range out {
		src := in.Source(i)
		b := make([]byte, src.Size())
		if _, err := src.ReadAt(b, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		out[i] = sha256.Sum256(b)
	}
	return out
}

func want() [][32]byte {
	var out [][32]byte
	for _, d := range disks {
		out = append(out, sha256.Sum256(d.Data))
	}
	return out
}

// TestOpenArchive: an archive file is read at random; compressed, with
// Stream, or from standard input, as a stream, its progress counting the
// file's bytes; with RandomAccess, a compressed one through the seekable
// zstd format or the cache. Every way gives the same disks.
func TestOpenArchive(t *testing.T) {
	plain := file(t, "vm.vma", archive(t, ""))
	zst := file(t, "vm.vma.zst", archive(t, compress.Zstd))
	seekable := file(t, "vm.vma.zst", archive(t, "seekable"))
	gz := file(t, "vm.vma.gz", archive(t, compress.Gzip))
	cacheDir := t.TempDir()
	for _, tc := range []struct {
		name   string
		ref    format.Ref
		o      input.Options
		stream bool
		comp   string
		note   string
	}{
		{name: "file", ref: format.Ref{Path: plain}},
		{name: "file, Stream", ref: format.Ref{Path: plain}, o: input.Options{Stream: true}, stream: true},
		{name: "zstd", ref: format.Ref{Path: zst}, stream: true, comp: compress.Zstd},
		{name: "gzip", ref: format.Ref{Path: gz}, stream: true, comp: compress.Gzip},
		{name: "stdin", ref: format.Ref{Path: "-"}, o: input.Options{Stdin: bytes.NewReader(archive(t, compress.Zstd))}, stream: true, comp: compress.Zstd},
		{name: "seekable, RandomAccess", ref: format.Ref{Path: seekable}, o: input.Options{RandomAccess: true}, comp: compress.Zstd},
		{name: "gzip, RandomAccess", ref: format.Ref{Path: gz}, o: input.Options{RandomAccess: true, Cache: input.CacheOptions{Dir: cacheDir}}, comp: compress.Gzip, note: "decompressed once into"},
		{name: "gzip, RandomAccess, cached", ref: format.Ref{Path: gz}, o: input.Options{RandomAccess: true, Cache: input.CacheOptions{Dir: cacheDir}}, comp: compress.Gzip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, notes, err := open(t, tc.ref, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := in.Stream() != nil; got != tc.stream || (in.Image() == nil) != tc.stream {
				t.Errorf("read as a stream: %v (image %v), want %v", got, in.Image() != nil, tc.stream)
			}
			if in.Compression() != tc.comp || in.Format().Name != vma.Name || !in.Archive() {
				t.Errorf("format %s, compression %q; want vma, %q", in.Format().Name, in.Compression(), tc.comp)
			}
			if got := strings.Join(notes, "\n"); tc.note == "" && got != "" || !strings.Contains(got, tc.note) {
				t.Errorf("notes %q, want %q", got, tc.note)
			}
			if len(in.Devices()) != 2 || in.Devices()[1].Name != "drive-scsi0" || len(in.Configs()) != 1 || len(in.Selected()) != 2 {
				t.Fatalf("devices %v, configs %d, selected %v", in.Devices(), len(in.Configs()), in.Selected())
			}
			if got := sums(t, in); got[0] != want()[0] || got[1] != want()[1] {
				t.Error("disks differ")
			}
			if tc.stream && tc.ref.Path != "-" {
				if fi, _ := os.Stat(tc.ref.Path); in.Consumed() != fi.Size() || in.Size() != fi.Size() {
					t.Errorf("consumed %d of %d bytes, want the file's %d", in.Consumed(), in.Size(), fi.Size())
				}
			}
		})
	}
}

// TestOpenSelect: ARCHIVE:DEVICE selects a device by its name or by its
// short name; what is not there, and a device of an image, are refused.
func TestOpenSelect(t *testing.T) {
	plain := file(t, "vm.vma", archive(t, ""))
	for _, dev := range []string{"drive-scsi0", "scsi0"} {
		in, _, err := open(t, format.Ref{Path: plain, Device: dev}, input.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if i, err := in.One(); err != nil || i != 1 || in.DiskName(i) != plain+":drive-scsi0" {
			t.Errorf("%s: selected %d (%v), named %q", dev, i, err, in.DiskName(i))
		}
	}
	in, _, _ := open(t, format.Ref{Path: plain}, input.Options{})
	if _, err := in.One(); err == nil || !strings.Contains(err.Error(), "name one device as "+plain+":DEVICE (devices: drive-efidisk0, drive-scsi0)") {
		t.Errorf("no device named: %v", err)
	}
	if _, _, err := open(t, format.Ref{Path: plain, Device: "virtio3"}, input.Options{}); err == nil || err.Error() != plain+`: no device "virtio3" in the archive (devices: drive-efidisk0, drive-scsi0)` {
		t.Errorf("a device not there: %v", err)
	}
	img := file(t, "disk.img", disks[0].Data)
	if _, _, err := open(t, format.Ref{Path: img, Device: "scsi0"}, input.Options{}); err == nil || !strings.Contains(err.Error(), "is a raw image, not an archive") {
		t.Errorf("a device of an image: %v", err)
	}
}

// TestOpenImage: what no format claims is raw, said in a note, unless -f
// raw says so; a format vmaconv does not read is refused; a raw image is
// seen as whole sectors once asked.
func TestOpenImage(t *testing.T) {
	data := testutil.GenDisk(3, 100000, "data")
	img := file(t, "disk.img", data)
	in, notes, err := open(t, format.Ref{Path: img}, input.Options{})
	if err != nil || in.Format().Name != "raw" || in.Archive() || in.Stream() != nil {
		t.Fatalf("%v: format %v", err, in)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "no known format found, reading it as raw") {
		t.Errorf("notes %q", notes)
	}
	in.WholeSectors()
	if n := in.Devices()[0].Size; n != 100352 || in.Source(0).Size() != n {
		t.Errorf("whole sectors: %d bytes", n)
	}
	if _, notes, _ := open(t, format.Ref{Path: img}, input.Options{Format: "raw"}); len(notes) != 0 {
		t.Errorf("-f raw: notes %q", notes)
	}
	qed := file(t, "disk.qed", append([]byte("QED\x00"), data...))
	var fe *input.ForeignError
	if _, notes, err := open(t, format.Ref{Path: qed}, input.Options{}); !errors.As(err, &fe) || fe.Foreign.QEMU != "qed" || len(notes) != 0 {
		t.Errorf("a QED image: %v, notes %q", err, notes)
	}
	if _, _, err := open(t, format.Ref{Path: qed}, input.Options{Format: "raw"}); err != nil {
		t.Errorf("a QED image with -f raw: %v", err)
	}
	if _, _, err := open(t, format.Ref{Path: img}, input.Options{Format: "nope"}); !errors.Is(err, format.ErrUnsupportedOption) {
		t.Errorf("-f nope: %v", err)
	}
	var z bytes.Buffer
	zw, _ := compress.NewWriter(&z, compress.Zstd, 1)
	zw.Write(data)
	zw.Close()
	zst := file(t, "disk.img.zst", z.Bytes())
	if _, _, err := open(t, format.Ref{Path: zst}, input.Options{}); err == nil || !strings.HasPrefix(err.Error(), zst+": zstd-compressed, but not a VMA archive inside: vma: not a VMA archive") {
		t.Errorf("a compressed image: %v", err)
	}
}

// TestOpenPipes: standard input and a FIFO are read as streams, can only
// be archives, and are refused where random access is needed.
func TestOpenPipes(t *testing.T) {
	raw := archive(t, "")
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	feed(t, fifo, raw)
	in, _, err := open(t, format.Ref{Path: fifo, Device: "scsi0"}, input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if in.Stream() == nil || in.Size() != -1 || len(in.Selected()) != 1 {
		t.Fatalf("stream %v, size %d, selected %v", in.Stream() != nil, in.Size(), in.Selected())
	}
	if got := sums(t, in); got[1] != want()[1] {
		t.Error("disk differs")
	}
	for _, tc := range []struct {
		ref  string
		o    input.Options
		want error
	}{
		{"-", input.Options{Format: "raw"}, format.ErrUnsupportedOption},
		{fifo, input.Options{Format: "qcow2"}, format.ErrUnsupportedOption},
		{"-", input.Options{RandomAccess: true}, input.ErrSequential},
		{fifo, input.Options{RandomAccess: true}, input.ErrSequential},
	} {
		tc.o.Stdin = bytes.NewReader(raw)
		if tc.ref == fifo {
			feed(t, fifo, raw)
		}
		if _, _, err := open(t, format.Ref{Path: tc.ref}, tc.o); !errors.Is(err, tc.want) {
			t.Errorf("%s %+v: %v, want %v", tc.ref, tc.o, err, tc.want)
		}
	}
}

// feed writes data into the FIFO at path once a reader opens it. A reader
// still waiting after 20 seconds is let go (the writer's end opened and
// closed), and a writer still waiting when the test ends too.
func feed(t *testing.T, path string, data []byte) {
	opened := make(chan struct{})
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		close(opened)
		if err == nil {
			f.Write(data)
			f.Close()
		}
	}()
	timer := time.AfterFunc(20*time.Second, func() {
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	t.Cleanup(func() {
		timer.Stop()
		select {
		case <-opened:
		default:
			if f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
				<-opened
				f.Close()
			}
		}
	})
}

// TestOpenStreamOnly: an input its format cannot index is read as a
// stream, unless random access is needed; notes of a failed open are not
// said.
func TestOpenStreamOnly(t *testing.T) {
	var r format.Registry
	r.Register(format.Format{
		Name:  "fake",
		Probe: func(head []byte) bool { return bytes.HasPrefix(head, []byte("FAKE")) },
		Open: func(f *os.File, o format.OpenOptions) (format.Image, error) {
			o.Note("a note of an open that fails")
			f.Close()
			return nil, format.ErrStreamOnly
		},
		OpenStream: func(r io.Reader, o format.OpenOptions) (format.Stream, error) {
			return fakeStream{}, nil
		},
	})
	p := file(t, "x.fake", []byte("FAKE and more"))
	var notes []string
	in, err := input.Open(context.Background(), &r, format.Ref{Path: p}, input.Options{Note: func(m string) { notes = append(notes, m) }})
	if err != nil || in.Stream() == nil || in.Format().Name != "fake" {
		t.Fatalf("%v, %v", err, in)
	}
	in.Close()
	if _, err := input.Open(context.Background(), &r, format.Ref{Path: p}, input.Options{RandomAccess: true, Note: func(m string) { notes = append(notes, m) }}); !errors.Is(err, format.ErrStreamOnly) {
		t.Errorf("RandomAccess: %v", err)
	}
	if len(notes) != 0 {
		t.Errorf("notes %q: want none of an open that failed", notes)
	}
}

type fakeStream struct{}

func (fakeStream) Close() error                                     { return nil }
func (fakeStream) Devices() []format.Device                         { return []format.Device{{Size: 512}} }
func (fakeStream) Configs() []format.Config                         { return nil }
func (fakeStream) Read(context.Context, format.StreamOptions) error { return nil }

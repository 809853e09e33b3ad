package formattest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/pipeline"
)

// TestSinks checks every format of r that writes against every source:
// srcs are files each holding want as their only disk, in some format r
// can open at random (a read-only format will do). Every source is
// converted into every sink (a new file, and a stream where the format
// takes one) with pipeline.Copy, and the output, read back through the
// same format, must hold want (followed by zeros, for formats that round
// sizes up to whole sectors, or as a format's DiskSize says); the output of a format that cannot be read
// (a write-only one) is read back by the format of r whose Probe claims
// it, and fails the test if there is none. An archive sink also gets all
// sources at once as several disks. Abort must leave nothing behind;
// Commit must not replace an existing file unless told to, and then keeps
// its permissions.
func TestSinks(t *testing.T, r *format.Registry, srcs []string, want []byte) {
	t.Helper()
	for _, name := range r.Names() {
		out, _ := r.Lookup(name)
		if out.Create == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for _, src := range srcs {
				t.Run(filepath.Base(src), func(t *testing.T) {
					img := openAny(t, r, src)
					defer img.Close()
					devs, sources := disksOf(img, out.Multi)
					dst := filepath.Join(dir, filepath.Base(src)+".out")
					convertTo(t, out, format.Dest{Path: dst}, devs, sources)
					checkOutput(t, r, out, dst, [][]byte{want})
					// A stream, where the format writes one.
					var buf bytes.Buffer
					sink, err := out.Create(format.Dest{Path: "-", Stream: &buf}, devs, format.CreateOptions{})
					if errors.Is(err, format.ErrUnsupportedOption) {
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					copyAll(t, sink, sources)
					if err := sink.Commit(); err != nil {
						t.Fatal(err)
					}
					streamed := dst + ".stream"
					if err := os.WriteFile(streamed, buf.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					checkOutput(t, r, out, streamed, [][]byte{want})
				})
			}
			if out.Multi {
				t.Run("all", func(t *testing.T) {
					var devs []format.Device
					var sources []format.Source
					var wants [][]byte
					for i, src := range srcs {
						img := openAny(t, r, src)
						defer img.Close()
						d, s := disksOf(img, true)
						d[0].Name = "drive-scsi" + string(rune('0'+i))
						devs, sources, wants = append(devs, d...), append(sources, s...), append(wants, want)
					}
					dst := filepath.Join(dir, "all.out")
					convertTo(t, out, format.Dest{Path: dst}, devs, sources)
					checkOutput(t, r, out, dst, wants)
				})
			}
			t.Run("rules", func(t *testing.T) { testRules(t, out, srcs[0], r) })
		})
	}
}

func openAny(t *testing.T, r *format.Registry, path string) format.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	head, err := format.ReadHead(f)
	if err != nil {
		t.Fatal(err)
	}
	fm, err := r.Detect(head)
	if err != nil {
		fm, err = r.Lookup("raw")
		if err != nil {
			t.Fatal(err)
		}
	}
	if fm.Open == nil {
		f.Close()
		t.Fatalf("%s: %s cannot be read at random: a source must be", filepath.Base(path), fm.Name)
	}
	img, err := fm.Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func disksOf(img format.Image, named bool) ([]format.Device, []format.Source) {
	var devs []format.Device
	var srcs []format.Source
	for _, d := range img.Disks() {
		name := d.Name
		if named && name == "" {
			name = "drive-scsi0"
		}
		if !named {
			name = ""
		}
		devs = append(devs, format.Device{Name: name, Size: d.Source.Size()})
		srcs = append(srcs, d.Source)
	}
	return devs, srcs
}

func copyAll(t *testing.T, sink format.Sink, srcs []format.Source) {
	t.Helper()
	for i, s := range srcs {
		if err := pipeline.Copy(context.Background(), sink.Disk(i), s, pipeline.Options{Workers: 3, ChunkSize: 128 << 10}); err != nil {
			sink.Abort()
			t.Fatal(err)
		}
	}
}

func convertTo(t *testing.T, out format.Format, d format.Dest, devs []format.Device, srcs []format.Source) {
	t.Helper()
	sink, err := out.Create(d, devs, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	copyAll(t, sink, srcs)
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
}

// checkOutput reads path back through its format fm, or, if fm cannot be
// read, the format of r that probes it, and compares each disk.
func checkOutput(t *testing.T, r *format.Registry, fm format.Format, path string, wants [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if fm.Open == nil {
		head, err := format.ReadHead(f)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := r.Detect(head)
		if err != nil || rd.Open == nil {
			f.Close()
			t.Fatalf("%s: no format of the registry reads back what %s writes: register one that does", filepath.Base(path), fm.Name)
		}
		fm = rd
	}
	img, err := fm.Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatalf("reading back %s: %v", filepath.Base(path), err)
	}
	defer img.Close()
	disks := img.Disks()
	if len(disks) != len(wants) {
		t.Fatalf("%s: %d disks, want %d", filepath.Base(path), len(disks), len(wants))
	}
	for i, d := range disks {
		want := wants[i]
		n := d.Source.Size()
		if !sizeOK(r, n, int64(len(want))) {
			t.Errorf("%s disk %d: size %d for %d bytes", filepath.Base(path), i, n, len(want))
			continue
		}
		got := make([]byte, n)
		if k, err := d.Source.ReadAt(got, 0); int64(k) != n {
			t.Fatalf("%s disk %d: read %d of %d: %v", filepath.Base(path), i, k, n, err)
		}
		if !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, n-int64(len(want)))) {
			t.Errorf("%s disk %d: content differs", filepath.Base(path), i)
		}
	}
}

// sizeOK reports whether a disk of n bytes may hold want bytes: n is want
// rounded up to whole sectors at most, or the size a format of r gives
// such a disk (Format.DiskSize: the disk may have been written by any
// format on its way, as a source or as a sink).
func sizeOK(r *format.Registry, n, want int64) bool {
	if want <= n && n <= (want+511)&^511 {
		return true
	}
	for _, f := range r.Formats() {
		if f.DiskSize != nil && n == f.DiskSize(want, format.Values{}) {
			return true
		}
	}
	return false
}

// testRules checks Abort and Commit against files.
func testRules(t *testing.T, out format.Format, src string, r *format.Registry) {
	dir := t.TempDir()
	img := openAny(t, r, src)
	defer img.Close()
	devs, sources := disksOf(img, out.Multi)
	dst := filepath.Join(dir, "x")
	list := func() []string {
		es, _ := os.ReadDir(dir)
		var n []string
		for _, e := range es {
			n = append(n, e.Name())
		}
		return n
	}

	// Abort midway leaves nothing.
	sink, err := out.Create(format.Dest{Path: dst}, devs, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	half := make([]byte, min(sources[0].Size(), 200000))
	io.ReadFull(io.NewSectionReader(sources[0], 0, int64(len(half))), half)
	if _, err := sink.Disk(0).WriteAt(half, 0); err != nil {
		t.Fatal(err)
	}
	if err := sink.Abort(); err != nil {
		t.Fatal(err)
	}
	if l := list(); len(l) != 0 {
		t.Errorf("Abort left %v", l)
	}

	// An existing file is not replaced without Overwrite, even if it
	// appears while the output is written; with it, its mode is kept.
	sink, err = out.Create(format.Dest{Path: dst}, devs, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	copyAll(t, sink, sources)
	if err := os.WriteFile(dst, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sink.Commit(); err == nil {
		t.Error("Commit replaced a file that appeared meanwhile")
	}
	if b, _ := os.ReadFile(dst); string(b) != "someone else's" {
		t.Error("the file that appeared meanwhile was changed")
	}
	if _, err := out.Create(format.Dest{Path: dst}, devs, format.CreateOptions{}); err == nil {
		t.Error("Create accepted an existing destination without Overwrite")
	}
	if l := list(); len(l) != 1 {
		t.Errorf("failed commits left %v", l)
	}
	sink, err = out.Create(format.Dest{Path: dst, Overwrite: true}, devs, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	copyAll(t, sink, sources)
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("overwritten file: %v, mode %v; want 0600 kept", err, fi.Mode().Perm())
	}
	if _, err := os.Stat(dst); errors.Is(err, fs.ErrNotExist) {
		t.Error("no output")
	}
}

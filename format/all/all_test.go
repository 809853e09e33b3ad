package all_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// TestSinks: every built-in sink round-trips every built-in source: the
// disk written by every format that writes and reads (a raw image, a
// qcow2 image, an archive device: a format added to the registry is in
// the list by itself), and a qcow2 image with zlib- and zstd-compressed
// clusters, hold the same disk, neither 64 KiB nor 512-byte aligned.
func TestSinks(t *testing.T) {
	reg := all.Registry()
	dir := t.TempDir()
	want := testutil.GenDisk(1, 3<<20+7*512+100, "text")
	var srcs []string
	write := func(fm format.Format, name, opts string) {
		t.Helper()
		v, err := format.ParseOptions(fm, opts)
		if err != nil {
			t.Fatal(err)
		}
		dev := format.Device{Size: int64(len(want))}
		if fm.Multi {
			dev.Name = "drive-scsi0"
		}
		p := filepath.Join(dir, name)
		sink, err := fm.Create(format.Dest{Path: p}, []format.Device{dev}, format.CreateOptions{Options: v})
		if err != nil {
			t.Fatal(err)
		}
		if err := pipeline.Copy(context.Background(), sink.Disk(0), memSource(want), pipeline.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := sink.Commit(); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, p)
	}
	for _, fm := range reg.Formats() {
		if fm.Create != nil && fm.Open != nil {
			write(fm, "disk."+fm.Name, "")
		}
	}
	qcow2, err := reg.Lookup("qcow2")
	if err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{"zlib", "zstd"} {
		write(qcow2, "disk-"+comp+".qcow2", "compress="+comp)
		plain, _ := os.Stat(filepath.Join(dir, "disk.qcow2"))
		if fi, err := os.Stat(srcs[len(srcs)-1]); err != nil || fi.Size() >= plain.Size()/2 {
			t.Fatalf("%s is not compressed: %v", comp, err)
		}
	}
	// The qcow2 and archive sources round want up to 512 bytes with
	// zeros; TestSinks allows that.
	formattest.TestSinks(t, reg, srcs, want)
}

// memSource is a format.Source of a byte slice.
type memSource []byte

func (m memSource) Size() int64  { return int64(len(m)) }
func (m memSource) Close() error { return nil }

func (m memSource) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m).ReadAt(p, off)
}

var _ io.ReaderAt = memSource(nil)

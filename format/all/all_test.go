package all_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestSinks: every built-in sink round-trips every built-in source: a raw
// image, a qcow2 image (plain, zlib- and zstd-compressed) and an archive
// device hold the same disk, neither 64 KiB nor 512-byte aligned.
func TestSinks(t *testing.T) {
	dir := t.TempDir()
	want := testutil.GenDisk(1, 3<<20+7*512+100, "text")
	put := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srcs := []string{
		put("disk.raw", want),
		put("disk.vma", testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: want}}, nil, "local", 1)),
	}
	for _, comp := range []string{"", qcow2.Zlib, qcow2.Zstd} {
		p := filepath.Join(dir, "disk-"+comp+".qcow2")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w, err := qcow2.NewWriter(f, int64(len(want)), qcow2.WriterOptions{Compress: comp})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(want, 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		srcs = append(srcs, p)
	}
	// The qcow2 sources round want up to 512 bytes with zeros; TestSinks
	// allows that.
	formattest.TestSinks(t, all.Registry(), srcs, want)
}

package ova_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/ova"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// benchDisk is 64 MiB: half data (compressible text and random), half
// zero.
func benchDisk() []byte {
	d := make([]byte, 64<<20)
	copy(d, testutil.GenDisk(40, 16<<20, "text"))
	copy(d[32<<20:], testutil.GenDisk(41, 16<<20, "data"))
	return d
}

func writeBench(tb testing.TB, path string, disk []byte) {
	sink, err := ova.Format.Create(format.Dest{Path: path, NoSync: true, Overwrite: true}, []format.Device{{Name: "drive-scsi0", Size: int64(len(disk))}}, format.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := pipeline.Copy(context.Background(), sink.Disk(0), memSource(disk), pipeline.Options{}); err != nil {
		tb.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkWrite writes a disk into an OVA (a streamOptimized VMDK):
// SetBytes is the disk's bytes.
func BenchmarkWrite(b *testing.B) {
	disk := benchDisk()
	path := filepath.Join(b.TempDir(), "bench.ova")
	b.SetBytes(int64(len(disk)))
	b.ReportAllocs()
	for b.Loop() {
		writeBench(b, path, disk)
	}
}

// BenchmarkRead reads the disk of an OVA through its zero map, as a
// conversion does: SetBytes is the disk's bytes.
func BenchmarkRead(b *testing.B) {
	disk := benchDisk()
	path := filepath.Join(b.TempDir(), "bench.ova")
	writeBench(b, path, disk)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	img, err := ova.Format.Open(f, format.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	src := img.Disks()[0].Source
	b.SetBytes(int64(len(disk)))
	b.ReportAllocs()
	for b.Loop() {
		if err := pipeline.Scan(context.Background(), src, pipeline.Options{}, func(int64, int64, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

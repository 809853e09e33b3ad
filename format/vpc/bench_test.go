package vpc_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vpc"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// benchDisk is 64 MiB, half data and half zeros, in runs of 1 MiB.
func benchDisk() []byte {
	b := testutil.GenDisk(11, 64<<20, "data")
	for off := 1 << 20; off < len(b); off += 2 << 20 {
		clear(b[off : off+1<<20])
	}
	return b
}

// writeBench writes disk into a new VHD at path in chunks of 1 MiB, in
// order, zero chunks declared, as the pipeline writes.
func writeBench(b *testing.B, path string, disk []byte, o vpc.WriterOptions) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w, err := vpc.NewWriter(f, int64(len(disk)), o)
	if err != nil {
		b.Fatal(err)
	}
	for off := 0; off < len(disk); off += 1 << 20 {
		chunk := disk[off : off+1<<20]
		if testutil.AllZero(chunk) {
			err = w.ZeroAt(int64(off), 1<<20)
		} else {
			_, err = w.WriteAt(chunk, int64(off))
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWrite: bytes of disk content (64 MiB, half zeros) written into
// a dynamic and a fixed VHD.
func BenchmarkWrite(b *testing.B) {
	disk := benchDisk()
	for _, c := range []struct {
		name string
		o    vpc.WriterOptions
	}{{"dynamic", vpc.WriterOptions{}}, {"fixed", vpc.WriterOptions{Fixed: true}}} {
		b.Run(c.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "bench.vhd")
			b.SetBytes(int64(len(disk)))
			for b.Loop() {
				os.Remove(path)
				writeBench(b, path, disk, c.o)
			}
		})
	}
}

// BenchmarkRead: bytes of disk content (64 MiB, half zeros) read from a
// dynamic and a fixed VHD in chunks of 1 MiB, zero chunks found from the
// zero map and not read, as the pipeline reads.
func BenchmarkRead(b *testing.B) {
	disk := benchDisk()
	for _, c := range []struct {
		name string
		o    vpc.WriterOptions
	}{{"dynamic", vpc.WriterOptions{}}, {"fixed", vpc.WriterOptions{Fixed: true}}} {
		b.Run(c.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "bench.vhd")
			writeBench(b, path, disk, c.o)
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			src, err := vpc.Open(f, format.OpenOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(disk)))
			for b.Loop() {
				for off := int64(0); off < int64(len(disk)); off += 1 << 20 {
					if r, err := src.Region(off, 1<<20); err != nil {
						b.Fatal(err)
					} else if r.Zero && r.Length == 1<<20 {
						continue
					}
					if _, err := src.ReadAt(buf, off); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

package vhdx

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// benchDisk is the disk the benchmarks write and read: 256 MiB, its MiB
// alternately data (random) and holes, as the pipeline delivers it (1 MiB
// writes in order, the holes declared zero).
const benchDisk = 256 << 20

func writeBench(b *testing.B, path string, o WriterOptions) {
	data := testutil.GenDisk(1, 1<<20, "data")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, benchDisk, o)
	if err != nil {
		b.Fatal(err)
	}
	for off := int64(0); off < benchDisk; off += 1 << 20 {
		if off>>20%2 == 0 {
			_, err = w.WriteAt(data, off)
		} else {
			err = w.ZeroAt(off, 1<<20)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWriter writes benchDisk into a new dynamic (and a fixed)
// image: bytes are the disk's, holes included.
func BenchmarkWriter(b *testing.B) {
	for _, fixed := range []bool{false, true} {
		name := "dynamic"
		if fixed {
			name = "fixed"
		}
		b.Run(name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "w.vhdx")
			b.SetBytes(benchDisk)
			b.ReportAllocs()
			for b.Loop() {
				os.Remove(path)
				writeBench(b, path, WriterOptions{Fixed: fixed})
			}
		})
	}
}

// BenchmarkRead reads benchDisk from a dynamic image as the pipeline
// does: the zero map first, then the data in 1 MiB reads; bytes are the
// disk's, holes included.
func BenchmarkRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "r.vhdx")
	writeBench(b, path, WriterOptions{})
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	src, err := Open(f, format.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(benchDisk)
	b.ReportAllocs()
	for b.Loop() {
		for off := int64(0); off < benchDisk; {
			r, err := src.Region(off, benchDisk-off)
			if err != nil {
				b.Fatal(err)
			}
			if !r.Zero {
				for pos := off; pos < off+r.Length; pos += int64(len(buf)) {
					n := min(int64(len(buf)), off+r.Length-pos)
					if _, err := src.ReadAt(buf[:n], pos); err != nil {
						b.Fatal(err)
					}
				}
			}
			off += r.Length
		}
	}
}

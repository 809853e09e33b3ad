package vdi_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vdi"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// benchDisk is 64 MiB, half data: blocks of random data and blocks of
// zeros, alternating.
func benchDisk() []byte {
	d := testutil.GenDisk(20, 64*mib, "data")
	for off := mib; off < len(d); off += 2 * mib {
		clear(d[off : off+mib])
	}
	return d
}

// writeBench writes d as the pipeline does, in 1 MiB chunks, zero ones
// declared with ZeroAt.
func writeBench(b *testing.B, path string, d []byte, o vdi.WriterOptions) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w, err := vdi.NewWriter(f, int64(len(d)), o)
	if err != nil {
		b.Fatal(err)
	}
	for off := 0; off < len(d); off += mib {
		c := d[off : off+mib]
		if zero.IsZero(c) {
			err = w.ZeroAt(int64(off), mib)
		} else {
			_, err = w.WriteAt(c, int64(off))
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWrite writes a 64 MiB disk, half data, as a dynamic and a
// static image (without syncing). Bytes: the disk's.
func BenchmarkWrite(b *testing.B) {
	d := benchDisk()
	for _, static := range []bool{false, true} {
		name := map[bool]string{false: "dynamic", true: "static"}[static]
		b.Run(name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "w.vdi")
			b.SetBytes(int64(len(d)))
			b.ReportAllocs()
			for b.Loop() {
				os.Remove(path)
				writeBench(b, path, d, vdi.WriterOptions{Static: static})
			}
		})
	}
}

// BenchmarkRead reads a 64 MiB disk, half data, from a dynamic and a
// static image as the pipeline does: its zero map, then 1 MiB reads of
// the data. Bytes: the disk's.
func BenchmarkRead(b *testing.B) {
	d := benchDisk()
	for _, static := range []bool{false, true} {
		name := map[bool]string{false: "dynamic", true: "static"}[static]
		b.Run(name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "r.vdi")
			writeBench(b, path, d, vdi.WriterOptions{Static: static})
			buf := make([]byte, mib)
			b.SetBytes(int64(len(d)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				src, err := vdi.Open(f, format.OpenOptions{})
				if err != nil {
					b.Fatal(err)
				}
				for pos := int64(0); pos < src.Size(); {
					r, err := src.Region(pos, src.Size()-pos)
					if err != nil {
						b.Fatal(err)
					}
					for off := pos; !r.Zero && off < pos+r.Length; off += mib {
						if _, err := src.ReadAt(buf[:min(mib, pos+r.Length-off)], off); err != nil {
							b.Fatal(err)
						}
					}
					pos += r.Length
				}
				src.Close()
			}
		})
	}
}

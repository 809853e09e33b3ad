package bench

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// disk returns size bytes in which about half of the 4 KiB blocks are zero
// and the rest is random (not compressible), like a used VM disk.
func disk(size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < size; off += vma.BlockSize {
		if rng.IntN(2) == 0 {
			continue
		}
		for i := off; i < off+vma.BlockSize; i += 8 {
			v := rng.Uint64() | 1
			for k := range 8 {
				b[i+k] = byte(v >> (8 * k))
			}
		}
	}
	return b
}

// BenchmarkIsZero: zero detection of a cluster's 4 KiB blocks where the
// work happens: blocks that are zero (every byte read), blocks whose only
// non-zero byte is the last (every byte read, then data), and a used
// disk's mix (half the blocks zero, the rest random data, found at the
// first word). Device bytes per second: a cluster's 64 KiB each op. The
// result must be used, or the compiler could drop the call; a wrong
// answer fails the benchmark.
func BenchmarkIsZero(b *testing.B) {
	late := make([]byte, vma.ClusterSize)
	for i := vma.BlockSize - 1; i < len(late); i += vma.BlockSize {
		late[i] = 1
	}
	mixed := disk(vma.ClusterSize)
	wantMixed := 0
	for i := 0; i < vma.ClusterSize; i += vma.BlockSize {
		if bytes.Count(mixed[i:i+vma.BlockSize], []byte{0}) == vma.BlockSize {
			wantMixed++
		}
	}
	for _, c := range []struct {
		name  string
		data  []byte
		zeros int // blocks that are zero
	}{
		{"zero", make([]byte, vma.ClusterSize), vma.ClusterSize / vma.BlockSize},
		{"late", late, 0},
		{"mixed", mixed, wantMixed},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(vma.ClusterSize)
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				for i := 0; i < vma.ClusterSize; i += vma.BlockSize {
					if zero.IsZero(c.data[i : i+vma.BlockSize]) {
						n++
					}
				}
				if n != c.zeros {
					b.Fatalf("%d zero blocks, want %d", n, c.zeros)
				}
			}
		})
	}
}

const benchDisk = 64 << 20

// pack writes data as one device and returns the archive.
func pack(tb testing.TB, w io.Writer, data []byte) {
	vw := vma.NewWriter(w)
	id, err := vw.AddDevice("drive-scsi0", int64(len(data)))
	if err != nil {
		tb.Fatal(err)
	}
	for c := int64(0); c*vma.ClusterSize < int64(len(data)); c++ {
		if err := vw.WriteCluster(id, c, data[c*vma.ClusterSize:(c+1)*vma.ClusterSize]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := vw.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPack measures the extent packer: zero detection, copying stored
// blocks, extent headers and MD5, into io.Discard (device bytes per
// second: the 64 MiB disk packed; archive-MB/s counts the archive written).
func BenchmarkPack(b *testing.B) {
	data := disk(benchDisk)
	var archive countWriter
	pack(b, &archive, data)
	b.SetBytes(benchDisk)
	b.ReportAllocs()
	for b.Loop() {
		pack(b, io.Discard, data)
	}
	reportArchiveRate(b, int64(archive))
}

// countWriter counts the bytes written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// BenchmarkParse measures reading an archive in memory: extent checks and
// reconstruction into an io.WriterAt (device bytes per second: the 64 MiB
// disk restored; archive-MB/s counts the archive read).
func BenchmarkParse(b *testing.B) {
	var archive bytes.Buffer
	pack(b, &archive, disk(benchDisk))
	dst := discardAt{}
	b.SetBytes(benchDisk)
	b.ReportAllocs()
	for b.Loop() {
		r, err := vma.NewReader(bytes.NewReader(archive.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := vma.Unpack(context.Background(), r, map[int]io.WriterAt{1: dst}, vma.UnpackOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	reportArchiveRate(b, int64(archive.Len()))
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

package testutil

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/vmaconv/vmaconv/format/vma"
)

// genDiskRef is GenDisk as first written, one rng call per random byte:
// the bytes the sha256 pins in tests and the shipped example hold.
func genDiskRef(seed uint64, size int64, style string) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, uint64(size)))
	fill := func(p []byte) {
		for i := range p {
			p[i] = byte(rng.Uint32()) | 1
		}
	}
	switch style {
	case "data":
		fill(b)
	case "mixed":
		for off := int64(0); off < size; off += vma.BlockSize {
			blk := b[off:min(off+vma.BlockSize, size)]
			switch k := rng.IntN(10); {
			case (off/vma.ClusterSize)%5 == 2:
			case k < 4:
			case k < 6:
				blk[rng.IntN(len(blk))] = 0x5a
			default:
				fill(blk)
			}
		}
	}
	return b
}

// TestGenDiskBytes: the fast generator gives the reference's bytes, for
// random data and for mixed disks, where its draws interleave with the
// rng's own, at sizes that end inside a block.
func TestGenDiskBytes(t *testing.T) {
	for _, style := range []string{"data", "mixed"} {
		for i, size := range []int64{0, 1, 4095, 300000, 1<<20 + 4096 + 7} {
			if got, want := GenDisk(uint64(i+1), size, style), genDiskRef(uint64(i+1), size, style); !bytes.Equal(got, want) {
				t.Errorf("GenDisk(%d, %d, %q) differs from the reference", i+1, size, style)
			}
		}
	}
}

package ntfs

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// fuzzBase is testdata/fuzzbase.img.gz: a 2 MiB mkntfs image (512-byte
// clusters, 1 KiB records) with 40 small files (the root index is a B-tree
// of two blocks), an alternate data stream "file1:alt" and a sparse file,
// its $LogFile and $UpCase zeroed to keep it small.
var fuzzBase = sync.OnceValues(func() ([]byte, error) {
	f, err := os.Open("testdata/fuzzbase.img.gz")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(z)
})

// Regions of the fuzz base worth mutating: the boot sector, MFT records
// 0–15, the root's record, the files' records and the root's index
// blocks.
var fuzzRegions = [][2]int{
	{0, 512},
	{16384, 4096},
	{16384 + 4*1024, 4096},
	{16384 + 8*1024, 4096},
	{16384 + 64*1024, 4096},
	{16384 + 101*1024, 4096},
	{0x45000, 4096},
	{0x140E00, 4096},
}

// overlay returns base with data's bytes after its first 4 copied at the
// offset its first 4 bytes give.
func overlay(base, data []byte) []byte {
	img := bytes.Clone(base)
	if len(data) >= 4 {
		off := int(binary.LittleEndian.Uint32(data) % uint32(len(img)))
		copy(img[off:], data[4:])
	}
	return img
}

// FuzzOpen opens mutated copies of the fuzz base and walks their trees.
func FuzzOpen(f *testing.F) {
	base, err := fuzzBase()
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range fuzzRegions {
		seed := binary.LittleEndian.AppendUint32(nil, uint32(r[0]))
		f.Add(append(seed, base[r[0]:r[0]+r[1]]...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img := overlay(base, data)
		r := bytes.NewReader(img)
		Probe(r, int64(len(img)))
		fsys, err := Open(r, int64(len(img)))
		if err != nil {
			if !errors.Is(err, guest.ErrCorrupt) {
				t.Fatalf("Open: %v does not wrap ErrCorrupt", err)
			}
			return
		}
		guesttest.Walk(fsys, 4<<20)
	})
}

// TestFuzzBase checks that the fuzz base reads whole: the seeds reach the
// code.
func TestFuzzBase(t *testing.T) {
	t.Parallel()
	base, err := fuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := Open(bytes.NewReader(base), int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	if err := guesttest.Walk(fsys, 1<<30); err != nil {
		t.Fatal(err)
	}
	root, _ := fsys.Root()
	nodes, err := root.ReadDir()
	if err != nil || len(nodes) != 42 {
		t.Fatalf("root: %d entries, %v; want 42", len(nodes), err)
	}
}

func BenchmarkReadLarge(b *testing.B) {
	img, err := image()
	if err != nil {
		b.Skipf("building the image: %v", err)
	}
	fsys := openImage(b, img)
	root, err := fsys.Root()
	if err != nil {
		b.Fatal(err)
	}
	nodes, err := root.ReadDir()
	if err != nil {
		b.Fatal(err)
	}
	var file guest.File
	for _, n := range nodes {
		if n.Info().Name == "large" {
			if file, err = n.Open(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if file == nil {
		b.Fatal("no file large")
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(file.Size())
	for b.Loop() {
		for off := int64(0); off < file.Size(); off += int64(len(buf)) {
			if _, err := file.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

// FuzzLZNT1 decompresses arbitrary compression units.
func FuzzLZNT1(f *testing.F) {
	f.Add([]byte{0x06, 0xB0, 0x08, 'a', 'b', 'c', 0x06, 0x20, 'X', 0x03, 0x30, 'D', 'E', 'F', 'G'})
	f.Fuzz(func(t *testing.T, in []byte) {
		out := make([]byte, 16*4096)
		lznt1(out, in)
	})
}

// FuzzRuns decodes arbitrary run lists of a small volume and reads the
// stream they map, plain or compressed.
func FuzzRuns(f *testing.F) {
	f.Add([]byte{0x11, 0x10, 0x05, 0x01, 0x20, 0x21, 0x04, 0x08, 0x00}, uint16(afSparse), uint8(4), int64(200000))
	f.Add([]byte{0x11, 0x03, 0x05, 0x01, 0x0d, 0x11, 0x10, 0x20, 0x00}, uint16(afCompressed), uint8(4), int64(130000))
	f.Fuzz(func(t *testing.T, mapping []byte, flags uint16, cu uint8, size int64) {
		dev := bytes.Repeat([]byte{0x12, 0x34, 0x56, 0x78, 0x9a}, 64*512/5)
		v := &volume{dev: bytes.NewReader(dev), size: int64(len(dev)), boot: boot{clusterSize: 512, clusters: 64, recordSize: 1024}}
		a := &attr{typ: atData, nonres: true, flags: flags, compUnit: cu, mapping: mapping, dataSize: size, initSize: size, allocSize: size}
		s0 := &stream{v: v, what: "probe"}
		end, err := s0.decodeRuns(mapping, 0)
		if err != nil {
			return
		}
		a.lastVCN = end - 1
		s, err := v.newStream("fuzz", []*attr{a})
		if err != nil {
			return
		}
		buf := make([]byte, 70000)
		for _, off := range []int64{0, s.Size() / 3, s.Size() - 100} {
			s.ReadAt(buf, off)
		}
		off := int64(0)
		for range 100 {
			start, end, err := s.Data(off)
			if err != nil {
				break
			}
			if start < off || end <= start || end > s.Size() {
				t.Fatalf("Data(%d) = %d, %d", off, start, end)
			}
			off = end
		}
	})
}

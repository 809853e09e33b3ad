package vhdx

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// heapAfterGC returns the bytes of live heap.
func heapAfterGC() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestBoundedMemory: a 512 GiB dynamic image of 2 MiB blocks (a BAT of
// 2 MiB: 128 chunks of 2049 entries), with 4 KiB of data in 300 blocks
// written in random order and the holes declared last, also out of
// order, is written holding at most maxHeld chunks' entries (the others
// put aside in the file and read back), passes qemu-img check, and is
// read back with a few MiB of memory: the BAT through its cache, the
// holes mapped without reading them.
func TestBoundedMemory(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	const size = 512 << 30
	path := filepath.Join(t.TempDir(), "big.vhdx")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	base := heapAfterGC()
	w, err := NewWriter(f, size, WriterOptions{BlockSize: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var pieces []int64
	seen := map[int64]bool{}
	for len(pieces) < 300 {
		b := rng.Int64N(size >> 21)
		if !seen[b] {
			seen[b] = true
			pieces = append(pieces, b<<21+rng.Int64N(510)*4096) // and 4 KiB of zeros after it
		}
	}
	data := func(off int64) []byte { return bytes.Repeat([]byte{byte(off >> 20), byte(off >> 12), 0x5a, 1}, 1024) }
	maxHeldSeen := 0
	for _, off := range pieces {
		if _, err := w.WriteAt(data(off), off); err != nil {
			t.Fatal(err)
		}
		maxHeldSeen = max(maxHeldSeen, len(w.held))
	}
	if grown := heapAfterGC() - base; grown > 8<<20 {
		t.Errorf("the writer holds %d MiB", grown>>20)
	}
	sorted := slices.Sorted(slices.Values(pieces))
	var gaps [][2]int64
	prev := int64(0)
	for _, off := range sorted {
		gaps = append(gaps, [2]int64{prev, off - prev})
		prev = off + 4096
	}
	gaps = append(gaps, [2]int64{prev, size - prev})
	rng.Shuffle(len(gaps), func(i, j int) { gaps[i], gaps[j] = gaps[j], gaps[i] })
	for _, g := range gaps {
		if err := w.ZeroAt(g[0], g[1]); err != nil {
			t.Fatal(err)
		}
		maxHeldSeen = max(maxHeldSeen, len(w.held))
	}
	if maxHeldSeen > maxHeld || maxHeldSeen < maxHeld {
		t.Errorf("at most %d chunks held, want %d (the writes span 128 chunks)", maxHeldSeen, maxHeld)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if firstRun("bound") {
		testutil.Run(t, "qemu-img", "check", path)
	}

	base = heapAfterGC()
	src, err := openPath(t, path, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var zero int64
	for pos := int64(0); pos < size; {
		r, err := src.Region(pos, size-pos)
		if err != nil {
			t.Fatal(err)
		}
		if r.Zero {
			zero += r.Length
		}
		pos += r.Length
	}
	if zero != size-300*4096 {
		t.Errorf("%d bytes mapped zero, want all but the 300 pieces of data", zero)
	}
	buf := make([]byte, 8192)
	for _, off := range pieces {
		if _, err := src.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:4096], data(off)) || !testutil.AllZero(buf[4096:]) {
			t.Fatalf("data at %d differs", off)
		}
	}
	if grown := heapAfterGC() - base; grown > batCacheBytes+2<<20 {
		t.Errorf("the reader holds %d MiB", grown>>20)
	}
}

// Package formattest is the conformance suite every vmaconv source driver
// passes: sizes, reads at any offset and length (in parallel too), and an
// extent map that tiles the disk and is never wrong about zeros.
package formattest

import (
	"bytes"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// TestSource checks src against want, the disk's expected content.
func TestSource(t *testing.T, src format.Source, want []byte) {
	t.Helper()
	testSource(t, src, want, true)
}

// TestSourceSerial is TestSource without its reads in parallel, which
// cost the most under -race: for more layouts of a driver that TestSource
// checks on others.
func TestSourceSerial(t *testing.T, src format.Source, want []byte) {
	t.Helper()
	testSource(t, src, want, false)
}

func testSource(t *testing.T, src format.Source, want []byte, parallel bool) {
	t.Helper()
	size := int64(len(want))
	if src.Size() != size {
		t.Fatalf("Size() = %d, want %d", src.Size(), size)
	}
	rng := rand.New(rand.NewPCG(uint64(size), 1))
	var buf []byte
	check := func(off int64, n int) {
		p := poisoned(&buf, n)
		got, err := src.ReadAt(p, off)
		wantN := int(max(min(int64(n), size-off), 0))
		if got != wantN {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d bytes", n, off, got, err, wantN)
			return
		}
		if got < n && err == nil {
			t.Errorf("ReadAt(%d bytes at %d): short read without an error", n, off)
		}
		if err != nil && err != io.EOF {
			t.Errorf("ReadAt(%d bytes at %d): %v", n, off, err)
		}
		// bytes.Compare, not Equal: under -race, Equal has every byte it
		// reads recorded, a fifth of this suite's cost. A reader that
		// writes into p after ReadAt returned is caught all the same: that
		// write races with the next poisoned fill.
		//lint:ignore S1004 bytes.Compare is deliberate (above)
		if bytes.Compare(p[:got], want[off:off+int64(got)]) != 0 {
			t.Errorf("ReadAt(%d bytes at %d): wrong content", n, off)
		}
	}
	// Whole disk, cluster-aligned pieces, odd pieces, the end.
	check(0, len(want))
	for range 200 {
		check(rng.Int64N(size), 1+rng.IntN(300000))
	}
	check(size-1, 1)
	check(size-100, 4096)
	if parallel {
		// In parallel, as the pipeline reads: 8 readers of 20 reads each
		// overlap enough for -race to see shared state; more only costs
		// (under -race, every source's suite pays for every read).
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 2))
				var buf []byte
				for range 20 {
					off := r.Int64N(size)
					n := int(min(1+r.Int64N(1<<20), size-off))
					p := poisoned(&buf, n)
					//lint:ignore S1004 bytes.Compare, not Equal: cheaper under -race (above)
					if got, err := src.ReadAt(p, off); got != n || bytes.Compare(p, want[off:off+int64(n)]) != 0 {
						t.Errorf("parallel ReadAt(%d at %d) = %d, %v, or wrong content", n, off, got, err)
					}
				}
			})
		}
		wg.Wait()
	}

	ext, ok := src.(format.ZeroMapper)
	if !ok {
		return
	}
	// Regions from 0 tile the disk; zero regions are zero.
	for pos := int64(0); pos < size; {
		e, err := ext.Region(pos, size-pos)
		if err != nil {
			t.Fatalf("Region(%d, %d): %v", pos, size-pos, err)
		}
		if e.Start != pos || e.Length <= 0 || e.Start+e.Length > size {
			t.Fatalf("Region(%d, %d) = %+v", pos, size-pos, e)
		}
		if e.Zero && !zero.IsZero(want[pos:pos+e.Length]) {
			t.Errorf("extent %+v is reported zero but is not", e)
		}
		pos += e.Length
	}
	// And from odd places, with short lengths.
	for range 100 {
		pos := rng.Int64N(size)
		n := 1 + rng.Int64N(size-pos)
		e, err := ext.Region(pos, n)
		if err != nil || e.Start != pos || e.Length <= 0 || e.Length > n {
			t.Errorf("Region(%d, %d) = %+v, %v", pos, n, e, err)
		}
	}
}

// poisoned returns n bytes of *buf, grown as needed, set to 0xa5: a read
// into it that leaves bytes unwritten (a zero run not cleared) is caught,
// as it would not be in a new, zeroed buffer. Buffers are reused: under
// -race, a new one costs more than the read.
func poisoned(buf *[]byte, n int) []byte {
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if n > 0 {
		p[0] = 0xa5
		for i := 1; i < n; i *= 2 {
			copy(p[i:], p[:i])
		}
	}
	return p
}

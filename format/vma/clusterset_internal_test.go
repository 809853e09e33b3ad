package vma

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestClusterSet: add, has, remove and missing agree with a plain map
// model over random operations, mostly in order (as writers add) with
// jumps, pages filled and emptied, and removals (as salvage removes), so
// that the last-page shortcut never answers from a stale page.
func TestClusterSet(t *testing.T) {
	for _, tc := range []struct {
		name          string
		n             int // clusters
		fill          bool
		jump, removal int // per cent
	}{
		{"in-order", 5 * pageBits, false, 2, 4},
		{"full-pages", 3 * pageBits, true, 5, 30},
		{"emptied-pages", 64, false, 10, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(tc.n)))
			var s clusterSet
			model := map[uint32]bool{}
			check := func(i int, x uint32) {
				if s.has(x) != model[x] {
					t.Fatalf("op %d: has(%d) = %v, model says %v", i, x, s.has(x), model[x])
				}
			}
			if tc.fill {
				for c := range uint32(tc.n) {
					s.add(c)
					model[c] = true
				}
			}
			c := uint32(0)
			for i := range 100000 {
				r := rng.IntN(100)
				switch {
				case r < tc.removal:
					x := c
					if rng.IntN(2) == 0 {
						x = uint32(rng.IntN(tc.n))
					}
					if model[x] {
						s.remove(x)
						delete(model, x)
					}
				default:
					if r < tc.removal+tc.jump {
						c = uint32(rng.IntN(tc.n))
					}
					dup, _ := s.add(c)
					if dup != model[c] {
						t.Fatalf("op %d: add(%d) dup = %v, model says %v", i, c, dup, model[c])
					}
					model[c] = true
					c = (c + 1) % uint32(tc.n)
				}
				check(i, c)
				check(i, uint32(rng.IntN(tc.n)))
			}
			for x := range uint32(tc.n) {
				check(-1, x)
			}
			ranges, total := s.missing(int64(tc.n), tc.n)
			if s.count != int64(len(model)) || total != int64(tc.n-len(model)) {
				t.Fatalf("count %d, missing %d; model: %d of %d", s.count, total, len(model), tc.n)
			}
			var want []Range
			for x := range int64(tc.n) {
				if model[uint32(x)] {
					continue
				}
				if k := len(want); k > 0 && want[k-1].Last+1 == x {
					want[k-1].Last = x
				} else {
					want = append(want, Range{x, x})
				}
			}
			if !slices.Equal(ranges, want) {
				t.Fatalf("missing ranges %v, model %v", ranges, want)
			}
		})
	}
}

// TestClusterSetPageLife: a page emptied by removals and added to again,
// and a full page with a cluster removed, are seen as they are, whatever
// page was last added to.
func TestClusterSetPageLife(t *testing.T) {
	var s clusterSet
	for c := range uint32(10) {
		s.add(c)
	}
	for c := range uint32(10) {
		s.remove(c)
	}
	s.add(3)
	if r, total := s.missing(20, 20); total != 19 || !slices.Equal(r, []Range{{0, 2}, {4, 19}}) {
		t.Errorf("emptied page added to again: missing %v (%d)", r, total)
	}
	var f clusterSet
	for c := range uint32(pageBits) {
		f.add(c)
	}
	f.remove(5)
	if f.has(5) || !f.has(6) {
		t.Errorf("full page less cluster 5: has(5) = %v, has(6) = %v", f.has(5), f.has(6))
	}
	if dup, _ := f.add(5); dup {
		t.Error("cluster 5 re-added after removal reported as a duplicate")
	}
}

package vma

import "math/bits"

// clusterSet records which cluster numbers of one device have been seen. It
// is a bitmap split into pages of pageBits clusters (256 MiB of disk) that are
// allocated only when touched; a page that fills up is replaced by a shared
// sentinel. Memory is therefore proportional to the number of partially
// filled pages, not to the device size: an archive written in ascending
// order keeps one page per device alive.
type clusterSet struct {
	pages map[uint32]*clusterPage
	count int64 // clusters seen
	// The page last added to, by its index+1 (0: none): clusters mostly
	// come in order, and a map lookup per cluster is most of the cost of
	// a sparse disk. It may be a page since filled (and replaced by
	// fullPage in pages), whose bits are then all set: still right.
	lastIdx  uint32
	lastPage *clusterPage
}

const pageBits = 4096

type clusterPage struct {
	bits [pageBits / 64]uint64
	n    int
}

var fullPage = &clusterPage{n: -1}

// add marks c as seen. It reports whether c had been seen before, and how
// many partially filled pages the set gained (+1), lost (-1) or kept (0).
func (s *clusterSet) add(c uint32) (dup bool, partialDelta int) {
	if s.pages == nil {
		s.pages = map[uint32]*clusterPage{}
	}
	pi, bit := c/pageBits, c%pageBits
	var p *clusterPage
	if s.lastIdx == pi+1 {
		p = s.lastPage
	} else {
		p = s.pages[pi]
	}
	if p == fullPage {
		return true, 0
	}
	if p == nil {
		p = &clusterPage{}
		s.pages[pi] = p
		partialDelta++
	}
	s.lastIdx, s.lastPage = pi+1, p
	w, m := bit/64, uint64(1)<<(bit%64)
	if p.bits[w]&m != 0 {
		return true, partialDelta
	}
	p.bits[w] |= m
	p.n++
	s.count++
	if p.n == pageBits {
		s.pages[pi] = fullPage
		partialDelta--
	}
	return false, partialDelta
}

// has reports whether c has been seen.
func (s *clusterSet) has(c uint32) bool {
	var p *clusterPage
	if s.lastIdx == c/pageBits+1 {
		p = s.lastPage
	} else {
		p = s.pages[c/pageBits]
	}
	if p == nil {
		return false
	}
	if p == fullPage {
		return true
	}
	bit := c % pageBits
	return p.bits[bit/64]&(1<<(bit%64)) != 0
}

// Range is an inclusive range of cluster numbers.
type Range struct{ First, Last int64 }

// missing returns up to limit ranges of clusters in [0, n) that were not
// seen, in ascending order, and the total number of missing clusters.
func (s *clusterSet) missing(n int64, limit int) (ranges []Range, total int64) {
	total = n - s.count
	if total <= 0 {
		return nil, 0
	}
	add := func(first, last int64) {
		if k := len(ranges); k > 0 && ranges[k-1].Last+1 == first {
			ranges[k-1].Last = last
			return
		}
		if len(ranges) < limit {
			ranges = append(ranges, Range{first, last})
		}
	}
	for base := int64(0); base < n; base += pageBits {
		end := min(base+pageBits, n)
		p := s.pages[uint32(base/pageBits)]
		switch {
		case p == fullPage:
		case p == nil:
			add(base, end-1)
		default:
			for c := base; c < end; {
				w := p.bits[(c-base)/64] >> ((c - base) % 64)
				if w&1 != 0 { // skip a run of seen clusters
					step := int64(bits.TrailingZeros64(^w))
					c += step
					continue
				}
				step := int64(64 - (c-base)%64)
				if w != 0 {
					step = int64(bits.TrailingZeros64(w))
				}
				last := min(c+step, end) - 1
				add(c, last)
				c = last + 1
			}
		}
	}
	return ranges, total
}

// remove unmarks c, which must have been added. It returns the change in
// partially filled pages, like add.
func (s *clusterSet) remove(c uint32) (partialDelta int) {
	s.lastIdx, s.lastPage = 0, nil
	pi, bit := c/pageBits, c%pageBits
	p := s.pages[pi]
	if p == nil {
		return 0
	}
	if p == fullPage {
		p = &clusterPage{n: pageBits}
		for i := range p.bits {
			p.bits[i] = ^uint64(0)
		}
		s.pages[pi] = p
		partialDelta++
	}
	w, m := bit/64, uint64(1)<<(bit%64)
	if p.bits[w]&m == 0 {
		return partialDelta
	}
	p.bits[w] &^= m
	p.n--
	s.count--
	if p.n == 0 {
		delete(s.pages, pi)
		partialDelta--
	}
	return partialDelta
}

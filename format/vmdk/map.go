package vmdk

import (
	"github.com/vmaconv/vmaconv/format"
)

// maxDataExtent bounds the data run one Region or Mapping call walks,
// grain by grain: the caller only needs to know it is data, and asks
// again.
const maxDataExtent = 1 << 30

// Region implements format.ZeroMapper: unallocated grains (without a
// parent, or zero in it), zeroed grains and ZERO extents are zero and
// never read; so are the holes of the files under flat extents and
// uncompressed grains.
func (s *Source) Region(start, length int64) (format.Region, error) {
	length = min(length, s.size-start)
	if start < 0 || length <= 0 {
		return format.Region{}, s.errorf("region at %#x outside the disk (%d bytes)", start, s.size)
	}
	end := start + length
	var zero bool
	pos := start
	for pos < end {
		e, k, host, n, err := s.span(pos)
		if err != nil {
			return format.Region{}, err
		}
		n = min(n, end-pos)
		var z bool
		switch k {
		case zeroed:
			z = true
		case unallocated:
			z = true
			if s.parent != nil && pos < s.parent.size {
				x, err := s.parent.Region(pos, min(n, s.parent.size-pos))
				if err != nil {
					return format.Region{}, err
				}
				z, n = x.Zero, x.Length
			}
		case data:
			if e.holes != nil {
				x, err := e.holes.Region(host, n)
				if err == nil {
					z, n = x.Zero, min(n, x.Length)
				}
			}
		}
		if n <= 0 {
			return format.Region{}, s.errorf("empty run at %#x", pos)
		}
		if pos == start {
			zero = z
		} else if z != zero || !zero && pos-start >= maxDataExtent {
			break
		}
		pos += n
	}
	return format.Region{Start: start, Length: pos - start, Zero: zero}, nil
}

// Mapping implements format.Mapper as QEMU's vmdk driver answers qemu-img
// map (vmdk_co_block_status): uncompressed grains and flat extents are
// data at their place in their file (a flat extent's file is asked for
// its holes, which read as zeros); compressed grains are data without a
// place; zeroed grains and ZERO extents are zeros; unallocated grains
// are the parent's (at depth 1 and on) or, without one, not present.
func (s *Source) Mapping(start, length int64) (format.Mapping, error) {
	length = min(length, s.size-start)
	if start < 0 || length <= 0 {
		return format.Mapping{}, s.errorf("mapping at %#x outside the disk (%d bytes)", start, s.size)
	}
	m, err := s.mapOne(start, length)
	if err != nil {
		return m, err
	}
	// Runs that qemu-img map would merge, walked here at once.
	for m.Length < length && m.Length < maxDataExtent {
		next, err := s.mapOne(start+m.Length, length-m.Length)
		if err != nil || !continues(m, next) {
			break
		}
		m.Length += next.Length
	}
	return m, nil
}

// continues reports whether next extends m as qemu-img map merges them.
func continues(m, next format.Mapping) bool {
	return m.Zero == next.Zero && m.Data == next.Data && m.Compressed == next.Compressed && m.Present == next.Present &&
		m.Depth == next.Depth && m.File == next.File && (m.Offset < 0) == (next.Offset < 0) &&
		(m.Offset < 0 || m.Offset+m.Length == next.Offset)
}

// mapOne returns the mapping of one span at start.
func (s *Source) mapOne(start, length int64) (format.Mapping, error) {
	e, k, host, n, err := s.span(start)
	if err != nil {
		return format.Mapping{}, err
	}
	m := format.Mapping{Start: start, Length: min(n, length), Offset: -1}
	switch k {
	case data:
		m.Present, m.Data, m.Offset, m.File = true, true, host, e.file
		if e.sp == nil && e.holes != nil { // QEMU recurses into a flat extent's file
			x, err := e.holes.Mapping(host, m.Length)
			if err == nil {
				m.Zero, m.Length = x.Zero, min(m.Length, x.Length)
			}
		}
	case compressed:
		m.Present, m.Data, m.Compressed = true, true, true
	case zeroed:
		m.Present, m.Zero = true, true
	case unallocated:
		m.Zero = true
		if p := s.parent; p != nil && start < p.size {
			pm, err := p.Mapping(start, min(m.Length, p.size-start))
			if err != nil {
				return format.Mapping{}, err
			}
			pm.Depth++
			if pm.Offset >= 0 && pm.File == "" {
				pm.File = p.name
			}
			return pm, nil
		}
	}
	return m, nil
}

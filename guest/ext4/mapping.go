package ext4

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/vmaconv/vmaconv/guest"
)

const (
	extentMagic    = 0xF30A
	maxExtentDepth = 5
	// maxLogical bounds logical block numbers (32 bits in extents and
	// block maps).
	maxLogical = 1 << 32
)

// Kinds of runs.
const (
	runHole = iota
	runData
	runUnwritten
)

// run is a range of logical blocks [lblk, lblk+n) mapped alike: to
// physical blocks [pblk, pblk+n), or a hole, or an unwritten extent.
type run struct {
	lblk, n, pblk uint64
	kind          int
}

// mapper maps an inode's logical blocks (extents or block map), caching
// the last run found so that sequential reads map each run once.
type mapper struct {
	fs   *fsys
	ino  uint64
	root [60]byte
	ext  bool
	last atomic.Pointer[run]
}

func newMapper(f *fsys, in *inode) *mapper {
	return &mapper{fs: f, ino: in.ino, root: in.block, ext: in.flags&flagExtents != 0}
}

// lookup returns the run that holds logical block l, starting at l.
func (m *mapper) lookup(l uint64) (run, error) {
	if l >= maxLogical {
		return run{lblk: l, n: 1, kind: runHole}, nil
	}
	if r := m.last.Load(); r != nil && r.lblk <= l && l < r.lblk+r.n {
		return r.from(l), nil
	}
	var r run
	var err error
	if m.ext {
		r, err = m.extentLookup(l)
	} else {
		r, err = m.indirectLookup(l)
	}
	if err != nil {
		return run{}, err
	}
	if r.n == 0 || r.lblk != l {
		return run{}, m.corrupt("empty run at block %d", l)
	}
	if r.kind == runData {
		if err := m.fs.checkBlocks(r.pblk, r.n, func() string { return fmt.Sprintf("inode %d: blocks of logical block %d", m.ino, l) }); err != nil {
			return run{}, err
		}
	}
	m.last.Store(&r)
	return r, nil
}

// from returns the part of r from logical block l on.
func (r *run) from(l uint64) run {
	d := l - r.lblk
	x := run{lblk: l, n: r.n - d, kind: r.kind}
	if r.kind == runData {
		x.pblk = r.pblk + d
	}
	return x
}

func (m *mapper) corrupt(format string, a ...any) error {
	return fmt.Errorf("ext4: inode %d: %s: %w", m.ino, fmt.Sprintf(format, a...), guest.ErrCorrupt)
}

// extentLookup walks the extent tree from the root in i_block down to the
// leaf that covers l. limit is the first logical block past the subtree
// being walked (from the next index entry of the levels above), so that a
// hole ends at the next extent even in another leaf.
func (m *mapper) extentLookup(l uint64) (run, error) {
	le := binary.LittleEndian
	f := m.fs
	node := m.root[:]
	limit := uint64(maxLogical)
	want := -1
	var buf []byte
	for level := 0; ; level++ {
		if le.Uint16(node[0:]) != extentMagic {
			return run{}, m.corrupt("extent node at level %d: bad magic %#04x", level, le.Uint16(node[0:]))
		}
		entries := int(le.Uint16(node[2:]))
		maxEntries := int(le.Uint16(node[4:]))
		depth := int(le.Uint16(node[6:]))
		if level == 0 {
			if depth > maxExtentDepth {
				return run{}, m.corrupt("extent tree depth %d > %d", depth, maxExtentDepth)
			}
		} else if depth != want {
			return run{}, m.corrupt("extent node at level %d has depth %d, want %d", level, depth, want)
		}
		if entries > maxEntries || 12+12*maxEntries > len(node) {
			return run{}, m.corrupt("extent node at level %d: %d of %d entries in %d bytes", level, entries, maxEntries, len(node))
		}
		if depth == 0 {
			prevEnd := uint64(0)
			for i := 0; i < entries; i++ {
				e := node[12+12*i:]
				start := uint64(le.Uint32(e[0:]))
				n := uint64(le.Uint16(e[4:]))
				kind := runData
				if n > 32768 {
					n -= 32768
					kind = runUnwritten
				}
				if n == 0 || start < prevEnd {
					return run{}, m.corrupt("extent %d at level %d: blocks %d+%d overlap or empty", i, level, start, n)
				}
				prevEnd = start + n
				if l < start {
					return run{lblk: l, n: min(start, limit) - l, kind: runHole}, nil
				}
				if l < start+n {
					p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
					if kind == runData {
						if err := f.checkBlocks(p, n, func() string { return fmt.Sprintf("inode %d: extent %d+%d", m.ino, start, n) }); err != nil {
							return run{}, err
						}
					}
					end := min(start+n, limit)
					if l >= end {
						break
					}
					return run{lblk: l, n: end - l, pblk: p + (l - start), kind: kind}, nil
				}
			}
			if l >= limit {
				return run{}, m.corrupt("extent leaf at level %d reached for block %d past its index's end %d", level, l, limit)
			}
			return run{lblk: l, n: limit - l, kind: runHole}, nil
		}
		// An index node: the last entry starting at or before l.
		found := -1
		prev := uint64(0)
		for i := 0; i < entries; i++ {
			s := uint64(le.Uint32(node[12+12*i:]))
			if i > 0 && s <= prev {
				return run{}, m.corrupt("extent index at level %d: entries out of order (%d after %d)", level, s, prev)
			}
			prev = s
			if s > l {
				limit = min(limit, s)
				break
			}
			found = i
		}
		if found < 0 {
			return run{lblk: l, n: limit - l, kind: runHole}, nil
		}
		e := node[12+12*found:]
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		what := func() string { return fmt.Sprintf("inode %d: extent node at level %d", m.ino, level+1) }
		if err := f.checkBlocks(child, 1, what); err != nil {
			return run{}, err
		}
		if buf == nil {
			buf = make([]byte, f.bs)
		}
		if err := f.read(buf, int64(child)*f.bs, what); err != nil {
			return run{}, err
		}
		node = buf
		want = depth - 1
	}
}

// indirectLookup maps l through the ext2/ext3 block map: 12 direct
// pointers, then single, double and triple indirect blocks. A pointer 0
// is a hole. The run found stops at the end of the pointer block.
func (m *mapper) indirectLookup(l uint64) (run, error) {
	le := binary.LittleEndian
	f := m.fs
	p := uint64(f.bs / 4)
	if l < 12 {
		return m.scan(m.root[:48], l, 0, 12), nil
	}
	// A top pointer at level 1, 2, 3 covers p, p², p³ blocks.
	off := l - 12
	cover := p
	for level := 1; level <= 3; level++ {
		if off >= cover {
			off -= cover
			cover *= p
			continue
		}
		ptr := uint64(le.Uint32(m.root[48+4*(level-1):]))
		start := l - off // the first logical block ptr covers
		var buf []byte
		for d := level; d >= 1; d-- {
			if ptr == 0 {
				return run{lblk: l, n: start + cover - l, kind: runHole}, nil
			}
			what := func() string {
				return fmt.Sprintf("inode %d: indirect block (level %d of %d)", m.ino, level-d+1, level)
			}
			if err := f.checkBlocks(ptr, 1, what); err != nil {
				return run{}, err
			}
			if buf == nil {
				buf = make([]byte, f.bs)
			}
			if err := f.read(buf, int64(ptr)*f.bs, what); err != nil {
				return run{}, err
			}
			if d == 1 {
				return m.scan(buf, l, start, p), nil
			}
			sub := cover / p
			i := off / sub
			ptr = uint64(le.Uint32(buf[4*i:]))
			start += i * sub
			off -= i * sub
			cover = sub
		}
	}
	return run{lblk: l, n: maxLogical - l, kind: runHole}, nil
}

// scan returns the run from l within a pointer array ptrs mapping logical
// blocks [first, first+count): contiguous physical blocks or zeros.
func (m *mapper) scan(ptrs []byte, l, first, count uint64) run {
	le := binary.LittleEndian
	i := l - first
	p0 := uint64(le.Uint32(ptrs[4*i:]))
	n := uint64(1)
	for j := i + 1; j < count; j++ {
		pj := uint64(le.Uint32(ptrs[4*j:]))
		if p0 == 0 && pj != 0 || p0 != 0 && pj != p0+(j-i) {
			break
		}
		n++
	}
	if p0 == 0 {
		return run{lblk: l, n: n, kind: runHole}
	}
	return run{lblk: l, n: n, pblk: p0, kind: runData}
}

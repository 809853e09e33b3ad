package xfs

import (
	"fmt"
	"io"
	"sort"

	"github.com/vmaconv/vmaconv/guest"
)

// Block map B+tree limits.
const (
	maxBtreeLevel = 9  // XFS_BM_MAXLEVELS is at most 9 (64-bit extent counts)
	findBudget    = 64 // btree blocks read by one lookup
)

// extent is one record of a data fork's block map.
type extent struct {
	off, blk, n uint64 // file block, file system block, block count
	unwritten   bool
}

func unpackExtent(b []byte) extent {
	l0, l1 := be.Uint64(b), be.Uint64(b[8:])
	return extent{
		unwritten: l0>>63 != 0,
		off:       (l0 & (1<<63 - 1)) >> 9,
		blk:       (l0&0x1ff)<<43 | l1>>21,
		n:         l1 & 0x1fffff,
	}
}

// bmap maps an inode's data fork (extents or B+tree format) from file
// blocks to file system blocks, reading the tree lazily.
type bmap struct {
	fs *FS
	ip *inode
}

// find returns the extent that holds file block fb, or else the first
// extent after it; ok is false when there is none.
func (m *bmap) find(fb uint64) (e extent, ok bool, err error) {
	switch m.ip.format {
	case fmtExtents:
		e, ok, err = m.searchRecs(m.ip.fork[:m.ip.nextents*16], fb)
	case fmtBtree:
		fork := m.ip.fork
		level, numrecs := int(be.Uint16(fork)), int(be.Uint16(fork[2:]))
		maxrecs := (len(fork) - 4) / 16
		if level < 1 || level > maxBtreeLevel || numrecs < 1 || numrecs > maxrecs {
			return e, false, corrupt("inode %d: block map root of level %d with %d of at most %d records", m.ip.ino, level, numrecs, maxrecs)
		}
		budget := findBudget
		e, ok, err = m.descend(fork[4:4+numrecs*8], fork[4+maxrecs*8:4+maxrecs*8+numrecs*8], level, fb, &budget)
	default:
		return e, false, corrupt("inode %d: data fork format %d has no block map", m.ip.ino, m.ip.format)
	}
	if err != nil || !ok {
		return e, ok, err
	}
	if e.n == 0 || (e.off+e.n <= fb) {
		return e, false, corrupt("inode %d: block map record for file block %d out of order", m.ip.ino, fb)
	}
	if _, valid := m.fs.sb.fsbPos(e.blk, e.n); !valid {
		return e, false, corrupt("inode %d: extent of %d blocks at block %d outside the file system", m.ip.ino, e.n, e.blk)
	}
	return e, true, nil
}

// searchRecs finds fb among packed extent records sorted by offset.
func (m *bmap) searchRecs(recs []byte, fb uint64) (extent, bool, error) {
	n := len(recs) / 16
	i := sort.Search(n, func(i int) bool { return unpackExtent(recs[16*i:]).off > fb }) - 1
	if i >= 0 {
		if e := unpackExtent(recs[16*i:]); fb < e.off+e.n {
			return e, true, nil
		}
	}
	if i+1 < n {
		e := unpackExtent(recs[16*(i+1):])
		if e.off <= fb {
			return e, false, corrupt("inode %d: block map records out of order", m.ip.ino)
		}
		return e, true, nil
	}
	return extent{}, false, nil
}

// descend looks fb up in the subtrees of a B+tree node at level (>= 1)
// with the given keys and pointers: in the child whose key range holds
// fb, then in the next child for the first extent after fb.
func (m *bmap) descend(keys, ptrs []byte, level int, fb uint64, budget *int) (extent, bool, error) {
	n := len(keys) / 8
	i := sort.Search(n, func(i int) bool { return be.Uint64(keys[8*i:]) > fb }) - 1
	if i < 0 {
		i = 0
	}
	for j := i; j < n && j <= i+1; j++ {
		*budget--
		if *budget < 0 {
			return extent{}, false, corrupt("inode %d: block map lookup of file block %d reads more than %d tree blocks", m.ip.ino, fb, findBudget)
		}
		child := be.Uint64(ptrs[8*j:])
		b, err := m.fs.fsBlock(child)
		if err != nil {
			return extent{}, false, fmt.Errorf("xfs: inode %d: block map: %w", m.ip.ino, unprefix(err))
		}
		hdr, err := m.checkBtreeBlock(b, child, level-1)
		if err != nil {
			return extent{}, false, err
		}
		numrecs := int(be.Uint16(b[6:]))
		var (
			e  extent
			ok bool
		)
		if level == 1 {
			e, ok, err = m.searchRecs(b[hdr:hdr+16*numrecs], fb)
		} else {
			maxrecs := (len(b) - hdr) / 16
			k := b[hdr : hdr+8*numrecs]
			p := b[hdr+8*maxrecs : hdr+8*maxrecs+8*numrecs]
			e, ok, err = m.descend(k, p, level-1, fb, budget)
		}
		if err != nil || ok {
			return e, ok, err
		}
	}
	return extent{}, false, nil
}

// checkBtreeBlock checks the header of block map B+tree block fsb, which
// must be at level, and returns the header's length.
func (m *bmap) checkBtreeBlock(b []byte, fsb uint64, level int) (int, error) {
	hdr, magic := 24, "BMAP"
	if m.fs.sb.version == 5 {
		hdr, magic = 72, "BMA3"
	}
	if string(b[0:4]) != magic {
		return 0, corrupt("inode %d: block map block %d: bad magic %q, want %q", m.ip.ino, fsb, b[0:4], magic)
	}
	if got := int(be.Uint16(b[4:])); got != level {
		return 0, corrupt("inode %d: block map block %d: level %d, want %d", m.ip.ino, fsb, got, level)
	}
	numrecs, maxrecs := int(be.Uint16(b[6:])), (len(b)-hdr)/16
	if numrecs < 1 || numrecs > maxrecs {
		return 0, corrupt("inode %d: block map block %d: %d records, want 1 to %d", m.ip.ino, fsb, numrecs, maxrecs)
	}
	if m.fs.sb.version == 5 {
		if owner := be.Uint64(b[56:]); owner != m.ip.ino {
			return 0, corrupt("inode %d: block map block %d belongs to inode %d", m.ip.ino, fsb, owner)
		}
	}
	return hdr, nil
}

// data implements guest.Sparse over the fork, for a file of size bytes.
func (m *bmap) data(off, size int64) (int64, int64, error) {
	if off < 0 {
		return 0, 0, fmt.Errorf("xfs: inode %d: negative offset %d", m.ip.ino, off)
	}
	bl := m.fs.sb.blockLog
	last := uint64(size) >> bl // no extent at or past this block matters
	for fb := uint64(off) >> bl; off < size && fb <= last; {
		e, ok, err := m.find(fb)
		if err != nil {
			return 0, 0, err
		}
		if !ok || e.off > last {
			break
		}
		if e.unwritten {
			fb = e.off + e.n
			continue
		}
		start := int64(e.off << bl)
		end := (e.off + e.n) << bl // < 2^64: e.off <= size>>bl
		if end > uint64(size) {
			end = uint64(size)
		}
		if start >= size {
			break
		}
		return max(start, off), int64(end), nil
	}
	return 0, 0, io.EOF
}

// readAt reads the fork's contents, a file of size bytes, at off: one
// device read per extent, zeros for holes and unwritten extents.
func (m *bmap) readAt(p []byte, off, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("xfs: inode %d: negative offset %d", m.ip.ino, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	bl := m.fs.sb.blockLog
	end := off + int64(len(p))
	for pos := off; pos < end; {
		fb := uint64(pos) >> bl
		e, ok, err := m.find(fb)
		if err != nil {
			return int(pos - off), err
		}
		chunk := end
		switch {
		case !ok || e.off > fb:
			if ok && e.off <= uint64(end)>>bl {
				chunk = min(end, int64(e.off<<bl))
			}
			clear(p[pos-off : chunk-off])
		default:
			if x := (e.off + e.n) << bl; x < uint64(end) {
				chunk = int64(x)
			}
			if e.unwritten {
				clear(p[pos-off : chunk-off])
				break
			}
			phys, _ := m.fs.sb.fsbPos(e.blk, e.n)
			if err := m.fs.read(p[pos-off:chunk-off], phys+pos-int64(e.off<<bl)); err != nil {
				return int(pos - off), fmt.Errorf("xfs: inode %d: %w", m.ip.ino, unprefix(err))
			}
		}
		pos = chunk
	}
	return len(p), eof
}

// file is a regular file's contents.
type file struct {
	m    bmap
	size int64
}

func (f *FS) newFile(ip *inode) *file {
	return &file{m: bmap{fs: f, ip: ip}, size: ip.size}
}

// ReadAt reads the file at off.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.m.ip.format == fmtLocal {
		if off < 0 {
			return 0, fmt.Errorf("xfs: inode %d: negative offset %d", f.m.ip.ino, off)
		}
		if off >= f.size {
			return 0, io.EOF
		}
		n := copy(p, f.m.ip.fork[off:f.size])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	return f.m.readAt(p, off, f.size)
}

// Size returns the file's length.
func (f *file) Size() int64 { return f.size }

// Data returns the stored range holding off, or the first one after it
// (see guest.Sparse).
func (f *file) Data(off int64) (int64, int64, error) {
	if f.m.ip.format == fmtLocal {
		if off < 0 {
			return 0, 0, fmt.Errorf("xfs: inode %d: negative offset %d", f.m.ip.ino, off)
		}
		if off >= f.size {
			return 0, 0, io.EOF
		}
		return off, f.size, nil
	}
	return f.m.data(off, f.size)
}

var _ guest.Sparse = (*file)(nil)

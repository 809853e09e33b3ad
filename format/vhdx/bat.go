package vhdx

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// The BAT is read on demand, a page at a time, into a bounded cache: a
// 64 TiB disk of 1 MiB blocks has a 512 MiB BAT.
const (
	batPageEntries = 4096    // 32 KiB of BAT a page
	batCacheBytes  = 4 << 20 // 128 pages: 512 Mi blocks' entries, 16 TiB at 32 MiB blocks
	maxFileUnits   = 1 << 27 // MiB of file the overlap check covers: 128 TiB
)

// batCache reads BAT entries through an LRU cache of pages. Safe for
// concurrent use.
type batCache struct {
	r        io.ReaderAt
	fileSize int64
	off      int64 // the BAT's place in the file
	entries  int64

	mu    sync.Mutex
	pages []batPage
	index map[int64]int // page number -> its place in pages
	tick  uint64
}

type batPage struct {
	n    int64 // page number
	e    []uint64
	used uint64
}

// entry returns BAT entry i (i < entries).
func (c *batCache) entry(i int64) (uint64, error) {
	n := i / batPageEntries
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	if k, ok := c.index[n]; ok {
		c.pages[k].used = c.tick
		return c.pages[k].e[i%batPageEntries], nil
	}
	if c.index == nil {
		c.index = map[int64]int{}
	}
	first := n * batPageEntries
	cnt := min(batPageEntries, c.entries-first)
	b := make([]byte, cnt*8)
	if err := readAt(c.r, c.fileSize, b, c.off+first*8); err != nil {
		return 0, fmt.Errorf("vhdx: reading the BAT at %#x: %w", c.off+first*8, err)
	}
	p := batPage{n: n, e: make([]uint64, cnt), used: c.tick}
	for k := range p.e {
		p.e[k] = binary.LittleEndian.Uint64(b[8*k:])
	}
	if len(c.pages) < batCacheBytes/(batPageEntries*8) {
		c.index[n] = len(c.pages)
		c.pages = append(c.pages, p)
	} else {
		old := 0
		for k := range c.pages {
			if c.pages[k].used < c.pages[old].used {
				old = k
			}
		}
		delete(c.index, c.pages[old].n)
		c.index[n] = old
		c.pages[old] = p
	}
	return p.e[i%batPageEntries], nil
}

// scanBAT checks every BAT entry once, reading the BAT 1 MiB at a time,
// as QEMU checks it when it opens an image (vhdx_check_bat_entries) and
// more: a payload block's state must be one the image type allows, a
// present block (or sector bitmap block) must lie past the header
// section and within the file, and overlap neither a region (the log,
// the BAT, the metadata) nor another block. The overlap check takes a
// bit per MiB of the file the blocks reach (at most 16 MiB, for blocks
// within 128 TiB).
func (l *layout) scanBAT() error {
	var used []uint64 // a bit per MiB of the file taken by a block
	buf := make([]byte, 1*mib)
	per := l.chunkRatio + 1
	partial := false // the current chunk has a partially present block
	claim := func(idx int64, what string, off, n uint64) error {
		where := func() string {
			return fmt.Sprintf("BAT entry %d (at %#x), %s at %#x", idx, l.bat.off+uint64(idx)*8, what, off)
		}
		if off < headerSection {
			return corrupt("%s: inside the header section", where())
		}
		if off+n > uint64(l.fileSize) {
			return corrupt("%s, %d bytes: past the end of the file (%d bytes): truncated?", where(), n, l.fileSize)
		}
		for _, r := range l.regions {
			if r.overlaps(off, n) {
				return corrupt("%s: overlaps %s (at %#x, %d bytes)", where(), r.name, r.off, r.length)
			}
		}
		first, end := off/mib, (off+n+mib-1)/mib
		if end > maxFileUnits {
			return corrupt("%s: further into the file than 128 TiB, which no VHDX of at most 64 TiB needs", where())
		}
		for u := first; u < end; u++ {
			for uint64(len(used)) <= u/64 {
				used = append(used, 0)
			}
			if used[u/64]&(1<<(u%64)) != 0 {
				return corrupt("%s: overlaps another block", where())
			}
			used[u/64] |= 1 << (u % 64)
		}
		return nil
	}
	for i := int64(0); i < l.entries; {
		n := min(int64(len(buf))/8, l.entries-i)
		if err := readAt(l.r, l.fileSize, buf[:n*8], int64(l.bat.off)+i*8); err != nil {
			return fmt.Errorf("vhdx: reading the BAT at %#x: %w", int64(l.bat.off)+i*8, err)
		}
		for j := range n {
			idx := i + j
			e := binary.LittleEndian.Uint64(buf[8*j:])
			state, off := e&stateMask, e>>offsetShift<<offsetShift
			if (idx+1)%per == 0 { // a sector bitmap block's entry
				if !l.hasParent {
					continue // unused: QEMU ignores them, as does this reader
				}
				switch {
				case state == sbPresent:
					if err := claim(idx, "sector bitmap block", off, sectorBitmapSize); err != nil {
						return err
					}
				case state != blockNotPresent:
					return corrupt("BAT entry %d (at %#x): sector bitmap block state %d: reserved", idx, l.bat.off+uint64(idx)*8, state)
				case partial:
					return corrupt("BAT entry %d (at %#x): the sector bitmap block of a chunk with partially present blocks is not present", idx, l.bat.off+uint64(idx)*8)
				}
				partial = false
				continue
			}
			b := idx - idx/per
			if b >= l.blocks {
				continue // past the disk, in its last chunk
			}
			switch state {
			case blockNotPresent, blockUndefined, blockZero, blockUnmapped, blockUnmapped095:
			case blockPartiallyPresent:
				if !l.hasParent {
					return corrupt("BAT entry %d (at %#x), block %d: %s in an image without a parent", idx, l.bat.off+uint64(idx)*8, b, stateName(state))
				}
				partial = true
				fallthrough
			case blockFullyPresent:
				n := uint64(min(l.blockSize, l.size-b*l.blockSize))
				if err := claim(idx, fmt.Sprintf("payload block %d", b), off, n); err != nil {
					return err
				}
			default:
				return corrupt("BAT entry %d (at %#x), block %d: %s", idx, l.bat.off+uint64(idx)*8, b, stateName(state))
			}
		}
		i += n
	}
	return nil
}

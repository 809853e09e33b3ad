package vdi

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// The block map is read through a bounded cache of pages: an image of the
// largest size QEMU takes has a block map of 2 GiB (4 bytes per 1 MiB
// block), which is not held whole.
const (
	pageEntries = 16384 // entries of a page: 64 KiB of block map, 16 GiB of disk
	cachePages  = 64    // pages kept: 4 MiB, the whole map of a disk up to 1 TiB
)

// blockMap reads an image's block map, checked once by check, a page
// at a time into a cache of at most cachePages pages. Safe for parallel
// use; the pages it returns are never changed.
type blockMap struct {
	ra  io.ReaderAt
	off int64 // offset_bmap
	n   int64 // entries (blocks_in_image)

	mu    sync.Mutex
	cache []cachedPage
	tick  uint64
}

type cachedPage struct {
	i    int64
	e    []uint32
	used uint64
}

// pageLen returns the entries of page i.
func (m *blockMap) pageLen(i int64) int64 { return min(pageEntries, m.n-i*pageEntries) }

// read reads and decodes page i into e (of pageLen(i) entries), using
// buf (4 bytes an entry) for the bytes.
func (m *blockMap) read(i int64, e []uint32, buf []byte) error {
	buf = buf[:4*len(e)]
	at := m.off + 4*i*pageEntries
	if k, err := m.ra.ReadAt(buf, at); k < len(buf) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("vdi: reading the block map at %#x: %w", at, err)
	}
	for j := range e {
		e[j] = binary.LittleEndian.Uint32(buf[4*j:])
	}
	return nil
}

// page returns the entries of page i.
func (m *blockMap) page(i int64) ([]uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick++
	for j := range m.cache {
		if m.cache[j].i == i {
			m.cache[j].used = m.tick
			return m.cache[j].e, nil
		}
	}
	e := make([]uint32, m.pageLen(i))
	if err := m.read(i, e, make([]byte, 4*len(e))); err != nil {
		return nil, err
	}
	m.keep(i, e)
	return e, nil
}

// keep puts page i in the cache, in place of the least recently used one
// if it is full. The caller holds m.mu.
func (m *blockMap) keep(i int64, e []uint32) {
	p := cachedPage{i: i, e: e, used: m.tick}
	if len(m.cache) < cachePages {
		m.cache = append(m.cache, p)
		return
	}
	old := 0
	for j := range m.cache {
		if m.cache[j].used < m.cache[old].used {
			old = j
		}
	}
	m.cache[old] = p
}

// check reads the whole block map once, a page at a time, and checks
// every entry as qemu-img check does and against the file: an allocated
// entry names a data block below the block count, that no other entry
// names, whose bytes for its block of the disk (size bytes long) are in
// the file. The first pages are kept in the cache. Memory: one page, and
// one bit per data block the file can hold (a bit per MiB of the file,
// however many blocks the header claims).
func (m *blockMap) check(h *header, size, fileSize int64) error {
	var used []uint64 // data blocks seen, by index
	if room := fileSize - h.offData; room >= 0 {
		used = make([]uint64, (min(m.n, room/BlockSize+1)+63)/64)
	}
	buf := make([]byte, 4*pageEntries)
	for i := int64(0); i*pageEntries < m.n; i++ {
		e := make([]uint32, m.pageLen(i))
		if err := m.read(i, e, buf); err != nil {
			return err
		}
		for j, x := range e {
			if x >= discarded {
				continue
			}
			b := i*pageEntries + int64(j)
			at := m.off + 4*b
			valid := min(max(size-b*BlockSize, 0), BlockSize)
			host := h.offData + int64(x)*BlockSize
			switch {
			case int64(x) >= m.n:
				return fmt.Errorf("%w: block map entry %d at %#x: data block %d is not below blocks_in_image (%d)", ErrCorrupt, b, at, x, m.n)
			case host+valid > fileSize:
				return fmt.Errorf("%w: block map entry %d at %#x: data block %d at %#x runs past the end of the file (%#x bytes)", ErrCorrupt, b, at, x, host, fileSize)
			case used[x/64]&(1<<(x%64)) != 0:
				return fmt.Errorf("%w: block map entry %d at %#x: data block %d is mapped by an earlier entry too", ErrCorrupt, b, at, x)
			}
			used[x/64] |= 1 << (x % 64)
		}
		if len(m.cache) < cachePages {
			m.cache = append(m.cache, cachedPage{i: i, e: e})
		}
	}
	return nil
}

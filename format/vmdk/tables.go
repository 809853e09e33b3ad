package vmdk

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// tableCacheBytes bounds the decoded tables one image keeps (grain
// directory pages and grain tables of all its extents and parents): 4 MiB
// is 2048 grain tables of 512 entries, which map 64 GiB of 64 KiB grains.
const tableCacheBytes = 4 << 20

// gdPage is the number of grain directory entries read at once: 4 KiB of
// the directory, which maps 128 GiB of 64 KiB grains.
const gdPage = 1024

// tables caches decoded tables of 32-bit little-endian entries (grain
// directory pages, grain tables), read on demand and evicted least
// recently used first, so that an image of any size costs at most
// tableCacheBytes of them. Safe for concurrent use; reads happen outside
// the lock.
type tables struct {
	mu    sync.Mutex
	m     map[tableKey]*list.Element // of *table
	lru   list.List                  // front: most recently used
	bytes int64
	limit int64

	grains grainCache // the image's decompressed grains
}

type tableKey struct {
	ext *sparse
	off int64
}

type table struct {
	key   tableKey
	e     []uint32
	empty bool // every entry is zero
}

func newTables(limit int64) *tables {
	return &tables{m: map[tableKey]*list.Element{}, limit: limit}
}

// get returns the n entries at byte offset off of ext's file, which the
// caller has checked lie within it. The slice must not be changed.
func (c *tables) get(ext *sparse, off, n int64) (*table, error) {
	k := tableKey{ext, off}
	c.mu.Lock()
	if el, ok := c.m[k]; ok {
		c.lru.MoveToFront(el)
		t := el.Value.(*table)
		c.mu.Unlock()
		return t, nil
	}
	c.mu.Unlock()
	b := make([]byte, n*4)
	if got, err := ext.r.ReadAt(b, off); int64(got) < n*4 {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading a table at %#x of %s: %w", off, cmpOr(ext.name, "the image"), err)
	}
	t := &table{key: k, e: make([]uint32, n), empty: true}
	for i := range t.e {
		t.e[i] = binary.LittleEndian.Uint32(b[4*i:])
		if t.e[i] != 0 {
			t.empty = false
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok { // read meanwhile by another caller
		c.lru.MoveToFront(el)
		return el.Value.(*table), nil
	}
	c.m[k] = c.lru.PushFront(t)
	c.bytes += n * 4
	for c.bytes > c.limit && c.lru.Len() > 1 {
		old := c.lru.Back()
		ot := old.Value.(*table)
		c.lru.Remove(old)
		delete(c.m, ot.key)
		c.bytes -= int64(len(ot.e)) * 4
	}
	return t, nil
}

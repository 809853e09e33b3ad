package guest

import (
	"container/list"
	"io"
	"sync"
)

// chunkSize is the unit of the metadata cache: small reads (inodes,
// directory blocks, superblocks) are served from whole chunks, so that a
// compressed archive's frame is not decompressed once per inode.
const chunkSize = 64 << 10

// cacheChunks bounds the cache: 256 chunks of 64 KiB, 16 MiB per tree.
const cacheChunks = 256

// chunkCache holds recently read chunks of the tree's disks, least
// recently used first out. Safe for concurrent use.
type chunkCache struct {
	mu    sync.Mutex
	lru   *list.List // of *chunk, most recent at the front
	index map[chunkKey]*list.Element
	// Reads and Bytes count what was read from the disks.
	reads, bytes int64
}

type chunkKey struct {
	disk int
	off  int64
}

type chunk struct {
	key  chunkKey
	data []byte // shorter than chunkSize at a disk's end
}

func newChunkCache() *chunkCache {
	return &chunkCache{lru: list.New(), index: map[chunkKey]*list.Element{}}
}

// cachedDisk reads one disk of a tree: reads smaller than a chunk through
// the cache, larger ones straight from the disk.
type cachedDisk struct {
	c    *chunkCache
	id   int
	r    io.ReaderAt
	size int64
}

// ReadAt implements io.ReaderAt.
func (d *cachedDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= d.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > d.size-off {
		p, eof = p[:d.size-off], io.EOF
	}
	if len(p) >= chunkSize {
		n, err := d.r.ReadAt(p, off)
		d.c.count(int64(n))
		if err == io.EOF && n == len(p) {
			err = nil
		}
		if err == nil {
			err = eof
		}
		return n, err
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		data, err := d.chunk(at - at%chunkSize)
		if err != nil {
			return n, err
		}
		m := copy(p[n:], data[at%chunkSize:])
		if m == 0 {
			return n, io.ErrUnexpectedEOF
		}
		n += m
	}
	return n, eof
}

// chunk returns the chunk of the disk at off (a multiple of chunkSize).
func (d *cachedDisk) chunk(off int64) ([]byte, error) {
	c := d.c
	key := chunkKey{d.id, off}
	c.mu.Lock()
	if e, ok := c.index[key]; ok {
		c.lru.MoveToFront(e)
		data := e.Value.(*chunk).data
		c.mu.Unlock()
		return data, nil
	}
	c.mu.Unlock()
	data := make([]byte, min(chunkSize, d.size-off))
	n, err := d.r.ReadAt(data, off)
	c.count(int64(n))
	if n == len(data) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.index[key]; ok {
		return e.Value.(*chunk).data, nil
	}
	c.index[key] = c.lru.PushFront(&chunk{key, data})
	if c.lru.Len() > cacheChunks {
		old := c.lru.Remove(c.lru.Back()).(*chunk)
		delete(c.index, old.key)
	}
	return data, nil
}

func (c *chunkCache) count(n int64) {
	c.mu.Lock()
	c.reads++
	c.bytes += n
	c.mu.Unlock()
}

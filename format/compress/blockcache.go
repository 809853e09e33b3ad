package compress

// blockCache keeps blocks of bytes by key up to a number of bytes,
// dropping the oldest first (Seekable's frames, RestartReader's chunks,
// BuildRestarts' chunks of the stream). It is not safe for concurrent use:
// its owner holds a lock.
type blockCache[K comparable] struct {
	limit int // bytes kept at most (but the newest block, whatever its size)
	cost  int // what a block costs besides its bytes
	m     map[K][]byte
	order []K // oldest first
	bytes int
}

func newBlockCache[K comparable](limit, cost int) *blockCache[K] {
	return &blockCache[K]{limit: limit, cost: cost, m: map[K][]byte{}}
}

func (c *blockCache[K]) get(k K) ([]byte, bool) {
	b, ok := c.m[k]
	return b, ok
}

// put keeps b under k (unless k is kept already), dropping the oldest
// blocks past the limit.
func (c *blockCache[K]) put(k K, b []byte) {
	if _, ok := c.m[k]; ok {
		return
	}
	c.m[k] = b
	c.order = append(c.order, k)
	c.bytes += len(b) + c.cost
	for c.bytes > c.limit && len(c.order) > 1 {
		old := c.order[0]
		c.order = c.order[1:]
		c.bytes -= len(c.m[old]) + c.cost
		delete(c.m, old)
	}
}

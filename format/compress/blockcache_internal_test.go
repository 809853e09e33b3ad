package compress

import "testing"

// TestBlockCache: blocks are dropped oldest first past the limit (their
// cost counted), a key kept is not replaced, and the newest block stays
// whatever its size.
func TestBlockCache(t *testing.T) {
	c := newBlockCache[int](100, 10)
	for k := range 5 {
		c.put(k, make([]byte, 30)) // 40 each: two fit
	}
	for k := range 5 {
		if _, ok := c.get(k); ok != (k >= 3) {
			t.Errorf("block %d kept: %v", k, ok)
		}
	}
	c.put(4, make([]byte, 1))
	if b, _ := c.get(4); len(b) != 30 {
		t.Error("a kept block replaced")
	}
	c.put(9, make([]byte, 500))
	if _, ok := c.get(9); !ok || len(c.order) != 1 || c.bytes != 510 {
		t.Errorf("the newest block: %v, %d kept, %d bytes", ok, len(c.order), c.bytes)
	}
}

package fat

import (
	"fmt"
	"io"
	"sync"

	"github.com/vmaconv/vmaconv/guest"
)

// Open returns the file's contents. The cluster chain is checked as it is
// read: it must hold exactly the clusters the file's size needs.
func (n *node) Open() (guest.File, error) {
	v := n.v
	if !n.info.Mode.IsRegular() {
		return nil, fmt.Errorf("%s: %s: %w", v.typ, n.path, guest.ErrNotRegular)
	}
	f := &file{v: v, path: n.path, size: n.info.Size}
	if f.size == 0 {
		return f, nil
	}
	if !v.valid(n.first) {
		return nil, v.corrupt(n.path, "first cluster %d of a %d-byte file outside 2..%d", n.first, f.size, v.nclu+1)
	}
	need := (f.size + v.cs - 1) / v.cs
	if need > int64(v.nclu) {
		return nil, v.corrupt(n.path, "%d bytes need %d clusters, the volume has %d", f.size, need, v.nclu)
	}
	f.n = uint32(need)
	f.stride = max(1, (f.n+maxCheckpoints-1)/maxCheckpoints)
	f.cps = []uint32{n.first}
	f.lastClu = n.first
	return f, nil
}

// file reads a regular file through its cluster chain.
type file struct {
	v    *volume
	path string
	size int64
	n    uint32 // clusters the size needs

	mu      sync.Mutex
	stride  uint32   // cps[k] is the cluster of index k*stride
	cps     []uint32 // at most maxCheckpoints+1
	lastIdx uint32   // the last position reached in the chain
	lastClu uint32
	tailOK  bool // the chain was seen to end at cluster n-1
}

// Size returns the file's length.
func (f *file) Size() int64 { return f.size }

// ReadAt reads len(p) bytes at off; past the end it returns io.EOF.
// Physically contiguous clusters are read with one device read.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: %s: read at negative offset %d", f.v.typ, f.path, off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), f.size-off)
	cs := f.v.cs
	var done int64
	for done < want {
		pos := off + done
		idx := uint32(pos / cs)
		in := pos % cs
		maxRun := uint32((in + want - done + cs - 1) / cs)
		c, run, err := f.run(idx, maxRun)
		if err != nil {
			return int(done), err
		}
		k := min(int64(run)*cs-in, want-done)
		what := fmt.Sprintf("clusters %d..%d", c, c+run-1)
		if err := f.v.readAt(p[done:done+k], f.v.clusterOff(c)+in, f.path, what); err != nil {
			return int(done), err
		}
		done += k
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

// run returns the cluster of chain index idx (< f.n) and how many
// physically contiguous clusters start there (at most maxRun).
func (f *file) run(idx, maxRun uint32) (uint32, uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.seek(idx)
	if err != nil {
		return 0, 0, err
	}
	cnt := uint32(1)
	for cur, i := c, idx; ; {
		if i == f.n-1 {
			if !f.tailOK {
				next, err := f.v.next(cur, f.path)
				if err != nil {
					return 0, 0, err
				}
				if next != 0 {
					return 0, 0, f.v.corrupt(f.path, "cluster chain does not end after the %d clusters of its %d bytes (too long, or a loop)", f.n, f.size)
				}
				f.tailOK = true
			}
			break
		}
		if cnt >= maxRun {
			break
		}
		next, err := f.step(i, cur)
		if err != nil {
			return 0, 0, err
		}
		i++
		if next != cur+1 {
			break
		}
		cur = next
		cnt++
	}
	return c, cnt, nil
}

// seek returns the cluster of chain index idx, walking from the last
// position reached or the nearest checkpoint. f.mu is held.
func (f *file) seek(idx uint32) (uint32, error) {
	i, c := f.lastIdx, f.lastClu
	if k := min(idx/f.stride, uint32(len(f.cps)-1)); i > idx || k*f.stride > i {
		i, c = k*f.stride, f.cps[k]
	}
	for i < idx {
		next, err := f.step(i, c)
		if err != nil {
			return 0, err
		}
		i, c = i+1, next
	}
	return c, nil
}

// step returns the cluster after c, which is at chain index i < f.n-1,
// and records it as the last position and, where due, a checkpoint.
func (f *file) step(i, c uint32) (uint32, error) {
	next, err := f.v.next(c, f.path)
	if err != nil {
		return 0, err
	}
	if next == 0 {
		return 0, f.v.corrupt(f.path, "cluster chain ends after %d clusters, its %d bytes need %d", i+1, f.size, f.n)
	}
	i++
	if i%f.stride == 0 && int(i/f.stride) == len(f.cps) && len(f.cps) <= maxCheckpoints {
		f.cps = append(f.cps, next)
	}
	f.lastIdx, f.lastClu = i, next
	return next, nil
}

package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Reader reads an Object front to back (io.ReadSeekCloser): parallel
// ranged GETs ahead of the reader, at most ReadAhead chunks of ChunkSize
// bytes in flight or waiting, so that its memory is bounded by their
// product. The window it reads ahead starts small after Open and after
// every Seek (4 KiB: a reader that reads a header and seeks past the data
// behind it, as a VMA stream reader skipping the extents it does not want,
// fetches little it does not use) and doubles as the reads go on in order.
// An object whose server does not take ranges is read with one GET from
// its start, and Seek only goes forward.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	ob     *Object
	off    int64 // next byte Read returns
	next   int64 // first byte not asked for yet
	window int64
	queue  []*chunk
	ctx    context.Context
	stop   context.CancelFunc
	err    error

	whole io.ReadCloser // no ranges: the one body
	pos   int64         // its position
}

type chunk struct {
	off  int64
	data []byte
	done chan struct{}
	err  error
}

// firstWindow is what a Reader reads ahead after a Seek.
const firstWindow = 4 << 10

// NewReader returns a Reader of the object from offset off.
func (ob *Object) NewReader(off int64) *Reader {
	ctx, stop := context.WithCancel(ob.ctx)
	return &Reader{ob: ob, off: off, next: off, window: firstWindow, ctx: ctx, stop: stop}
}

// Object returns the object read.
func (r *Reader) Object() *Object { return r.ob }

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !r.ob.RandomAccess() {
		return r.readWhole(p)
	}
	if r.off >= r.ob.v.size {
		return 0, io.EOF
	}
	r.fill(int64(len(p)))
	c := r.queue[0]
	select {
	case <-c.done:
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	}
	if c.err != nil {
		r.err = c.err
		return 0, c.err
	}
	n := copy(p, c.data[r.off-c.off:])
	r.off += int64(n)
	if r.off >= c.off+int64(len(c.data)) {
		r.queue = r.queue[1:]
		// Read on in order: read further ahead.
		r.window = min(2*r.window, int64(r.ob.o.ReadAhead)*r.ob.o.ChunkSize)
	}
	return n, nil
}

// fill asks for chunks up to the window ahead of the reader (at least
// want bytes), within the bound on chunks.
func (r *Reader) fill(want int64) {
	limit := min(r.off+max(r.window, want), r.ob.v.size)
	cs := r.ob.o.ChunkSize
	for r.next < limit && len(r.queue) < r.ob.o.ReadAhead {
		n := min(cs, limit-r.next)
		c := &chunk{off: r.next, data: make([]byte, n), done: make(chan struct{})}
		r.next += n
		r.queue = append(r.queue, c)
		go func() {
			defer close(c.done)
			c.err = r.ob.fetchCtx(r.ctx, c.data, c.off)
		}()
	}
}

// Seek implements io.Seeker: it drops what was read ahead (unless the new
// offset is in the chunk being read).
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		if r.ob.v.size < 0 {
			return 0, errors.New("seek from the end of an object of unknown size")
		}
		offset += r.ob.v.size
	}
	if offset < 0 {
		return 0, fmt.Errorf("%s: seek to negative offset %d", r.ob.name, offset)
	}
	if offset == r.off {
		return offset, nil
	}
	if !r.ob.RandomAccess() {
		if offset < r.off {
			return 0, fmt.Errorf("%s: %w", r.ob.name, ErrNoRanges)
		}
		r.off = offset
		return offset, nil
	}
	if len(r.queue) > 0 && offset > r.off && offset < r.queue[0].off+int64(len(r.queue[0].data)) {
		r.off = offset
		return offset, nil
	}
	r.drop()
	r.off, r.next, r.window = offset, offset, firstWindow
	return offset, nil
}

// drop abandons the chunks asked for.
func (r *Reader) drop() {
	r.stop()
	r.ctx, r.stop = context.WithCancel(r.ob.ctx)
	r.queue = nil
}

// Close stops the reads under way.
func (r *Reader) Close() error {
	r.stop()
	r.queue = nil
	if r.whole != nil {
		r.whole.Close()
	}
	if r.err == nil {
		r.err = errors.New("read after Close")
	}
	return nil
}

// readWhole reads an object whose server takes no ranges, with one GET
// (made again from the start, and read up to where it was, after a
// failure that may pass).
func (r *Reader) readWhole(p []byte) (int, error) {
	var n int
	err := r.ob.retry(r.ctx, func() error {
		if r.whole == nil {
			r.ob.stats.Requests.Add(1)
			rc, err := r.ob.st.get(r.ctx, 0, -1, r.ob.v)
			if err != nil {
				return err
			}
			r.whole, r.pos = rc, 0
		}
		if r.pos < r.off {
			k, err := io.CopyN(io.Discard, r.whole, r.off-r.pos)
			r.pos += k
			r.ob.stats.Bytes.Add(k)
			if err != nil {
				r.whole.Close()
				r.whole = nil
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		k, err := r.whole.Read(p)
		n = k
		r.pos += int64(k)
		r.ob.stats.Bytes.Add(int64(k))
		if err != nil && err != io.EOF || err == io.EOF && r.ob.v.size >= 0 && r.pos < r.ob.v.size {
			r.whole.Close()
			r.whole = nil
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if k > 0 {
				return nil // delivered; the rest is asked for again
			}
			return err
		}
		if err == io.EOF && k == 0 {
			return io.EOF
		}
		return nil
	})
	r.off += int64(n)
	if err == io.EOF {
		return 0, io.EOF
	}
	if err != nil {
		r.err = r.ob.wrapAt(err, r.off)
		return n, r.err
	}
	return n, nil
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
)

// Options tunes the readers of Scan, Pack, Copy and Hash. The zero value
// means the defaults.
type Options struct {
	// Workers is the number of parallel readers (default: the number of
	// CPUs). 1 reads sequentially; the output is the same for any value.
	Workers int
	// ChunkSize is the bytes one reader fetches at a time, a multiple of
	// 64 KiB (default 1 MiB). Memory in flight is 2·Workers+1 chunks, and
	// never more than MaxInFlight: beyond that, more workers would only
	// wait for a buffer, so there are no more of them.
	ChunkSize int
	// Progress, if set, is called from one goroutine with the number of
	// source bytes done so far, after every chunk.
	Progress func(done int64)
}

// Validate fills in defaults and checks the values.
func (o *Options) Validate() error {
	if o.Workers == 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 1 << 20
	}
	switch {
	case o.Workers < 1 || o.Workers > 1024:
		return fmt.Errorf("pipeline: %d workers: want 1 to 1024", o.Workers)
	case o.ChunkSize < vma.ClusterSize || o.ChunkSize%vma.ClusterSize != 0 || o.ChunkSize > 64<<20:
		return fmt.Errorf("pipeline: chunk size %d: want a multiple of 64 KiB up to 64 MiB", o.ChunkSize)
	}
	return nil
}

// MaxInFlight bounds the bytes of chunks a Scan holds at once, whatever
// the number of workers.
const MaxInFlight = 48 << 20

type chunk struct {
	off  int64
	n    int
	buf  []byte
	zero bool // known to be all zero; buf not filled
	err  error
	done chan struct{}
}

// Scan reads src from start to end with o.Workers parallel readers and calls
// fn for every chunk in ascending order, from the calling goroutine. data
// is nil for a chunk the source reports as all zero (it was not read);
// otherwise it holds the chunk (the last one may be short), valid only
// during the call. Ranges the source reports as zero inside a chunk are
// zero-filled, not read. The first error stops everything and is returned.
func Scan(parent context.Context, src format.Source, o Options, fn func(off int64, data []byte) error) error {
	return scan(parent, src, o, true, fn)
}

// scan is Scan; with ordered false, the readers call fn themselves, in
// parallel and in any order, and o.Progress is called under a lock.
func scan(parent context.Context, src format.Source, o Options, ordered bool, fn func(off int64, data []byte) error) error {
	if err := o.Validate(); err != nil {
		return err
	}
	size := src.Size()
	ext, _ := src.(format.Extenter)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)

	// Chunks are queued to the workers and, in the same order, to the
	// consumer below, which waits for each in turn. free bounds the
	// buffers in flight.
	inFlight := 2*o.Workers + 1
	if !ordered {
		inFlight = o.Workers
	}
	inFlight = max(min(inFlight, MaxInFlight/o.ChunkSize), 1)
	o.Workers = min(o.Workers, inFlight)
	free := make(chan []byte, inFlight)
	for range inFlight {
		free <- make([]byte, o.ChunkSize)
	}
	work := make(chan *chunk, inFlight)
	ordq := make(chan *chunk, inFlight)
	if !ordered {
		close(ordq)
	}
	g.Go(func() error {
		defer close(work)
		if ordered {
			defer close(ordq)
		}
		for off := int64(0); off < size; off += int64(o.ChunkSize) {
			var buf []byte
			select {
			case buf = <-free:
			case <-gctx.Done():
				return nil
			}
			c := &chunk{off: off, n: int(min(int64(o.ChunkSize), size-off)), buf: buf, done: make(chan struct{})}
			if ordered {
				select {
				case ordq <- c:
				case <-gctx.Done():
					return nil
				}
			}
			work <- c // never blocks for long: work has room for every buffer
		}
		return nil
	})
	var mu sync.Mutex // unordered: serialises Progress
	var done int64
	for range o.Workers {
		g.Go(func() error {
			for c := range work {
				c.zero, c.err = readChunk(src, ext, c.buf[:c.n], c.off)
				if ordered {
					close(c.done)
					if c.err != nil {
						return c.err
					}
					continue
				}
				if c.err == nil {
					if err := gctx.Err(); err != nil {
						return err
					}
					data := c.buf[:c.n]
					if c.zero {
						data = nil
					}
					c.err = fn(c.off, data)
				}
				if c.err != nil {
					return c.err
				}
				if o.Progress != nil {
					mu.Lock()
					done += int64(c.n)
					o.Progress(done)
					mu.Unlock()
				}
				free <- c.buf
			}
			return nil
		})
	}
	var err error
	for c := range ordq { // closed at once when unordered
		select {
		case <-c.done:
		case <-gctx.Done():
		}
		if err == nil {
			err = gctx.Err()
		}
		if err == nil {
			err = c.err
		}
		if err == nil {
			data := c.buf[:c.n]
			if c.zero {
				data = nil
			}
			err = fn(c.off, data)
			done += int64(c.n)
			if err == nil && o.Progress != nil {
				o.Progress(done)
			}
		}
		if err != nil {
			cancel()
			continue // drain ordq so the dispatcher can finish
		}
		free <- c.buf
	}
	gerr := g.Wait()
	if err == nil {
		err = gerr
	}
	if errors.Is(err, context.Canceled) && parent.Err() == nil && gerr != nil {
		err = gerr // a worker's error cancelled the group
	}
	return err
}

// readChunk fills p with the source's bytes at off, reading only what the
// source does not report as zero. It reports whether everything was zero.
func readChunk(src format.Source, ext format.Extenter, p []byte, off int64) (allZero bool, err error) {
	if ext == nil {
		return false, readFull(src, p, off)
	}
	allZero = true
	for pos := 0; pos < len(p); {
		e, err := ext.Extent(off+int64(pos), int64(len(p)-pos))
		if err != nil {
			return false, err
		}
		n := int(min(e.Length, int64(len(p)-pos)))
		if n <= 0 {
			return false, fmt.Errorf("source reported an empty extent at %d", off+int64(pos))
		}
		if e.Zero {
			clear(p[pos : pos+n])
		} else {
			allZero = false
			if err := readFull(src, p[pos:pos+n], off+int64(pos)); err != nil {
				return false, err
			}
		}
		pos += n
	}
	return allZero, nil
}

func readFull(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at %d: %w", len(p), off, err)
}

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
	case o.ChunkSize < 64<<10 || o.ChunkSize%(64<<10) != 0 || o.ChunkSize > 64<<20:
		return fmt.Errorf("pipeline: chunk size %d: want a multiple of 64 KiB up to 64 MiB", o.ChunkSize)
	}
	return nil
}

// MaxInFlight bounds the bytes of chunks a Scan holds at once, whatever
// the number of workers.
const MaxInFlight = 48 << 20

type chunk struct {
	off   int64
	n     int64
	buf   []byte // nil for a run the dispatcher found zero
	zero  bool   // all zero; buf not filled
	err   error
	done  chan struct{}
	known bool // zero by the source's map, before any worker saw it
}

// Scan reads src from start to end with o.Workers parallel readers and calls
// fn for every range [off, off+n) in ascending order, from the calling
// goroutine. data is nil for a range the source reports as all zero (it
// was not read): a chunk, or a run of whole chunks as long as the source's
// zero region, so that a source's holes cost one call however large they
// are. Otherwise data holds the chunk (the last one may be short), valid
// only during the call. Ranges the source reports as zero inside a chunk
// are zero-filled, not read. The first error stops everything and is
// returned.
func Scan(parent context.Context, src format.Source, o Options, fn func(off, n int64, data []byte) error) error {
	return scan(parent, src, o, true, fn)
}

// scan is Scan; with ordered false, the readers call fn themselves, in
// parallel and in any order, and o.Progress is called under a lock.
func scan(parent context.Context, src format.Source, o Options, ordered bool, fn func(off, n int64, data []byte) error) error {
	if err := o.Validate(); err != nil {
		return err
	}
	size := src.Size()
	ext, _ := src.(format.ZeroMapper)
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
		cs := int64(o.ChunkSize)
		var mapped int64 // the source's map is known up to here
		for off := int64(0); off < size; {
			var c *chunk
			if ext != nil && off >= mapped {
				c, mapped = zeroRun(ext, off, size, cs)
			}
			if c == nil {
				var buf []byte
				select {
				case buf = <-free:
				case <-gctx.Done():
					return nil
				}
				c = &chunk{off: off, n: min(cs, size-off), buf: buf, done: make(chan struct{})}
			}
			off += c.n
			if ordered {
				select {
				case ordq <- c:
				case <-gctx.Done():
					return nil
				}
			}
			switch {
			case !c.known:
				work <- c // never blocks for long: work has room for every buffer
			case !ordered: // the workers call fn
				select {
				case work <- c:
				case <-gctx.Done():
					return nil
				}
			}
		}
		return nil
	})
	var mu sync.Mutex // unordered: serialises Progress
	var done int64
	for range o.Workers {
		g.Go(func() error {
			for c := range work {
				if !c.known {
					c.zero, c.err = readChunk(src, ext, c.buf[:c.n], c.off)
				}
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
					var data []byte
					if !c.zero {
						data = c.buf[:c.n]
					}
					c.err = fn(c.off, c.n, data)
				}
				if c.err != nil {
					return c.err
				}
				if o.Progress != nil {
					mu.Lock()
					done += c.n
					o.Progress(done)
					mu.Unlock()
				}
				if c.buf != nil {
					free <- c.buf
				}
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
			var data []byte
			if !c.zero {
				data = c.buf[:c.n]
			}
			err = fn(c.off, c.n, data)
			done += c.n
			if err == nil && o.Progress != nil {
				o.Progress(done)
			}
		}
		if err != nil {
			cancel()
			continue // drain ordq so the dispatcher can finish
		}
		if c.buf != nil {
			free <- c.buf
		}
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

// zeroRun returns a chunk for the zero run the source's map reports at
// off, if it spans at least one whole chunk (it is cut to whole chunks, or
// to the end), and how far the map is known: a data extent need not be
// asked about again until its end. Errors are left for the chunk's reader
// to meet, where they are reported with their place.
func zeroRun(ext format.ZeroMapper, off, size, cs int64) (*chunk, int64) {
	e, err := ext.Region(off, size-off)
	if err != nil || e.Length <= 0 {
		return nil, off + cs
	}
	if !e.Zero {
		return nil, off + e.Length
	}
	n := e.Length
	if off+n < size {
		n -= n % cs
	}
	if n == 0 {
		return nil, off + cs
	}
	done := make(chan struct{})
	close(done)
	return &chunk{off: off, n: min(n, size-off), zero: true, known: true, done: done}, off + n
}

// readChunk fills p with the source's bytes at off, reading only what the
// source does not report as zero. It reports whether everything was zero;
// then p is left as it was (nobody reads it).
func readChunk(src format.Source, ext format.ZeroMapper, p []byte, off int64) (allZero bool, err error) {
	if ext == nil {
		return false, readFull(src, p, off)
	}
	allZero = true
	var zeros [][2]int // zero ranges met before the first data: cleared only if data follows
	for pos := 0; pos < len(p); {
		e, err := ext.Region(off+int64(pos), int64(len(p)-pos))
		if err != nil {
			return false, err
		}
		n := int(min(e.Length, int64(len(p)-pos)))
		if n <= 0 {
			return false, fmt.Errorf("source reported an empty extent at %d", off+int64(pos))
		}
		switch {
		case e.Zero && allZero:
			zeros = append(zeros, [2]int{pos, pos + n})
		case e.Zero:
			clear(p[pos : pos+n])
		default:
			if allZero {
				for _, z := range zeros {
					clear(p[z[0]:z[1]])
				}
				allZero = false
			}
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

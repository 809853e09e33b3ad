package guest

import (
	"context"
	"errors"
	"io"
	"sync"
)

// MemoryLimit is the soft memory limit (runtime/debug.SetMemoryLimit)
// that vmaconv's commands reading a tree set, unless GOMEMLIMIT does: what
// a tree holds is bounded (its chunk cache, ReadData's chunks in flight,
// the decoded frames of a seekable .vma.zst below it) but short-lived, so
// that without a limit the collector lets a cat of a large file grow past
// 128 MiB of RSS.
const MemoryLimit = 96 << 20

// readChunk is the unit of ReadData: the size of each read, and of each
// buffer in flight.
const readChunk = 1 << 20

// readWorkers is how many chunks ReadData reads at once: a compressed
// archive decompresses several frames in parallel.
const readWorkers = 4

// ReadData reads f's stored data, in order, in parallel chunks of at most
// 1 MiB, and calls fn with each chunk and its offset. Ranges that f
// reports as holes (Sparse) are not read, nor passed to fn. Memory is
// bounded: at most 2×readWorkers chunks are in flight.
func ReadData(ctx context.Context, f File, fn func(off int64, p []byte) error) error {
	size := f.Size()
	if _, sparse := f.(Sparse); !sparse && size <= readChunk {
		// One read, without the goroutines: most files are small.
		return readSmall(ctx, f, size, fn)
	}
	type job struct {
		off  int64
		buf  []byte
		err  error
		done chan struct{}
	}
	// Buffers go round: made as needed, at most 2×readWorkers+1 of them.
	free := make(chan []byte, 2*readWorkers+1)
	made := 0
	work := make(chan *job, readWorkers)
	order := make(chan *job, readWorkers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range readWorkers {
		wg.Go(func() {
			for j := range work {
				n, err := f.ReadAt(j.buf, j.off)
				if err == io.EOF && n == len(j.buf) {
					err = nil
				}
				if err == nil && n < len(j.buf) {
					err = io.ErrUnexpectedEOF
				}
				j.err = err
				close(j.done)
			}
		})
	}
	// The producer walks the stored ranges and queues chunks.
	var prodErr error
	go func() {
		defer close(order)
		defer close(work)
		sparse, _ := f.(Sparse)
		for off := int64(0); off < size; {
			start, end := off, size
			if sparse != nil {
				s, e, err := sparse.Data(off)
				if err == io.EOF {
					return
				}
				if err != nil {
					prodErr = err
					return
				}
				if s < off || e <= s || e > size {
					prodErr = errors.New("file's data map is out of order: " + ErrCorrupt.Error())
					return
				}
				start, end = s, e
			}
			for o := start; o < end; o += readChunk {
				var buf []byte
				select {
				case buf = <-free:
				default:
					if made < cap(free) {
						buf, made = make([]byte, readChunk), made+1
					} else {
						select {
						case buf = <-free:
						case <-ctx.Done():
							return
						}
					}
				}
				j := &job{off: o, buf: buf[:min(readChunk, end-o)], done: make(chan struct{})}
				select {
				case order <- j:
				case <-ctx.Done():
					return
				}
				work <- j
			}
			off = end
		}
	}()
	var err error
	for j := range order {
		<-j.done
		if err == nil {
			err = j.err
		}
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = fn(j.off, j.buf)
		}
		free <- j.buf[:cap(j.buf)]
		if err != nil {
			cancel()
		}
	}
	wg.Wait()
	if err == nil {
		err = prodErr
	}
	if err == nil {
		// Cancelled while nothing was queued: the producer stopped early.
		err = ctx.Err()
	}
	return err
}

// readSmall is ReadData of a file of at most one chunk without a map.
func readSmall(ctx context.Context, f File, size int64, fn func(off int64, p []byte) error) error {
	if err := ctx.Err(); err != nil || size == 0 {
		return err
	}
	p := make([]byte, size)
	n, err := f.ReadAt(p, 0)
	if n == len(p) {
		err = nil
	} else if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	return fn(0, p)
}

// WriteTo writes f's whole content to w, holes as zeros, reading it with
// ReadData.
func WriteTo(ctx context.Context, f File, w io.Writer) (int64, error) {
	var written int64
	zeros := make([]byte, 64<<10)
	fill := func(to int64) error {
		for written < to {
			n, err := w.Write(zeros[:min(int64(len(zeros)), to-written)])
			written += int64(n)
			if err != nil {
				return err
			}
		}
		return nil
	}
	err := ReadData(ctx, f, func(off int64, p []byte) error {
		if err := fill(off); err != nil {
			return err
		}
		n, err := w.Write(p)
		written += int64(n)
		return err
	})
	if err == nil {
		err = fill(f.Size())
	}
	return written, err
}

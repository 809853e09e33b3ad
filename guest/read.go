package guest

import (
	"context"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/pipeline"
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
// 1 MiB (pipeline.Scan's readers), and calls fn with each chunk and its
// offset. Ranges that f reports as holes (Sparse) are not read, nor passed
// to fn, but in a file of at most 1 MiB, which is read whole in one ReadAt
// (holes as zeros). Memory is bounded: at most 2×readWorkers+1 chunks are
// in flight.
func ReadData(ctx context.Context, f File, fn func(off int64, p []byte) error) error {
	size := f.Size()
	sparse, isSparse := f.(Sparse)
	if size <= readChunk {
		// One read, without the readers: most files are small.
		return readSmall(ctx, f, size, fn)
	}
	var src format.Source = fileSource{f}
	if isSparse {
		src = sparseSource{fileSource{f}, sparse}
	}
	err := pipeline.Scan(ctx, src, pipeline.Options{Workers: readWorkers, ChunkSize: readChunk}, func(off, n int64, data []byte) error {
		if data == nil {
			return nil // a hole
		}
		return fn(off, data[:n])
	})
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// fileSource is a File as a format.Source, for pipeline.Scan.
type fileSource struct{ File }

func (fileSource) Close() error { return nil }

// sparseSource is a Sparse file as a format.ZeroMapper: its holes are
// zero regions, not read.
type sparseSource struct {
	fileSource
	s Sparse
}

// Region implements format.ZeroMapper from Sparse.Data.
func (s sparseSource) Region(start, length int64) (format.Region, error) {
	ds, de, err := s.s.Data(start)
	switch {
	case err == io.EOF:
		return format.Region{Start: start, Length: length, Zero: true}, nil
	case err != nil:
		return format.Region{}, err
	case ds < start || de <= ds:
		return format.Region{}, fmt.Errorf("a file's data map answers [%d, %d) for offset %d: %w", ds, de, start, ErrCorrupt)
	case ds > start:
		return format.Region{Start: start, Length: min(ds-start, length), Zero: true}, nil
	}
	return format.Region{Start: start, Length: min(de-start, length)}, nil
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

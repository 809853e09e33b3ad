package pipeline

import (
	"context"
	"crypto/sha256"
	"io"

	"github.com/vmaconv/vmaconv/format"
)

// Copy writes src to dst: every byte of [0, src.Size()) exactly once, as
// data (WriteAt, chunks of o.ChunkSize, zeros possibly among them) or, for
// chunks the source reports as all zero, as ZeroAt; dst detects zeros
// inside data at its own granularity. The source is read by o.Workers
// parallel readers. If dst is format.OrderIndependent the readers write
// it themselves, in parallel; otherwise one goroutine writes, in ascending
// order, so that sinks which lay out data as it comes (archives, qcow2)
// give the same bytes for any o.Workers.
func Copy(ctx context.Context, dst format.DiskWriter, src format.Source, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	_, free := dst.(format.OrderIndependent)
	return scan(ctx, src, o, !free || o.Workers == 1, func(off, n int64, data []byte) error {
		if data == nil {
			return dst.ZeroAt(off, n)
		}
		_, err := dst.WriteAt(data, off)
		return err
	})
}

// Stream writes src's content to w in order, zeros included: for a pipe.
func Stream(ctx context.Context, w io.Writer, src format.Source, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	zeros := make([]byte, o.ChunkSize)
	return Scan(ctx, src, o, func(off, n int64, data []byte) error {
		if data != nil {
			_, err := w.Write(data)
			return err
		}
		for n > 0 {
			k := min(n, int64(len(zeros)))
			if _, err := w.Write(zeros[:k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	})
}

// Hash returns the sha256 of src's content.
func Hash(ctx context.Context, src format.Source, o Options) ([]byte, error) {
	h := sha256.New()
	if err := Stream(ctx, h, src, o); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

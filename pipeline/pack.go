package pipeline

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
)

// Disk is a source to pack as the archive device with the given id.
type Disk struct {
	ID  int
	Src format.Source
}

// Pack writes every cluster of every disk to w, one disk after the other
// (as Proxmox's backup does), in ascending cluster order, reading each
// disk with o.Workers parallel readers. Zero ranges the source knows of
// are not read. The device sizes registered in w may exceed the sources'
// (QEMU rounds raw sizes up to 512 bytes); the rest reads as zero. Pack
// does not Close w.
func Pack(ctx context.Context, w *vma.Writer, disks []Disk, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	for _, d := range disks {
		err := Scan(ctx, d.Src, o, func(off int64, data []byte) error {
			first := off / vma.ClusterSize
			if data == nil {
				n := (int64(o.ChunkSize) + vma.ClusterSize - 1) / vma.ClusterSize
				for c := first; c < first+n && c*vma.ClusterSize < d.Src.Size(); c++ {
					if err := w.WriteCluster(d.ID, c, nil); err != nil {
						return err
					}
				}
				return nil
			}
			for i := 0; i < len(data); i += vma.ClusterSize {
				if err := w.WriteCluster(d.ID, first+int64(i/vma.ClusterSize), data[i:min(i+vma.ClusterSize, len(data))]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Copy writes src to dst at the same offsets, skipping 4 KiB blocks that are
// zero, so a dst that starts as a sparse file of src.Size() bytes ends up
// equal to src with holes where src is zero. Adjacent non-zero blocks are
// written with one WriteAt.
func Copy(ctx context.Context, dst io.WriterAt, src format.Source, o Options) error {
	return Scan(ctx, src, o, func(off int64, data []byte) error {
		run := -1 // start of the pending run of non-zero blocks
		flush := func(end int) error {
			if run < 0 {
				return nil
			}
			at := off + int64(run)
			_, err := dst.WriteAt(data[run:end], at)
			run = -1
			if err != nil {
				return fmt.Errorf("writing at byte %d: %w", at, err)
			}
			return nil
		}
		for i := 0; i < len(data); i += vma.BlockSize {
			end := min(i+vma.BlockSize, len(data))
			if vma.IsZero(data[i:end]) {
				if err := flush(i); err != nil {
					return err
				}
			} else if run < 0 {
				run = i
			}
		}
		return flush(len(data))
	})
}

// Stream writes src's content to w in order, zeros included: for a pipe.
func Stream(ctx context.Context, w io.Writer, src format.Source, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	zeros := make([]byte, o.ChunkSize)
	return Scan(ctx, src, o, func(off int64, data []byte) error {
		if data == nil {
			data = zeros[:min(int64(o.ChunkSize), src.Size()-off)]
		}
		_, err := w.Write(data)
		return err
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

package vma

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/vmaconv/vmaconv/format"
)

// RepackOptions tunes Repack. The zero value reads the data through the
// Reader.
type RepackOptions struct {
	// Data, if set, is the archive the Reader reads, for random access (a
	// file): the Reader then only walks the extent headers, seeking over
	// the data (Reader.Want), and Workers parallel readers fetch each
	// extent's data from Data, ahead of the writer.
	Data io.ReaderAt
	// Workers is the number of parallel readers of Data (default: the
	// number of CPUs). The output is the same for any value.
	Workers int
	// Progress, if set, is called after each extent is written with the
	// archive bytes read so far.
	Progress func(archiveBytes int64)
}

// repackData is the most data an extent holds.
const repackData = SlotsPerExtent * ClusterSize

// Repack writes the devices of the archive r to dst, device ids[k] to
// dst.Disk(k), in the archive's order, so that the output depends only on
// the archive, not on how it is read (a file at random, a stream) nor on
// Workers:
//   - when ids holds every device of the archive and dst is
//     an ExtentWriter, every extent is written as an extent of its own,
//     with the same clusters in the same order (Writer.WriteExtent):
//     an archive written by Proxmox or by Writer comes back byte for
//     byte, given its UUID and ctime;
//   - otherwise the clusters of the devices in ids are written in the
//     archive's order, each whole to its disk, which groups them into
//     extents as it does (Writer: 58 to an extent).
//
// A vmstate stream's clusters past its size are dropped and its unstored
// tail is written as zeros (within CheckVMStateTail). Memory is
// bounded: at most Workers+2 extents' data (and never more than
// MaxInFlight) are in flight. Repack returns the Reader's error, if any.
func Repack(ctx context.Context, r *Reader, dst format.Sink, ids []int, o RepackOptions) error {
	devs := r.Header().Devices
	disk := map[int]int{}               // archive device id -> dst disk
	sizes := make([]int64, len(ids))    // by disk
	vmstate := make([]Device, len(ids)) // the vmstate streams, by disk
	for k, id := range ids {
		if _, dup := disk[id]; dup {
			return fmt.Errorf("vma: Repack: device id %d given twice", id)
		}
		i := slices.IndexFunc(devs, func(d Device) bool { return d.ID == id })
		if i < 0 {
			return fmt.Errorf("vma: Repack: the archive has no device with id %d", id)
		}
		disk[id], sizes[k] = k, devs[i].Size
		if devs[i].IsVMState() {
			vmstate[k] = devs[i]
		}
	}
	ew, whole := dst.(ExtentWriter)
	whole = whole && len(ids) == len(devs)
	if o.Data != nil && !r.Want() { // walk the headers only, if r can seek
		o.Data = nil
	} else if o.Data == nil {
		r.Want(ids...) // skip the others' data where the input allows
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	// Buffers: one being filled per reader, one waiting to be written, one
	// being written; from a stream, one the walker copies an extent into
	// while the other is written.
	inFlight := max(min(o.Workers+2, MaxInFlight/repackData), 3)
	workers := min(o.Workers, inFlight-1)
	if o.Data == nil {
		inFlight, workers = 2, 0
	}

	g, gctx := errgroup.WithContext(ctx)
	cctx, cancel := context.WithCancel(gctx)
	defer cancel()
	free := make(chan []byte, inFlight)
	for range inFlight {
		free <- nil // allocated on first use
	}
	work := make(chan *repackExtent, inFlight)
	ordq := make(chan *repackExtent, inFlight)
	g.Go(func() error { // walks the headers, in archive order
		defer close(work)
		defer close(ordq)
		for {
			if err := cctx.Err(); err != nil {
				return err
			}
			e, err := r.NextExtent()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			x := &repackExtent{off: e.Offset, end: r.Offset(), done: make(chan struct{})}
			n, need := 0, false
			for _, c := range e.Clusters {
				k, ok := disk[c.Device.ID]
				stored := bits.OnesCount16(c.Mask) * BlockSize
				n += stored
				if !ok {
					continue
				}
				if d := vmstate[k]; d.Name != "" && c.Index >= d.Clusters() {
					continue // past a vmstate stream's size
				}
				need = need || stored > 0
				// c.Offset is where its data is (the extent's, if none).
				pos := int(c.Offset - e.Offset - ExtentHeaderSize)
				x.cs = append(x.cs, repackCluster{disk: k, c: Cluster{Index: c.Index, Mask: c.Mask}, pos: pos})
			}
			switch {
			case !need:
				close(x.done)
			case e.Data == nil && o.Data == nil:
				return fmt.Errorf("vma: Repack: the data of the extent at byte offset %d was skipped but is needed", e.Offset)
			default:
				select {
				case x.buf = <-free:
				case <-cctx.Done():
					return cctx.Err()
				}
				if x.buf == nil {
					x.buf = make([]byte, repackData)
				}
				x.buf = x.buf[:n]
				if e.Data != nil {
					copy(x.buf, e.Data)
					close(x.done)
				} else {
					x.at = e.Offset + ExtentHeaderSize
					work <- x // never blocks for long: work has room for every buffer
				}
			}
			select {
			case ordq <- x:
			case <-cctx.Done():
				return cctx.Err()
			}
		}
	})
	for range workers {
		g.Go(func() error {
			for x := range work {
				if cctx.Err() == nil {
					if err := readDataAt(o.Data, x.buf, x.at); err != nil {
						// Said the same way whoever sees it first: the
						// writer waiting on x or the group.
						x.err = fmt.Errorf("extent at byte offset %d: %w", x.off, err)
					}
				}
				close(x.done)
				if x.err != nil {
					return x.err
				}
			}
			return nil
		})
	}

	next := make([]int64, len(ids)) // vmstate: clusters written
	var scratch []byte
	var cs []Cluster
	var err error
	for x := range ordq {
		select {
		case <-x.done:
		case <-cctx.Done():
		}
		if err == nil {
			err = cctx.Err()
		}
		if err == nil {
			err = x.err
		}
		if err == nil && len(x.cs) > 0 {
			cs = cs[:0]
			for _, rc := range x.cs {
				c := rc.c
				if c.Mask != 0 {
					c.Data = x.buf[rc.pos : rc.pos+bits.OnesCount16(c.Mask)*BlockSize]
				}
				next[rc.disk]++
				if whole {
					c.Device = Device{ID: rc.disk + 1} // the ExtentWriter's id of dst.Disk(rc.disk)
					cs = append(cs, c)
					continue
				}
				if scratch == nil {
					scratch = make([]byte, ClusterSize)
				}
				if err = writeWhole(dst.Disk(rc.disk), &c, scratch, sizes[rc.disk]); err != nil {
					break
				}
			}
			if err == nil && whole {
				err = ew.WriteExtent(cs)
			}
			if err != nil {
				err = fmt.Errorf("writing the extent at byte offset %d: %w", x.off, err)
			}
		}
		if err == nil && o.Progress != nil {
			o.Progress(x.end)
		}
		if err != nil {
			cancel()
			continue // drain ordq so that the walker can finish
		}
		if x.buf != nil {
			free <- x.buf
		}
	}
	gerr := g.Wait()
	switch {
	case err != nil && !errors.Is(err, context.Canceled): // the writer's
	case gerr != nil && !errors.Is(gerr, context.Canceled): // the walker's or a reader's
		err = gerr
	case ctx.Err() != nil:
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	// A vmstate stream that stores less than its size: zeros to the end.
	for k, d := range vmstate {
		if end := next[k] * ClusterSize; d.Name != "" && end < d.Size {
			if err := CheckVMStateTail(d, end); err != nil {
				return err
			}
			if err := dst.Disk(k).ZeroAt(end, d.Size-end); err != nil {
				return fmt.Errorf("writing %s at byte %d: %w", d.Name, end, err)
			}
		}
	}
	return nil
}

// repackExtent is an extent on its way from the archive to dst.
type repackExtent struct {
	off  int64 // archive offset of the extent header
	end  int64 // archive bytes read once it is read
	at   int64 // archive offset of its data, to read
	cs   []repackCluster
	buf  []byte // its data, when some is needed
	err  error
	done chan struct{} // closed once buf is filled
}

// repackCluster is a cluster of a device to write, whose stored blocks
// are at pos in its extent's data.
type repackCluster struct {
	disk int
	c    Cluster
	pos  int
}

// writeWhole writes cluster c to its offsets of dw: the stored blocks as
// data, expanded in scratch, or a zero range for a cluster that stores
// nothing; bytes past size are left out.
func writeWhole(dw format.DiskWriter, c *Cluster, scratch []byte, size int64) error {
	off := c.Index * ClusterSize
	valid := min(size-off, ClusterSize)
	if c.Mask == 0 {
		return dw.ZeroAt(off, valid)
	}
	c.Expand(scratch)
	_, err := dw.WriteAt(scratch[:valid], off)
	return err
}

// readDataAt reads len(p) bytes at off of src.
func readDataAt(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at %d: %w", len(p), off, err)
}

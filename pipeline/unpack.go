package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/bits"

	"github.com/vmaconv/vmaconv/format/vma"
)

// DeviceStats is what Unpack saw of one device.
type DeviceStats struct {
	Device   vma.Device
	Clusters int64  // clusters read
	Stored   int64  // bytes stored in the archive, within the device size
	Zero     int64  // bytes of the device covered by zero blocks
	SHA256   []byte // digest of the reconstructed device, if asked for
}

// Result summarises an Unpack.
type Result struct {
	Devices []DeviceStats // in device id order
	Extents int64
	Bytes   int64 // archive bytes read
}

// UnpackOptions tunes Unpack. The zero value is ready to use.
type UnpackOptions struct {
	// Digest computes the sha256 of every device's content. Clusters may
	// arrive out of order; up to MaxReorder bytes of them are held back to
	// hash in order.
	Digest bool
	// MaxReorder bounds the memory used to reorder clusters for Digest
	// (default 64 MiB). An archive whose clusters are further out of order
	// fails with ErrReorder.
	MaxReorder int64
	// Progress, if set, is called after each extent with the archive bytes
	// read so far.
	Progress func(archiveBytes int64)
}

// ErrReorder is returned when Digest needs more than MaxReorder bytes to put
// clusters back in order.
var ErrReorder = errors.New("clusters too far out of order")

// Unpack reads every extent of r and writes each device that has a target
// (keyed by device id) with WriteAt, at the device's offsets. Only stored
// data is written, coalesced into runs of adjacent blocks; zero blocks are
// not written, so targets should start out zero (a new sparse file). Data
// past a device's end is dropped. Devices without a target are read and
// checked all the same.
//
// Unpack returns the reader's error, if any: a damaged or incomplete archive
// fails after everything before the damage has been written.
func Unpack(ctx context.Context, r *vma.Reader, targets map[int]io.WriterAt, o UnpackOptions) (*Result, error) {
	if o.MaxReorder <= 0 {
		o.MaxReorder = 64 << 20
	}
	devs := r.Header().Devices
	res := &Result{Devices: make([]DeviceStats, len(devs))}
	byID := map[int]*devState{}
	var held int64
	for i, d := range devs {
		res.Devices[i].Device = d
		st := &devState{stats: &res.Devices[i], dst: targets[d.ID]}
		if o.Digest {
			st.seq = &sequencer{h: sha256.New(), size: d.Size, held: &held, max: o.MaxReorder}
		}
		byID[d.ID] = st
	}
	var w runWriter
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		e, err := r.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			res.Extents, res.Bytes = r.Extents(), r.Offset()
			if ctx.Err() != nil { // the read failed because we were stopped
				return res, ctx.Err()
			}
			return res, err
		}
		w.buf = e.Data
		pos := 0
		for i := range e.Clusters {
			c := &e.Clusters[i]
			st := byID[c.Device.ID]
			st.account(c)
			if st.dst != nil {
				if err := w.add(st.dst, c, pos); err != nil {
					return res, err
				}
			}
			pos += len(c.Data)
			if st.seq != nil {
				if err := st.seq.put(c); err != nil {
					return res, fmt.Errorf("digest of %s: %w", c.Device.Name, err)
				}
			}
		}
		if err := w.flush(); err != nil {
			return res, err
		}
		if o.Progress != nil {
			o.Progress(r.Offset())
		}
	}
	res.Extents, res.Bytes = r.Extents(), r.Offset()
	for _, d := range devs {
		if st := byID[d.ID]; st.seq != nil {
			if err := st.seq.finish(); err != nil {
				return res, fmt.Errorf("digest of %s: %w", d.Name, err)
			}
			st.stats.SHA256 = st.seq.h.Sum(nil)
		}
	}
	return res, nil
}

type devState struct {
	stats *DeviceStats
	dst   io.WriterAt
	seq   *sequencer
}

// validBytes returns how many bytes of cluster c lie inside the device.
func validBytes(c *vma.Cluster) int64 {
	return min(max(c.Device.Size-c.Index*vma.ClusterSize, 0), vma.ClusterSize)
}

func (st *devState) account(c *vma.Cluster) {
	valid := validBytes(c)
	st.stats.Clusters++
	stored := int64(0)
	for m := c.Mask; m != 0; m &= m - 1 {
		b := int64(bits.TrailingZeros16(m)) * vma.BlockSize
		stored += min(max(valid-b, 0), vma.BlockSize)
	}
	st.stats.Stored += stored
	st.stats.Zero += valid - stored
}

// runWriter coalesces stored blocks that are adjacent both on the device and
// in the extent's data into one WriteAt.
type runWriter struct {
	buf []byte // the extent's data
	dst io.WriterAt
	dev string
	off int64 // device offset of the pending run
	pos int   // start of the pending run in buf
	n   int   // length of the pending run
}

// add queues the stored blocks of c, whose data starts at pos in w.buf.
func (w *runWriter) add(dst io.WriterAt, c *vma.Cluster, pos int) error {
	valid := validBytes(c)
	base := c.Index * vma.ClusterSize
	for m := c.Mask; m != 0; {
		first := bits.TrailingZeros16(m)
		n := bits.TrailingZeros16(^(m >> first)) // length of the run of set bits
		m &^= uint16((1<<n - 1) << first)
		start := int64(first) * vma.BlockSize
		end := min(int64(first+n)*vma.BlockSize, valid)
		runPos := pos
		pos += n * vma.BlockSize
		if end <= start {
			continue // past the device's end
		}
		off, size := base+start, int(end-start)
		if w.n > 0 && w.dst == dst && w.off+int64(w.n) == off && w.pos+w.n == runPos {
			w.n += size
			continue
		}
		if err := w.flush(); err != nil {
			return err
		}
		w.dst, w.dev, w.off, w.pos, w.n = dst, c.Device.Name, off, runPos, size
	}
	return nil
}

func (w *runWriter) flush() error {
	if w.n == 0 {
		return nil
	}
	_, err := w.dst.WriteAt(w.buf[w.pos:w.pos+w.n], w.off)
	if err != nil {
		err = fmt.Errorf("writing %s at byte %d: %w", w.dev, w.off, err)
	}
	w.n = 0
	return err
}

package vma

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/vmaconv/vmaconv/format"
)

// MaxInFlight bounds the bytes of extent data that Unpack's writers and
// Repack's readers hold at once, whatever the number of workers (the bound
// pipeline.MaxInFlight sets for its readers).
const MaxInFlight = 48 << 20

// DeviceStats is what Unpack saw of one device.
type DeviceStats struct {
	Device   Device
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
	// Streams gets, per device id, the device's whole content in order
	// (for a pipe: stdout). Like Digest it reorders clusters within
	// MaxReorder.
	Streams map[int]io.Writer
	// MaxReorder bounds the memory used to reorder clusters for Digest,
	// Streams and order-dependent targets (default 64 MiB). For Digest and
	// Streams, an archive whose clusters are further out of order fails
	// with format.ErrReorder.
	MaxReorder int64
	// Progress, if set, is called after each extent with the archive bytes
	// read so far.
	Progress func(archiveBytes int64)
	// Workers is the number of parallel writers (default: the number of
	// CPUs). With 1, the reading goroutine writes itself and no extent is
	// copied; with more, each extent's data is copied into one of
	// Workers+1 reused buffers (at most MaxInFlight of them in all: there
	// are no more writers than that allows) and written by a worker. The
	// result is the same either way.
	Workers int
}

// Unpack reads every extent of r and writes each device that has a target
// (keyed by device id) with WriteAt, at the device's offsets. Only stored
// data is written, coalesced into runs of adjacent blocks. Zero blocks are
// not written to a plain io.WriterAt, which should start out zero (a new
// sparse file); a target that is a format.DiskWriter is told of them with
// ZeroAt, so that it gets every byte of a complete archive exactly once.
// Data past a device's end is dropped. Devices without a target are read
// and checked all the same.
//
// With o.Workers > 1, writes run in parallel. A target that is a
// format.DiskWriter whose layout follows the order of writes (not
// format.OrderIndependent: an archive, a qcow2 image) gets whole clusters
// from one goroutine, put back in ascending order within MaxReorder (past
// it, held clusters are written early rather than failing), so that the
// same content gives the same output whatever order the archive stored it
// in.
//
// Unpack returns the reader's error, if any: a damaged or incomplete archive
// fails after everything before the damage has been written.
func Unpack(ctx context.Context, r *Reader, targets map[int]io.WriterAt, o UnpackOptions) (*Result, error) {
	if o.MaxReorder <= 0 {
		o.MaxReorder = 64 << 20
	}
	devs := r.Header().Devices
	res := &Result{Devices: make([]DeviceStats, len(devs))}
	byID := map[int]*unpackDev{}
	var held int64
	for i, d := range devs {
		res.Devices[i].Device = d
		st := &unpackDev{stats: &res.Devices[i], dst: targets[d.ID]}
		st.zdst, _ = st.dst.(format.DiskWriter)
		if _, free := st.dst.(format.OrderIndependent); st.zdst != nil && !free {
			st.lseq = &sequencer{dw: st.zdst, dev: d, size: d.Size, held: &held, max: o.MaxReorder}
			st.dst, st.zdst = nil, nil
		}
		var ws []io.Writer
		if o.Digest {
			st.hash = sha256.New()
			ws = append(ws, st.hash)
		}
		if w := o.Streams[d.ID]; w != nil {
			ws = append(ws, w)
		}
		if len(ws) > 0 {
			st.seq = &sequencer{w: io.MultiWriter(ws...), dev: d, size: d.Size, held: &held, max: o.MaxReorder}
		}
		byID[d.ID] = st
	}
	if o.Workers == 0 {
		o.Workers = runtime.NumCPU()
	}
	wr := newWriters(ctx, min(o.Workers, MaxInFlight/MaxExtentSize-1))
	ctx = wr.ctx
	var runs runList
	for {
		if err := ctx.Err(); err != nil {
			return res, wr.stop(err)
		}
		e, err := r.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			res.Extents, res.Bytes = r.Extents(), r.Offset()
			if ctx.Err() != nil { // the read failed because we were stopped
				return res, wr.stop(ctx.Err())
			}
			return res, wr.stop(err)
		}
		runs.reset()
		pos := 0
		for i := range e.Clusters {
			c := &e.Clusters[i]
			st := byID[c.Device.ID]
			st.account(c)
			if c.Data == nil && c.Mask != 0 && (st.dst != nil || st.seq != nil || st.lseq != nil) {
				return res, wr.stop(fmt.Errorf("the data of %s was skipped (Reader.Want) but is needed", c.Device.Name))
			}
			if st.dst != nil {
				runs.add(st.dst, st.zdst, c, pos)
			}
			pos += len(c.Data)
			if st.seq != nil {
				if err := st.seq.put(c); err != nil {
					return res, wr.stop(fmt.Errorf("%s in order: %w", c.Device.Name, err))
				}
			}
			if st.lseq != nil {
				if err := st.lseq.put(c); err != nil {
					return res, wr.stop(fmt.Errorf("writing %s: %w", c.Device.Name, err))
				}
			}
		}
		if err := wr.write(e.Data[:pos], runs.runs); err != nil {
			return res, wr.stop(err)
		}
		if o.Progress != nil {
			o.Progress(r.Offset())
		}
	}
	if err := wr.stop(nil); err != nil {
		return res, err
	}
	res.Extents, res.Bytes = r.Extents(), r.Offset()
	for _, d := range devs {
		if st := byID[d.ID]; st.lseq != nil {
			if err := st.lseq.finish(); err != nil {
				return res, fmt.Errorf("writing %s: %w", d.Name, err)
			}
		}
		if st := byID[d.ID]; st.seq != nil {
			if err := st.seq.finish(); err != nil {
				return res, fmt.Errorf("%s in order: %w", d.Name, err)
			}
			if st.hash != nil {
				st.stats.SHA256 = st.hash.Sum(nil)
			}
		}
	}
	return res, nil
}

type unpackDev struct {
	stats *DeviceStats
	dst   io.WriterAt
	zdst  format.DiskWriter // dst, if it takes zero ranges
	seq   *sequencer        // Digest and Streams, in device order
	lseq  *sequencer        // an order-dependent DiskWriter, in device order where it can
	hash  hash.Hash
}

// validBytes returns how many bytes of cluster c lie inside the device.
func validBytes(c *Cluster) int64 {
	return min(max(c.Device.Size-c.Index*ClusterSize, 0), ClusterSize)
}

func (st *unpackDev) account(c *Cluster) {
	valid := validBytes(c)
	st.stats.Clusters++
	stored := int64(0)
	for m := c.Mask; m != 0; m &= m - 1 {
		b := int64(bits.TrailingZeros16(m)) * BlockSize
		stored += min(max(valid-b, 0), BlockSize)
	}
	st.stats.Stored += stored
	st.stats.Zero += valid - stored
}

// writeRun is one WriteAt: n bytes from position pos of an extent's data
// to offset off of dst; or, with zero set, one ZeroAt of n bytes.
type writeRun struct {
	dst  io.WriterAt
	zdst format.DiskWriter
	dev  string
	off  int64
	pos  int
	n    int
	zero bool
}

// runList collects an extent's runs, coalescing stored blocks that are
// adjacent both on the device and in the extent's data, and zero blocks
// that are adjacent on the device.
type runList struct{ runs []writeRun }

func (l *runList) reset() { l.runs = l.runs[:0] }

// add queues the blocks of c, whose data starts at pos: stored runs, and
// zero runs if zdst takes them.
func (l *runList) add(dst io.WriterAt, zdst format.DiskWriter, c *Cluster, pos int) {
	valid := validBytes(c)
	base := c.Index * ClusterSize
	for b := 0; b < BlocksPerCluster; {
		start := int64(b) * BlockSize
		if start >= valid {
			break // past the device's end
		}
		stored := c.Mask&(1<<b) != 0
		n := 1
		for b+n < BlocksPerCluster && (c.Mask&(1<<(b+n)) != 0) == stored {
			n++
		}
		end := min(int64(b+n)*BlockSize, valid)
		runPos := pos
		if stored {
			pos += n * BlockSize
		}
		b += n
		if !stored && zdst == nil {
			continue
		}
		off, size := base+start, int(end-start)
		if k := len(l.runs) - 1; k >= 0 {
			last := &l.runs[k]
			if last.dst == dst && last.zero == !stored && last.off+int64(last.n) == off && (!stored || last.pos+last.n == runPos) {
				last.n += size
				continue
			}
		}
		l.runs = append(l.runs, writeRun{dst, zdst, c.Device.Name, off, runPos, size, !stored})
	}
}

func writeRuns(data []byte, runs []writeRun) error {
	for _, r := range runs {
		var err error
		if r.zero {
			err = r.zdst.ZeroAt(r.off, int64(r.n))
		} else {
			_, err = r.dst.WriteAt(data[r.pos:r.pos+r.n], r.off)
		}
		if err != nil {
			return fmt.Errorf("writing %s at byte %d: %w", r.dev, r.off, err)
		}
	}
	return nil
}

// writers runs an extent's writes inline (one worker) or hands them, with a
// copy of the data in a pooled buffer, to parallel workers.
type writers struct {
	ctx     context.Context
	g       *errgroup.Group
	batches chan writeBatch
	free    chan []byte
	nbuf    int // buffers allocated so far, at most cap(free)
}

type writeBatch struct {
	data []byte
	runs []writeRun
}

func newWriters(ctx context.Context, n int) *writers {
	if n <= 1 {
		return &writers{ctx: ctx}
	}
	g, gctx := errgroup.WithContext(ctx)
	w := &writers{ctx: gctx, g: g, batches: make(chan writeBatch), free: make(chan []byte, n+1)}
	for range n {
		g.Go(func() error {
			for b := range w.batches {
				err := writeRuns(b.data, b.runs)
				w.free <- b.data[:cap(b.data)]
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	return w
}

func (w *writers) write(data []byte, runs []writeRun) error {
	if len(runs) == 0 {
		return nil
	}
	if w.g == nil {
		return writeRuns(data, runs)
	}
	var buf []byte
	select {
	case buf = <-w.free:
	default:
		if w.nbuf < cap(w.free) {
			w.nbuf++
			buf = make([]byte, MaxExtentSize)
		} else {
			select {
			case buf = <-w.free:
			case <-w.ctx.Done():
				return w.ctx.Err()
			}
		}
	}
	b := writeBatch{data: buf[:copy(buf, data)], runs: append([]writeRun(nil), runs...)}
	select {
	case w.batches <- b:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

// stop waits for the workers and returns err, or the first write error.
func (w *writers) stop(err error) error {
	if w.g == nil {
		return err
	}
	close(w.batches)
	werr := w.g.Wait()
	if werr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return werr
	}
	return err
}

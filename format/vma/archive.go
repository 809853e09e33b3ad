package vma

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sync"

	"github.com/vmaconv/vmaconv/format"
)

// DefaultIndexLimit is the memory an Archive's index may take unless
// WithIndexLimit says otherwise.
const DefaultIndexLimit = 64 << 20

// ErrIndexLimit is returned by Open when the index would exceed its memory
// limit: the archive is too far out of order (runs of one or two clusters)
// to index compactly. It wraps format.ErrStreamOnly: read the archive with
// NewReader instead, which needs no index.
var ErrIndexLimit = fmt.Errorf("vma: index exceeds its memory limit: %w", format.ErrStreamOnly)

// Archive is an archive opened for random access, the counterpart of
// Reader as zip.NewReader is of a stream: Open reads every extent header
// once, seeking past the data, checks the archive as Reader does, and
// keeps an index from which every device can be read at any offset (see
// DeviceReader).
//
// The index holds one run per sequence of consecutive clusters of a
// device stored in one extent (24 bytes; one run per extent in archives
// written in Proxmox's order), plus 2 bytes per cluster of runs that are
// not entirely made of full clusters. Runs of zero clusters are not kept.
// A 1 TiB disk thus needs at most about 40 MiB, and 7 MiB if its clusters
// are full. The total is bounded by WithIndexLimit (DefaultIndexLimit).
//
// An Archive is safe for concurrent use. It does not close the
// io.ReaderAt it was given.
type Archive struct {
	r       io.ReaderAt
	size    int64
	hdr     *Header
	devs    []*DeviceReader // header order
	extents int64
	index   int64 // bytes of index
}

// OpenOption configures Open.
type OpenOption func(*openConfig)

type openConfig struct {
	limit int64
}

// WithIndexLimit sets the most memory, in bytes, the index may take.
func WithIndexLimit(n int64) OpenOption { return func(c *openConfig) { c.limit = n } }

// Open reads the header and every extent header of the archive of size
// bytes in r and returns it for random access. A damaged or incomplete
// archive fails with the same *FormatError the stream reader gives.
func Open(r io.ReaderAt, size int64, opts ...OpenOption) (*Archive, error) {
	cfg := openConfig{limit: DefaultIndexLimit}
	for _, o := range opts {
		o(&cfg)
	}
	rd, err := NewReader(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, err
	}
	if !rd.Want() { // want no data: every extent's data is seeked over
		return nil, errors.New("vma: Open: the input cannot seek")
	}
	a := &Archive{r: r, size: size, hdr: rd.Header()}
	ix := make(map[int]*devIndex)
	for _, d := range a.hdr.Devices {
		dr := &DeviceReader{a: a, dev: d, tail: -1}
		a.devs = append(a.devs, dr)
		ix[d.ID] = &dr.ix
	}
	var extent int64 = -1
	for {
		e, err := rd.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		extent++
		data := e.Offset + ExtentHeaderSize // where the next slot's data starts
		for i := range e.Clusters {
			c := &e.Clusters[i]
			x := ix[c.Device.ID]
			// A run goes on only from the slot just before, so that its
			// data is contiguous.
			x.add(c, data, extent, i > 0 && e.Clusters[i-1].Device.ID == c.Device.ID)
			x.stored += storedBytes(c)
			data += int64(bits.OnesCount16(c.Mask)) * BlockSize
		}
		if extent%64 != 0 {
			continue
		}
		if a.index = a.indexBytes(); a.index > cfg.limit {
			return nil, fmt.Errorf("%w (%d MiB at extent %d, byte offset %d)", ErrIndexLimit, cfg.limit>>20, rd.Extents()-1, e.Offset)
		}
	}
	a.extents = rd.Extents()
	if a.index = a.indexBytes(); a.index > cfg.limit {
		return nil, fmt.Errorf("%w (%d MiB)", ErrIndexLimit, cfg.limit>>20)
	}
	for _, d := range a.devs {
		d.ix.close()
		if !slices.IsSortedFunc(d.ix.runs, cmpRun) {
			slices.SortFunc(d.ix.runs, cmpRun)
		}
		// Give back what appends reserved.
		d.ix.runs = slices.Clip(slices.Clone(d.ix.runs))
		d.ix.masks = slices.Clip(slices.Clone(d.ix.masks))
		if err := CheckVMStateTail(d.dev, d.ix.end*ClusterSize); err != nil {
			d.tail, d.tailErr = d.ix.end*ClusterSize, err
		}
	}
	a.index = a.indexBytes()
	return a, nil
}

func (a *Archive) indexBytes() int64 {
	n := int64(0)
	for _, d := range a.devs {
		n += int64(cap(d.ix.runs))*runSize + int64(cap(d.ix.masks))*2
	}
	return n
}

// Header returns the archive header.
func (a *Archive) Header() *Header { return a.hdr }

// Extents returns the number of extents in the archive.
func (a *Archive) Extents() int64 { return a.extents }

// IndexBytes returns the memory the index takes.
func (a *Archive) IndexBytes() int64 { return a.index }

// Devices returns a reader for every device, in header order.
func (a *Archive) Devices() []*DeviceReader { return a.devs }

// Device returns the reader of the device with the given name.
func (a *Archive) Device(name string) (*DeviceReader, bool) {
	for _, d := range a.devs {
		if d.dev.Name == name {
			return d, true
		}
	}
	return nil, false
}

// storedBytes returns the bytes of c's stored blocks that lie inside its
// device.
func storedBytes(c *Cluster) int64 {
	valid := min(max(c.Device.Size-c.Index*ClusterSize, 0), ClusterSize)
	n := int64(0)
	for m := c.Mask; m != 0; m &= m - 1 {
		b := int64(bits.TrailingZeros16(m)) * BlockSize
		n += min(max(valid-b, 0), BlockSize)
	}
	return n
}

// run is a sequence of consecutive clusters of one device stored in
// consecutive slots of one extent: their data is contiguous in the
// archive.
type run struct {
	data  int64  // archive offset of the first cluster's data
	first uint32 // first cluster number
	masks uint32 // index of the first cluster's mask in devIndex.masks, unless full
	n     uint16 // clusters
	full  bool   // every cluster is stored whole: no masks kept
}

const runSize = 24 // bytes a run takes in memory

func cmpRun(a, b run) int {
	switch {
	case a.first < b.first:
		return -1
	case a.first > b.first:
		return 1
	}
	return 0
}

// devIndex is one device's index.
type devIndex struct {
	runs   []run
	masks  []uint16
	stored int64 // bytes stored, within the device
	end    int64 // one past the highest cluster stored (mask 0 included)

	// The run being built, until a cluster does not continue it.
	open    bool
	cur     run
	curExt  int64
	curData bool // cur has a stored block
}

// add records cluster c, whose data (if any) is at archive offset data in
// the given extent; adjacent says the slot before it in the extent holds a
// cluster of the same device.
func (x *devIndex) add(c *Cluster, data, extent int64, adjacent bool) {
	idx := uint32(c.Index)
	x.end = max(x.end, c.Index+1)
	if x.open && adjacent && x.curExt == extent && int64(idx) == int64(x.cur.first)+int64(x.cur.n) {
		switch {
		case x.cur.full && c.Mask == 0xffff:
		case x.cur.full: // no longer full: keep masks from here
			x.cur.full = false
			x.cur.masks = uint32(len(x.masks))
			for range x.cur.n {
				x.masks = append(x.masks, 0xffff)
			}
			x.masks = append(x.masks, c.Mask)
		default:
			x.masks = append(x.masks, c.Mask)
		}
		x.cur.n++
		x.curData = x.curData || c.Mask != 0
		return
	}
	x.close()
	x.open, x.curExt, x.curData = true, extent, c.Mask != 0
	x.cur = run{data: data, first: idx, n: 1, full: c.Mask == 0xffff}
	if !x.cur.full {
		x.cur.masks = uint32(len(x.masks))
		x.masks = append(x.masks, c.Mask)
	}
}

// close ends the run being built: kept if it stores anything.
func (x *devIndex) close() {
	if !x.open {
		return
	}
	x.open = false
	if !x.curData {
		if !x.cur.full {
			x.masks = x.masks[:x.cur.masks]
		}
		return
	}
	x.runs = append(x.runs, x.cur)
}

// find returns the index of the first run that ends after cluster c, and
// whether it contains c.
func (x *devIndex) find(c int64) (int, bool) {
	i, _ := slices.BinarySearchFunc(x.runs, c, func(r run, c int64) int {
		if int64(r.first)+int64(r.n) <= c {
			return -1
		}
		if int64(r.first) > c {
			return 1
		}
		return 0
	})
	return i, i < len(x.runs) && int64(x.runs[i].first) <= c
}

// mask returns the mask of the k-th cluster of r.
func (x *devIndex) mask(r *run, k int64) uint16 {
	if r.full {
		return 0xffff
	}
	return x.masks[int64(r.masks)+k]
}

// dataOffset returns the archive offset of the data of the k-th cluster
// of r.
func (x *devIndex) dataOffset(r *run, k int64) int64 {
	if r.full {
		return r.data + k*ClusterSize
	}
	blocks := 0
	for _, m := range x.masks[r.masks : int64(r.masks)+k] {
		blocks += bits.OnesCount16(m)
	}
	return r.data + int64(blocks)*BlockSize
}

// DeviceReader reads one device of an Archive at any offset: a
// format.Source (and format.Extenter) whose unstored blocks read as
// zeros. ReadAt may be called in parallel; each call reads the stored
// data of a run of clusters with one ReadAt of the archive.
type DeviceReader struct {
	a   *Archive
	dev Device
	ix  devIndex
	// tail, for a vmstate stream that stores much less than it declares,
	// is where the refused tail starts (CheckVMStateTail); -1 otherwise.
	tail    int64
	tailErr error
}

// Device returns the device.
func (d *DeviceReader) Device() Device { return d.dev }

// Size returns the device's size in bytes.
func (d *DeviceReader) Size() int64 { return d.dev.Size }

// Stored returns the bytes of the device stored in the archive; the rest
// are zero.
func (d *DeviceReader) Stored() int64 { return d.ix.stored }

// Check implements format.Checker: it returns the error reading would
// meet in a vmstate stream that declares much more than it stores (see
// CheckVMStateTail).
func (d *DeviceReader) Check() error { return d.tailErr }

// Close does nothing: the Archive's reader is closed by its owner.
func (d *DeviceReader) Close() error { return nil }

var scratchPool = sync.Pool{New: func() any { b := make([]byte, ClusterSize); return &b }}

// ReadAt implements io.ReaderAt.
func (d *DeviceReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vma: %s: negative offset %d", d.dev.Name, off)
	}
	if off >= d.dev.Size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), d.dev.Size)
	if d.tail >= 0 && end > d.tail {
		return 0, d.tailErr
	}
	pos := off
	for pos < end {
		c := pos / ClusterSize
		i, in := d.ix.find(c)
		if !in { // zeros up to the next run
			zend := end
			if i < len(d.ix.runs) {
				zend = min(zend, int64(d.ix.runs[i].first)*ClusterSize)
			}
			clear(p[pos-off : zend-off])
			pos = zend
			continue
		}
		r := &d.ix.runs[i]
		k := c - int64(r.first)
		runEnd := min(end, (int64(r.first)+int64(r.n))*ClusterSize)
		inner := pos - c*ClusterSize
		switch {
		case r.full:
			if err := d.read(p[pos-off:runEnd-off], r.data+k*ClusterSize+inner); err != nil {
				return int(pos - off), err
			}
			pos = runEnd
		case inner == 0 && runEnd-pos >= ClusterSize:
			// Whole clusters: read their stored blocks into place, then
			// spread them out.
			n := (runEnd - pos) / ClusterSize
			dst := p[pos-off : pos-off+n*ClusterSize]
			masks := d.ix.masks[int64(r.masks)+k : int64(r.masks)+k+n]
			stored := 0
			for _, m := range masks {
				stored += bits.OnesCount16(m) * BlockSize
			}
			if err := d.read(dst[:stored], d.ix.dataOffset(r, k)); err != nil {
				return int(pos - off), err
			}
			expand(dst, masks, stored)
			pos += n * ClusterSize
		default: // part of one cluster
			bp := scratchPool.Get().(*[]byte)
			buf := *bp
			m := d.ix.mask(r, k)
			stored := bits.OnesCount16(m) * BlockSize
			err := d.read(buf[:stored], d.ix.dataOffset(r, k))
			if err == nil {
				expand(buf, []uint16{m}, stored)
				pos += int64(copy(p[pos-off:end-off], buf[inner:]))
			}
			scratchPool.Put(bp)
			if err != nil {
				return int(pos - off), err
			}
		}
	}
	n := int(end - off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// expand spreads the stored blocks at the start of dst over the clusters
// whose masks are given, zeroing the blocks that are not stored. It works
// backwards, so that no block is overwritten before it has moved.
func expand(dst []byte, masks []uint16, stored int) {
	src := stored
	for ci := len(masks) - 1; ci >= 0; ci-- {
		m := masks[ci]
		for b := BlocksPerCluster - 1; b >= 0; b-- {
			at := ci*ClusterSize + b*BlockSize
			if m&(1<<b) != 0 {
				src -= BlockSize
				if src != at {
					copy(dst[at:at+BlockSize], dst[src:src+BlockSize])
				}
			} else {
				clear(dst[at : at+BlockSize])
			}
		}
	}
}

// read fills p from the archive at off.
func (d *DeviceReader) read(p []byte, off int64) error {
	n, err := d.a.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("vma: reading %s at archive byte offset %d: %w", d.dev.Name, off+int64(n), err)
}

// Extent implements format.Extenter at cluster granularity: clusters
// the archive stores no block of are zero and never read.
func (d *DeviceReader) Extent(start, length int64) (format.Extent, error) {
	end := min(start+length, d.dev.Size)
	if start < 0 || start >= end {
		return format.Extent{}, fmt.Errorf("vma: %s: extent at %d beyond the end (%d)", d.dev.Name, start, d.dev.Size)
	}
	if d.tail >= 0 && end > d.tail {
		if start >= d.tail {
			return format.Extent{}, d.tailErr
		}
		end = d.tail
	}
	zero := d.clusterZero(start / ClusterSize)
	pos := (start/ClusterSize + 1) * ClusterSize
	for pos < end {
		c := pos / ClusterSize
		i, in := d.ix.find(c)
		switch {
		case !in && zero: // a gap: up to the next run
			if i == len(d.ix.runs) {
				pos = end
			} else {
				pos = int64(d.ix.runs[i].first) * ClusterSize
			}
			continue
		case !in:
		default:
			r := &d.ix.runs[i]
			k := c - int64(r.first)
			if z := d.ix.mask(r, k) == 0; z == zero {
				if r.full {
					pos = (int64(r.first) + int64(r.n)) * ClusterSize
				} else {
					pos += ClusterSize
				}
				continue
			}
		}
		break
	}
	return format.Extent{Start: start, Length: min(pos, end) - start, Zero: zero}, nil
}

// clusterZero reports whether cluster c stores nothing.
func (d *DeviceReader) clusterZero(c int64) bool {
	i, in := d.ix.find(c)
	if !in {
		return true
	}
	r := &d.ix.runs[i]
	return d.ix.mask(r, c-int64(r.first)) == 0
}

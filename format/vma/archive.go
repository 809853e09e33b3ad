package vma

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sort"
	"sync"

	"github.com/vmaconv/vmaconv/format"
)

// DefaultIndexLimit is the memory an Archive's index may take unless
// WithIndexLimit says otherwise: what Open allocates for it while it
// reads the archive, not only what it keeps.
const DefaultIndexLimit = 64 << 20

// ErrIndexLimit is returned by Open when the index would exceed its memory
// limit: the archive is too far out of order (runs of one or two clusters)
// to index compactly. Open stops as soon as the limit is reached. It wraps format.ErrStreamOnly: read the archive with
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
// are full. The total is bounded by WithIndexLimit (DefaultIndexLimit),
// which covers all Open allocates for the index as it builds it (chunks of
// 96 and 64 KiB, never copied whole) and the stream reader's tracking of
// clusters seen out of order: Open's memory is the limit and the reader's
// buffer (4 MiB), not a multiple of the limit.
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

// WithIndexLimit sets the most memory, in bytes, the index may take
// (DefaultIndexLimit).
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
		dr.ix.used = &a.index
		a.devs = append(a.devs, dr)
		ix[d.ID] = &dr.ix
	}
	last := int64(-1)
	for extent := int64(0); ; extent++ {
		e, err := rd.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if e.Offset <= last {
			return nil, fmt.Errorf("vma: Open: no progress: extent %d at byte offset %d, after one at %d", extent, e.Offset, last)
		}
		last = e.Offset
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
		// The index and the reader's tracking of clusters out of order
		// are checked after every extent: an extent adds at most a chunk
		// of runs and one of masks.
		if used := a.index + int64(rd.pages)*trackPageBytes; used > cfg.limit {
			return nil, fmt.Errorf("%w (%d MiB at extent %d, byte offset %d)", ErrIndexLimit, cfg.limit>>20, rd.Extents()-1, e.Offset)
		}
	}
	a.extents = rd.Extents()
	for _, d := range a.devs {
		d.ix.close()
		if !d.ix.sorted() {
			sort.Sort(&d.ix) // in place: no second copy of the index
		}
		d.ix.clip()
		if err := CheckVMStateTail(d.dev, d.ix.end*ClusterSize); err != nil {
			d.tail, d.tailErr = d.ix.end*ClusterSize, err
		}
	}
	a.index = a.indexBytes()
	if a.index > cfg.limit {
		return nil, fmt.Errorf("%w (%d MiB)", ErrIndexLimit, cfg.limit>>20)
	}
	return a, nil
}

// trackPageBytes is what a page of the reader's tracking of clusters
// seen takes (a 520-byte clusterPage and its map entry).
const trackPageBytes = 600

func (a *Archive) indexBytes() int64 {
	n := int64(0)
	for _, d := range a.devs {
		n += d.ix.bytes()
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

// The index is kept in chunks of fixed size rather than in slices that
// double: the memory it takes is then the memory it uses, growing by a
// chunk at a time, with no copy of it while it grows, sorts or shrinks.
// A device's first chunk grows from a few entries up to a chunk.
const (
	runChunk  = 4096  // runs a chunk holds (96 KiB)
	maskChunk = 32768 // masks a chunk holds (64 KiB)
	firstCap  = 8     // entries the first chunk starts with
)

// devIndex is one device's index.
type devIndex struct {
	runs  [][]run    // chunks of runChunk runs, sorted once Open returns
	masks [][]uint16 // chunks of maskChunk masks; a run's masks lie in one
	nruns int
	used  *int64 // bytes the index takes, every device's (during Open)

	stored int64 // bytes stored, within the device
	end    int64 // one past the highest cluster stored (mask 0 included)

	// The run being built, until a cluster does not continue it.
	open    bool
	cur     run
	curExt  int64
	curData bool // cur has a stored block
}

// grow returns chunk with room for one more entry (of size bytes) in
// place, doubling a device's first chunk up to full entries; ok is false
// when the chunk is full.
func grow[T any](chunk []T, full, size int, used *int64) (_ []T, ok bool) {
	if len(chunk) < cap(chunk) {
		return chunk, true
	}
	if cap(chunk) >= full {
		return chunk, false
	}
	n := min(max(2*cap(chunk), firstCap), full)
	*used += int64(n-cap(chunk)) * int64(size)
	return append(make([]T, 0, n), chunk...), true
}

// appendRun adds r after the last run.
func (x *devIndex) appendRun(r run) {
	k := len(x.runs) - 1
	if k < 0 {
		x.runs = append(x.runs, nil)
		k = 0
	}
	var ok bool
	if x.runs[k], ok = grow(x.runs[k], runChunk, runSize, x.used); !ok {
		*x.used += runChunk * runSize
		x.runs = append(x.runs, make([]run, 0, runChunk))
		k++
	}
	x.runs[k] = append(x.runs[k], r)
	x.nruns++
}

// maskEnd returns the position the next mask goes to (chunk*maskChunk +
// offset).
func (x *devIndex) maskEnd() uint32 {
	k := len(x.masks) - 1
	if k < 0 {
		return 0
	}
	return uint32(k*maskChunk + len(x.masks[k]))
}

// appendMask adds m after the last mask, for the run whose masks start at
// position start; it returns where they start now: a run whose masks
// would straddle two chunks is moved into the new one.
func (x *devIndex) appendMask(start uint32, m uint16) uint32 {
	k := len(x.masks) - 1
	if k < 0 {
		x.masks = append(x.masks, nil)
		k = 0
	}
	var ok bool
	if x.masks[k], ok = grow(x.masks[k], maskChunk, 2, x.used); !ok {
		*x.used += maskChunk * 2
		c := make([]uint16, 0, maskChunk)
		if from := int(start) - k*maskChunk; from < len(x.masks[k]) { // at most a run: 59 masks
			c = append(c, x.masks[k][from:]...)
			x.masks[k] = x.masks[k][:from]
		}
		x.masks = append(x.masks, c)
		k++
		start = uint32(k * maskChunk)
	}
	x.masks[k] = append(x.masks[k], m)
	return start
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
			x.cur.masks = x.maskEnd()
			for range x.cur.n {
				x.cur.masks = x.appendMask(x.cur.masks, 0xffff)
			}
			x.cur.masks = x.appendMask(x.cur.masks, c.Mask)
		default:
			x.cur.masks = x.appendMask(x.cur.masks, c.Mask)
		}
		x.cur.n++
		x.curData = x.curData || c.Mask != 0
		return
	}
	x.close()
	x.open, x.curExt, x.curData = true, extent, c.Mask != 0
	x.cur = run{data: data, first: idx, n: 1, full: c.Mask == 0xffff}
	if !x.cur.full {
		x.cur.masks = x.appendMask(x.maskEnd(), c.Mask)
	}
}

// close ends the run being built: kept if it stores anything.
func (x *devIndex) close() {
	if !x.open {
		return
	}
	x.open = false
	if !x.curData {
		if !x.cur.full { // its masks are the last ones, in the last chunk
			k := len(x.masks) - 1
			x.masks[k] = x.masks[k][:int(x.cur.masks)-k*maskChunk]
		}
		return
	}
	x.appendRun(x.cur)
}

// run returns the i-th run.
func (x *devIndex) run(i int) *run { return &x.runs[i/runChunk][i%runChunk] }

// Len, Less and Swap sort the runs in place (sort.Interface).
func (x *devIndex) Len() int           { return x.nruns }
func (x *devIndex) Less(i, j int) bool { return x.run(i).first < x.run(j).first }
func (x *devIndex) Swap(i, j int) {
	a, b := x.run(i), x.run(j)
	*a, *b = *b, *a
}

// sorted reports whether the runs are in cluster order.
func (x *devIndex) sorted() bool {
	for i := 1; i < x.nruns; i++ {
		if x.Less(i, i-1) {
			return false
		}
	}
	return true
}

// clip gives back what the last chunks do not use.
func (x *devIndex) clip() {
	if k := len(x.runs) - 1; k >= 0 && len(x.runs[k]) < cap(x.runs[k]) {
		x.runs[k] = exact(x.runs[k])
	}
	if k := len(x.masks) - 1; k >= 0 && len(x.masks[k]) < cap(x.masks[k]) {
		x.masks[k] = exact(x.masks[k])
	}
}

// exact returns a copy of s with no room to spare.
func exact[T any](s []T) []T {
	c := make([]T, len(s))
	copy(c, s)
	return c
}

// bytes returns the memory the index takes.
func (x *devIndex) bytes() int64 {
	n := int64(0)
	for _, c := range x.runs {
		n += int64(cap(c)) * runSize
	}
	for _, c := range x.masks {
		n += int64(cap(c)) * 2
	}
	return n
}

// find returns the index of the first run that ends after cluster c, and
// whether it contains c.
func (x *devIndex) find(c int64) (int, bool) {
	// The chunk, then the run in it.
	k, _ := slices.BinarySearchFunc(x.runs, c, func(chunk []run, c int64) int {
		if r := chunk[len(chunk)-1]; int64(r.first)+int64(r.n) <= c {
			return -1
		}
		return 1
	})
	if k == len(x.runs) {
		return x.nruns, false
	}
	i, _ := slices.BinarySearchFunc(x.runs[k], c, func(r run, c int64) int {
		if int64(r.first)+int64(r.n) <= c {
			return -1
		}
		if int64(r.first) > c {
			return 1
		}
		return 0
	})
	r := &x.runs[k][i]
	return k*runChunk + i, int64(r.first) <= c
}

// masksOf returns the masks of n clusters of r from its k-th.
func (x *devIndex) masksOf(r *run, k, n int64) []uint16 {
	at := int64(r.masks%maskChunk) + k
	return x.masks[r.masks/maskChunk][at : at+n]
}

// mask returns the mask of the k-th cluster of r.
func (x *devIndex) mask(r *run, k int64) uint16 {
	if r.full {
		return 0xffff
	}
	return x.masks[r.masks/maskChunk][int64(r.masks%maskChunk)+k]
}

// dataOffset returns the archive offset of the data of the k-th cluster
// of r.
func (x *devIndex) dataOffset(r *run, k int64) int64 {
	if r.full {
		return r.data + k*ClusterSize
	}
	blocks := 0
	for _, m := range x.masksOf(r, 0, k) {
		blocks += bits.OnesCount16(m)
	}
	return r.data + int64(blocks)*BlockSize
}

// DeviceReader reads one device of an Archive at any offset: a
// format.Source (and format.ZeroMapper) whose unstored blocks read as
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
		r, next, err := d.lookup(c, pos)
		if err != nil {
			return int(pos - off), err
		}
		if r == nil { // zeros up to the next run
			zend := end
			if next != nil {
				zend = min(zend, int64(next.first)*ClusterSize)
			}
			clear(p[pos-off : zend-off])
			pos = zend
			continue
		}
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
			masks := d.ix.masksOf(r, k, n)
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

// lookup finds the run holding cluster c, which pos (a byte offset, for
// errors) is in, or else the next run (nil if none). It checks what find
// returns, so that a broken index fails the read, never loops over it: c
// is in the run, or between the run before and the next.
func (d *DeviceReader) lookup(c, pos int64) (r, next *run, err error) {
	i, in := d.ix.find(c)
	ok := i >= 0 && i <= d.ix.nruns && (i == 0 || int64(d.ix.run(i-1).first)+int64(d.ix.run(i-1).n) <= c)
	if ok && i < d.ix.nruns {
		r = d.ix.run(i)
		ok = in == (int64(r.first) <= c) && int64(r.first)+int64(r.n) > c
	} else {
		ok = ok && !in
	}
	if !ok {
		return nil, nil, fmt.Errorf("vma: %s: index lookup of cluster %d gave run %d of %d: no progress at byte offset %d", d.dev.Name, c, i, d.ix.nruns, pos)
	}
	if !in {
		return nil, r, nil
	}
	return r, nil, nil
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

// Region implements format.ZeroMapper at cluster granularity: clusters
// the archive stores no block of are zero and never read.
func (d *DeviceReader) Region(start, length int64) (format.Region, error) {
	end := min(start+length, d.dev.Size)
	if start < 0 || start >= end {
		return format.Region{}, fmt.Errorf("vma: %s: extent at %d beyond the end (%d)", d.dev.Name, start, d.dev.Size)
	}
	if d.tail >= 0 && end > d.tail {
		if start >= d.tail {
			return format.Region{}, d.tailErr
		}
		end = d.tail
	}
	zero, err := d.clusterZero(start/ClusterSize, start)
	if err != nil {
		return format.Region{}, err
	}
	pos := (start/ClusterSize + 1) * ClusterSize
	for pos < end {
		c := pos / ClusterSize
		r, next, err := d.lookup(c, pos)
		if err != nil {
			return format.Region{}, err
		}
		switch {
		case r == nil && zero: // a gap: up to the next run
			if next == nil {
				pos = end
			} else {
				pos = int64(next.first) * ClusterSize
			}
			continue
		case r == nil:
		default:
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
	return format.Region{Start: start, Length: min(pos, end) - start, Zero: zero}, nil
}

// clusterZero reports whether cluster c, which pos is in, stores nothing.
func (d *DeviceReader) clusterZero(c, pos int64) (bool, error) {
	r, _, err := d.lookup(c, pos)
	if err != nil || r == nil {
		return true, err
	}
	return d.ix.mask(r, c-int64(r.first)) == 0, nil
}

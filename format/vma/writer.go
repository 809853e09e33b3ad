package vma

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"path"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// Writer writes an archive to an io.Writer, laid out exactly as Proxmox's
// writer does: the header when the first extent is flushed, then extents of
// at most WriterClustersPerExtent clusters, with all-zero 4 KiB blocks left
// out. Every cluster of every device must be written exactly once, in any
// order; all-zero clusters too (pass nil data).
//
// Configs and devices are added before the first WriteCluster. Close checks
// that the archive is complete and writes the last extent; it does not close
// the underlying io.Writer.
//
// A Writer is not safe for concurrent use. A failed write to the underlying
// io.Writer is sticky: every later call returns it.
type Writer struct {
	w       io.Writer
	id      uuid.UUID
	ctime   time.Time
	configs []format.Config
	devs    []*wdev // index id-1
	started bool    // clusters queued: no more configs or devices
	hdrDone bool    // header written
	buf     []byte  // current extent: header and data
	slots   [SlotsPerExtent]uint64
	n       int    // clusters queued in buf
	off     int64  // bytes written to w
	pend    []byte // small writes not yet written to w
	err     error  // sticky
	closed  bool
	cerr    error // Close's result
}

type wdev struct {
	Device
	seen    clusterSet
	vmstate bool
	nextVM  int64
}

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// WithUUID sets the archive UUID instead of a random one, for reproducible
// archives.
func WithUUID(id uuid.UUID) WriterOption { return func(w *Writer) { w.id = id } }

// WithCTime sets the header's creation time (whole seconds are stored)
// instead of the time the header is written, for reproducible archives.
func WithCTime(t time.Time) WriterOption { return func(w *Writer) { w.ctime = t } }

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer, opts ...WriterOption) *Writer {
	wr := &Writer{w: w, buf: make([]byte, ExtentHeaderSize, MaxExtentSize)}
	for _, o := range opts {
		o(wr)
	}
	if wr.id == (uuid.UUID{}) {
		wr.id = uuid.New()
	}
	return wr
}

// UUID returns the archive's UUID.
func (w *Writer) UUID() uuid.UUID { return w.id }

func (w *Writer) checkOpen() error {
	if w.closed {
		return ErrWriteAfterClose
	}
	return w.err
}

// AddConfig adds a configuration file. As Proxmox does, only the base name
// of name is stored. At most MaxConfigs configs; data at most MaxBlobSize
// bytes.
func (w *Writer) AddConfig(name string, data []byte) error {
	if err := w.checkOpen(); err != nil {
		return err
	}
	if w.started {
		return errors.New("vma: AddConfig after the first cluster")
	}
	base := path.Base(name)
	if err := checkName("config", base); err != nil {
		return err
	}
	if len(w.configs) >= MaxConfigs {
		return fmt.Errorf("vma: too many configs (at most %d)", MaxConfigs)
	}
	if len(data) > MaxBlobSize {
		return fmt.Errorf("vma: config %s: %d bytes exceed the limit of %d", base, len(data), MaxBlobSize)
	}
	w.configs = append(w.configs, format.Config{Name: base, Data: bytes.Clone(data)})
	return nil
}

// AddDevice adds a device of the given size in bytes and returns its id
// (1, 2, … in the order added). A device named VMStateName is a RAM-state
// stream whose clusters must be written in ascending order.
func (w *Writer) AddDevice(name string, size int64) (int, error) {
	if err := w.checkOpen(); err != nil {
		return 0, err
	}
	if w.started {
		return 0, errors.New("vma: AddDevice after the first cluster")
	}
	if err := checkName("device", name); err != nil {
		return 0, err
	}
	if size <= 0 || size > MaxClusters*ClusterSize {
		return 0, fmt.Errorf("vma: device %s: size %d out of range (1 byte to 256 TiB)", name, size)
	}
	if len(w.devs) >= MaxDevices {
		return 0, fmt.Errorf("vma: too many devices (at most %d)", MaxDevices)
	}
	for _, d := range w.devs {
		if d.Name == name {
			return 0, fmt.Errorf("vma: duplicate device name %q", name)
		}
	}
	id := len(w.devs) + 1
	w.devs = append(w.devs, &wdev{Device: Device{ID: id, Name: name, Size: size}, vmstate: name == VMStateName})
	return id, nil
}

func checkName(what, name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("vma: invalid %s name %q", what, name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("vma: %s name %q contains '/' or NUL", what, name)
	case len(name)+1 > MaxBlobSize:
		return fmt.Errorf("vma: %s name of %d bytes is too long", what, len(name))
	}
	return nil
}

// Header returns the header as it will be written (CTime is zero until the
// header is written, unless WithCTime was given).
func (w *Writer) Header() *Header {
	h := &Header{UUID: w.id, CTime: w.ctime, Configs: w.configs}
	for _, d := range w.devs {
		h.Devices = append(h.Devices, d.Device)
	}
	return h
}

// WriteCluster stores cluster idx of device id. data holds the cluster's
// bytes: ClusterSize bytes, or fewer (the rest is taken as zero), or nil for
// an all-zero cluster. Blocks that are all zero are not stored; blocks that
// start at or past the device's end are never stored, and the bytes past the
// end in a block that straddles it are stored as zero. data is not retained.
func (w *Writer) WriteCluster(id int, idx int64, data []byte) error {
	if err := w.checkOpen(); err != nil {
		return err
	}
	d, err := w.check("WriteCluster", id, idx, 0)
	if err != nil {
		return err
	}
	if len(data) > ClusterSize {
		return fmt.Errorf("vma: WriteCluster: device %s cluster %d: %d bytes exceed the cluster size", d.Name, idx, len(data))
	}
	if w.n >= WriterClustersPerExtent {
		if err := w.flush(); err != nil {
			return err
		}
	}
	valid := w.take(d, idx)
	var mask uint16
	for i := range BlocksPerCluster {
		start := i * BlockSize
		if int64(start) >= valid || start >= len(data) {
			break
		}
		if w.store(data[start:min(start+BlockSize, len(data), int(valid))]) {
			mask |= 1 << i
		}
	}
	w.slots[w.n] = uint64(mask)<<48 | uint64(id)<<32 | uint64(uint32(idx))
	w.n++
	return nil
}

// WriteExtent writes cs as one extent of their own, in that order, after
// the extent WriteCluster is filling: an archive is repacked this way with
// its extents as they were, the same clusters in each, so that an archive
// this package or Proxmox wrote comes back byte for byte. A Cluster is as
// a Reader gives it: Mask and Data its stored blocks, Device.ID the id of
// a device of this Writer (the Device's other fields are not used). Its
// blocks are stored as WriteCluster stores them: all-zero blocks and blocks
// that start at or past the device's end are left out, and the bytes past
// the end in a block that straddles it are stored as zero. cs holds 1 to
// SlotsPerExtent clusters; if one of them is refused (as WriteCluster
// would refuse it), nothing is written. Data is not retained.
func (w *Writer) WriteExtent(cs []Cluster) error {
	if err := w.checkOpen(); err != nil {
		return err
	}
	if len(cs) == 0 || len(cs) > SlotsPerExtent {
		return fmt.Errorf("vma: WriteExtent: %d clusters (want 1 to %d)", len(cs), SlotsPerExtent)
	}
	for i, c := range cs {
		// Clusters before c in cs are taken before it: a vmstate stream's
		// next one, a duplicate.
		ahead := int64(0)
		for _, p := range cs[:i] {
			if p.Device.ID != c.Device.ID {
				continue
			}
			if p.Index == c.Index {
				return fmt.Errorf("vma: WriteExtent: device %s cluster %d given twice", w.devs[c.Device.ID-1].Name, c.Index)
			}
			ahead++
		}
		d, err := w.check("WriteExtent", c.Device.ID, c.Index, ahead)
		if err != nil {
			return err
		}
		if n := bits.OnesCount16(c.Mask) * BlockSize; len(c.Data) != n {
			return fmt.Errorf("vma: WriteExtent: device %s cluster %d: %d data bytes for %d stored blocks", d.Name, c.Index, len(c.Data), n/BlockSize)
		}
	}
	if w.n > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	for _, c := range cs {
		valid := w.take(w.devs[c.Device.ID-1], c.Index)
		var mask uint16
		data := c.Data
		for m := c.Mask; m != 0; m &= m - 1 {
			i := bits.TrailingZeros16(m)
			b := data[:BlockSize]
			data = data[BlockSize:]
			if start := int64(i) * BlockSize; start < valid && w.store(b[:min(BlockSize, valid-start)]) {
				mask |= 1 << i
			}
		}
		w.slots[w.n] = uint64(mask)<<48 | uint64(c.Device.ID)<<32 | uint64(uint32(c.Index))
		w.n++
	}
	return w.flush()
}

// check returns device id if cluster idx of it may be written after ahead
// more of its clusters (a vmstate stream's clusters come in order); what
// names the caller in errors.
func (w *Writer) check(what string, id int, idx, ahead int64) (*wdev, error) {
	if id < 1 || id > len(w.devs) {
		return nil, fmt.Errorf("vma: %s: no device with id %d", what, id)
	}
	d := w.devs[id-1]
	if n := d.Clusters(); idx < 0 || idx >= n {
		return nil, fmt.Errorf("vma: %s: device %s: cluster %d out of range (device has %d)", what, d.Name, idx, n)
	}
	if d.vmstate && idx != d.nextVM+ahead {
		return nil, fmt.Errorf("vma: %s: vmstate cluster %d out of order, expected %d", what, idx, d.nextVM+ahead)
	}
	if d.seen.has(uint32(idx)) {
		return nil, fmt.Errorf("vma: %s: device %s cluster %d written twice", what, d.Name, idx)
	}
	return d, nil
}

// take marks cluster idx of d written and returns how many of its bytes
// lie inside the device.
func (w *Writer) take(d *wdev, idx int64) (valid int64) {
	w.started = true
	d.seen.add(uint32(idx))
	if d.vmstate {
		d.nextVM++
	}
	return min(d.Size-idx*ClusterSize, ClusterSize)
}

// zeroBlock pads a short last block.
var zeroBlock [BlockSize]byte

// store appends block b (BlockSize bytes or, at a device's end, fewer: the
// rest is stored as zero) to the extent being filled, unless it is all
// zero, and reports whether it did.
func (w *Writer) store(b []byte) bool {
	if zero.IsZero(b) {
		return false
	}
	w.buf = append(w.buf, b...)
	w.buf = append(w.buf, zeroBlock[:BlockSize-len(b)]...)
	return true
}

// flush writes the header if not yet written, then the queued extent.
func (w *Writer) flush() error {
	if !w.hdrDone {
		w.hdrDone = true
		ct := w.ctime
		if ct.IsZero() {
			ct = time.Now()
			w.ctime = time.Unix(ct.Unix(), 0)
		}
		h := w.Header()
		hdr, err := marshalHeader(w.id, ct.Unix(), h.Configs, h.Devices)
		if err != nil {
			w.err = err
			return err
		}
		if err := w.write(hdr); err != nil {
			return err
		}
	}
	e := w.buf[:ExtentHeaderSize]
	clear(e)
	copy(e, ExtentMagic[:])
	binary.BigEndian.PutUint16(e[extOffBlockCount:], uint16((len(w.buf)-ExtentHeaderSize)/BlockSize))
	copy(e[extOffUUID:], w.id[:])
	for i, s := range w.slots {
		binary.BigEndian.PutUint64(e[extOffBlockInfo+8*i:], s)
	}
	sum := md5.Sum(e)
	copy(e[extOffMD5:], sum[:])
	// Header and data are written apart: a compressor that makes a frame
	// of each write (the zstd seekable format) then lets a reader get the
	// headers without the data.
	if err := w.write(w.buf[:ExtentHeaderSize]); err != nil {
		return err
	}
	if err := w.write(w.buf[ExtentHeaderSize:]); err != nil {
		return err
	}
	w.buf = w.buf[:ExtentHeaderSize]
	w.slots = [SlotsPerExtent]uint64{}
	w.n = 0
	return nil
}

// Small writes (a hole's extents are headers of 512 bytes) are gathered
// into one of up to pendSize bytes: a sparse disk would otherwise cost a
// system call per extent. Larger ones are written as they are.
const (
	pendSize  = 256 << 10
	pendSmall = 128 << 10
)

func (w *Writer) write(b []byte) error {
	if len(b) < pendSmall {
		if len(w.pend)+len(b) > pendSize {
			if err := w.drain(); err != nil {
				return err
			}
		}
		if w.pend == nil {
			w.pend = make([]byte, 0, pendSize)
		}
		w.pend = append(w.pend, b...)
		return nil
	}
	if err := w.drain(); err != nil {
		return err
	}
	return w.writeNow(b)
}

// Flush writes the extents the Writer has completed but holds back to
// gather small writes; the extent being filled is not among them (its
// layout depends on what comes next). Close flushes.
func (w *Writer) Flush() error { return w.drain() }

// drain writes the gathered small writes.
func (w *Writer) drain() error {
	if len(w.pend) == 0 {
		return w.err
	}
	err := w.writeNow(w.pend)
	w.pend = w.pend[:0]
	return err
}

func (w *Writer) writeNow(b []byte) error {
	n, err := w.w.Write(b)
	w.off += int64(n)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("vma: writing archive at byte offset %d: %w", w.off, err)
	}
	return w.err
}

// Close checks that every cluster of every device was written, then writes
// the final extent (an empty one for an archive without devices). It returns
// an error wrapping ErrIncomplete, and writes nothing more, if clusters are
// missing. Close does not close the underlying writer; calling it again
// returns the same result.
func (w *Writer) Close() error {
	if w.closed {
		return w.cerr
	}
	w.closed = true
	if w.err != nil {
		w.cerr = w.err
		return w.cerr
	}
	var parts []string
	for _, d := range w.devs {
		if ranges, total := d.seen.missing(d.Clusters(), 1); total > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d of %d clusters not written (first %d)", d.Name, total, d.Clusters(), ranges[0].First))
		}
	}
	if len(parts) > 0 {
		w.cerr = fmt.Errorf("%w: %s", ErrIncomplete, strings.Join(parts, "; "))
		w.drain() // the extents completed are written, as without gathering
		return w.cerr
	}
	// The last extent: the clusters queued, or for an archive that has
	// none (no devices), an empty one after the header. After WriteExtent
	// nothing is queued.
	if w.n > 0 || !w.hdrDone {
		w.cerr = w.flush()
	}
	if w.cerr == nil {
		w.cerr = w.drain()
	}
	return w.cerr
}

package vpc

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// WriterOptions configure a Writer. The zero value writes a dynamic disk
// whose size is rounded up to a CHS geometry, as qemu-img create -f vpc
// does, with a random UUID and the current time.
type WriterOptions struct {
	// Fixed writes a fixed disk (subformat=fixed) instead of a dynamic
	// one.
	Fixed bool
	// ForceSize keeps the size as it is (rounded up to whole sectors)
	// instead of rounding it up to a CHS geometry, and records the
	// largest geometry and the creator "qem2", as qemu-img's force_size
	// does: readers then size the disk by its current size.
	ForceSize bool
	// UUID identifies the disk (a differencing disk names its parent by
	// it); zero: a random one, as qemu-img's.
	UUID uuid.UUID
	// Time is the creation time the footer records; zero: now.
	Time time.Time
}

// Offsets of a dynamic disk's metadata, as qemu-img lays them out.
const (
	headerOffset = footerSize                // the dynamic disk header, after the footer's copy
	tableOffset  = headerOffset + headerSize // the BAT
)

// Writer writes a new VHD of one disk: a fixed disk (the disk, then the
// footer) into a file or a stream, or a dynamic disk into a file.
//
// A dynamic disk is laid out as qemu-img lays it out: the footer's copy,
// the header, the BAT (entries for the whole disk, rounded up to a
// sector), then blocks of 2 MiB, each a bitmap of 512 bytes with every bit
// set and the block's data, allocated at the end of the file in the order
// their first non-zero data arrives (the same writes give the same file),
// and the footer last. A block that only ever receives zeros is not
// allocated; zero 4 KiB pieces of an allocated block's data are not
// written, so they stay holes. The BAT, the header and both footers are
// written by Close, the copy of the footer at offset 0 last: an image
// interrupted before is no VHD.
//
// Memory: the BAT, 4 bytes per block: at most 4 MiB (2040 GiB).
//
// WriteAt and ZeroAt are safe for concurrent use (they are serialised).
// Every byte of the disk must be written once, as data or as zeros; the
// disk rounded up to its geometry reads as zeros past what was given.
// Errors are sticky.
type Writer struct {
	wa     io.WriterAt   // a file
	stream *bufio.Writer // or a stream: a fixed disk, in order
	given  int64         // bytes that will be written
	size   int64         // virtual size
	foot   *footer

	mu     sync.Mutex
	err    error
	closed bool
	pos    int64 // a stream's bytes written

	// Dynamic disks.
	bat  []uint32
	next int64 // where the next block goes
}

// NewWriter returns a Writer of a disk of size bytes into f, which must
// read as zeros where it is not written (a new, empty file). Close
// completes the image; f is not closed.
func NewWriter(f io.WriterAt, size int64, o WriterOptions) (*Writer, error) {
	w, err := newWriter(size, o)
	if err != nil {
		return nil, err
	}
	w.wa = f
	if !o.Fixed {
		n := (w.size + BlockSize - 1) / BlockSize
		w.bat = make([]uint32, n)
		for i := range w.bat {
			w.bat[i] = unallocated
		}
		w.next = tableOffset + (4*n+sector-1)&^(sector-1)
	}
	return w, nil
}

// NewStreamWriter returns a Writer of a fixed disk of size bytes to w,
// written in order (each write starting where the last one ended): the
// disk, then, at Close, the zeros that round it up and the footer.
func NewStreamWriter(w io.Writer, size int64, o WriterOptions) (*Writer, error) {
	if !o.Fixed {
		return nil, errors.New("vpc: a dynamic disk cannot be written in order: its BAT precedes its blocks")
	}
	sw, err := newWriter(size, o)
	if err != nil {
		return nil, err
	}
	sw.stream = bufio.NewWriterSize(w, 1<<20)
	return sw, nil
}

func newWriter(size int64, o WriterOptions) (*Writer, error) {
	n, cyls, heads, spt, err := roundedSize(size, o.ForceSize)
	if err != nil {
		return nil, fmt.Errorf("vpc: %w", err)
	}
	t := o.Time
	if t.IsZero() {
		t = time.Now()
	}
	ts, err := timestamp(t)
	if err != nil {
		return nil, fmt.Errorf("vpc: %w", err)
	}
	id := o.UUID
	if id == (uuid.UUID{}) {
		id = uuid.New()
	}
	f := &footer{
		features: 2, version: 0x00010000, dataOffset: headerOffset, timestamp: ts,
		creatorApp: [4]byte{'q', 'e', 'm', 'u'}, creatorVer: 0x00050003, // Virtual PC 2007's, as qemu-img writes
		creatorOS:    [4]byte{'W', 'i', '2', 'k'},
		originalSize: uint64(n), currentSize: uint64(n),
		cylinders: cyls, heads: heads, sectors: spt,
		diskType: TypeDynamic, uuid: id,
	}
	if o.ForceSize {
		f.creatorApp = [4]byte{'q', 'e', 'm', '2'}
	}
	if o.Fixed {
		f.dataOffset, f.diskType = noOffset, TypeFixed
	}
	return &Writer{given: size, size: n, foot: f}, nil
}

// timestamp is t as the footer records it: seconds since 2000.
func timestamp(t time.Time) (uint32, error) {
	s := t.Unix() - vhdEpoch
	if s < 0 || s > 0xffffffff {
		return 0, fmt.Errorf("time %s: a VHD records times from 2000-01-01 to 2136-02-07", t.UTC().Format(time.RFC3339))
	}
	return uint32(s), nil
}

// Size returns the disk's virtual size: the size given, rounded up.
func (w *Writer) Size() int64 { return w.size }

// WriteAt writes p at off. Writes to a fixed disk's file run in
// parallel.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	if err := w.check(off, int64(len(p))); err != nil {
		w.mu.Unlock()
		return 0, err
	}
	if w.stream == nil && w.bat == nil {
		w.mu.Unlock()
		if err := zero.WriteNonZero(w.wa, p, off); err != nil {
			w.mu.Lock()
			w.err = cmp.Or(w.err, err)
			w.mu.Unlock()
			return 0, err
		}
		return len(p), nil
	}
	defer w.mu.Unlock()
	if w.stream != nil {
		_, w.err = w.stream.Write(p)
		w.pos += int64(len(p))
	} else {
		w.err = w.writeBlocks(p, off)
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// ZeroAt records that the n bytes at off are zero: nothing to write, but
// to a stream.
func (w *Writer) ZeroAt(off, n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.check(off, n); err != nil {
		return err
	}
	if w.stream != nil {
		w.err = writeZeros(w.stream, n)
		w.pos += n
	}
	return w.err
}

var zeros = make([]byte, 64<<10)

func writeZeros(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// check refuses a write after an error or Close, out of the disk, or,
// to a stream, out of order.
func (w *Writer) check(off, n int64) error {
	switch {
	case w.err != nil:
		return w.err
	case w.closed:
		return errors.New("vpc: write after Close")
	case off < 0 || n < 0 || off > w.given-n:
		return fmt.Errorf("vpc: write of %d bytes at %d outside the disk (%d bytes)", n, off, w.given)
	case w.stream != nil && off != w.pos:
		w.err = fmt.Errorf("vpc: stream written out of order: at byte %d, expected %d", off, w.pos)
		return w.err
	}
	return nil
}

// writeBlocks writes p at off into the blocks of a dynamic disk,
// allocating those that receive their first non-zero data.
func (w *Writer) writeBlocks(p []byte, off int64) error {
	for len(p) > 0 {
		b, in := off/BlockSize, off%BlockSize
		n := min(int64(len(p)), BlockSize-in)
		piece := p[:n]
		if w.bat[b] == unallocated {
			if zero.IsZero(piece) {
				p, off = p[n:], off+n
				continue
			}
			if w.next/sector > unallocated-1 {
				return errors.New("vpc: image past 2 TiB of blocks")
			}
			if _, err := w.wa.WriteAt(fullBitmap[:], w.next); err != nil {
				return err
			}
			w.bat[b] = uint32(w.next / sector)
			w.next += int64(len(fullBitmap)) + BlockSize
		}
		data := int64(w.bat[b])*sector + int64(len(fullBitmap)) + in
		if err := zero.WriteNonZero(w.wa, piece, data); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// fullBitmap is the bitmap of a block of 2 MiB with every sector marked
// as written, as qemu writes them.
var fullBitmap = func() (b [BlockSize / sector / 8]byte) {
	for i := range b {
		b[i] = 0xff
	}
	return b
}()

// Close completes the image: the rest of the disk and the footer of a
// fixed disk; the BAT, the header and the footers of a dynamic one. It
// fails if a stream did not receive the whole disk.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	foot := w.foot.marshal()
	switch {
	case w.stream != nil:
		if w.pos != w.given {
			w.err = fmt.Errorf("vpc: stream ends at byte %d of %d", w.pos, w.given)
			return w.err
		}
		if w.err = writeZeros(w.stream, w.size-w.given); w.err == nil {
			if _, w.err = w.stream.Write(foot); w.err == nil {
				w.err = w.stream.Flush()
			}
		}
	case w.bat == nil:
		_, w.err = w.wa.WriteAt(foot, w.size)
	default:
		w.err = w.closeDynamic(foot)
	}
	return w.err
}

// closeDynamic writes a dynamic disk's metadata: the BAT (its last
// sector's spare bytes all ones, as qemu-img leaves them), the header,
// the footer at the end, and its copy at offset 0.
func (w *Writer) closeDynamic(foot []byte) error {
	bat := make([]byte, (4*len(w.bat)+sector-1)&^(sector-1))
	for i := range bat {
		bat[i] = 0xff
	}
	for i, e := range w.bat {
		binary.BigEndian.PutUint32(bat[4*i:], e)
	}
	h := &header{dataOffset: ^uint64(0), tableOffset: tableOffset, version: 0x00010000,
		maxTableEntries: uint32(len(w.bat)), blockSize: BlockSize}
	for _, x := range []struct {
		b   []byte
		off int64
	}{{bat, tableOffset}, {h.marshal(), headerOffset}, {foot, w.next}, {foot, 0}} {
		if _, err := w.wa.WriteAt(x.b, x.off); err != nil {
			return err
		}
	}
	return nil
}

// Abort stops writing: later writes fail, and Close does nothing.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.err == nil {
		w.err = errors.New("vpc: aborted")
	}
}

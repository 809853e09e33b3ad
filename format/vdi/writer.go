package vdi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// File is what a Writer writes: a new, empty file, which reads as zeros
// where it was not written. The Writer reads back the parts of the block
// map it wrote when data comes out of order, and sizes the file last.
type File interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
}

// WriterOptions configure a Writer. The zero value writes a dynamic image
// with a random UUID.
type WriterOptions struct {
	// Static writes a static image (qemu-img's static=on, VirtualBox's
	// fixed): every block mapped to the data block of its own index, the
	// file as large as the disk (blocks never written stay holes).
	Static bool
	// UUID is the image UUID (uuid.Nil: a random one). The
	// last-modification UUID, random otherwise, is then derived from it
	// (a name-based UUID), so that the same input gives the same bytes.
	UUID uuid.UUID
}

// The writer keeps one page of the block map: 4 KiB, 1024 blocks (1 GiB
// of disk).
const (
	wPageBytes   = 4096
	wPageEntries = wPageBytes / 4
)

// Writer writes a new VDI image to a File, with the header and layout
// qemu-img writes (the block map at 0x200, the data after it).
//
// A dynamic image allocates a data block, at the end of the data, when
// the first bytes of its block that are not all zero arrive, so the layout
// follows the order of the writes (the same writes give the same file)
// and blocks of zeros stay unallocated; zero 4 KiB pieces of allocated
// blocks stay holes of the file. Its block map is written a page at a
// time (4 KiB, 1 GiB of disk) as the writes move past it, read back if
// they come back to it, and completed at Close; the header is written
// last, so that an interrupted write never looks like an image. Memory:
// one page, and a bit per page of the block map (64 KiB for the largest
// image), whatever the disk's size or the order of the writes. WriteAt
// and ZeroAt of a dynamic image are serialised.
//
// A static image's data go to fixed places: WriteAt may be called in
// parallel (OrderIndependent, through Create's sink), and the block map
// and header are written at Close. Errors are sticky.
type Writer struct {
	f         File
	size      int64 // disk size recorded: given rounded up to 512
	given     int64 // bytes that will be delivered
	blocks    int64
	offData   int64
	static    bool
	uuidImage uuid.UUID
	uuidSnap  uuid.UUID

	// mu is shared by a static image's writes, held whole by the rest.
	mu        sync.RWMutex
	closed    bool
	allocated int64    // data blocks allocated
	page      int64    // page of the block map in buf, or -1
	buf       []byte   // that page
	dirty     bool     // buf differs from the file
	flushed   []uint64 // pages of the block map written to the file

	errMu sync.Mutex
	err   error
}

// NewWriter returns a Writer of an image of size bytes (rounded up to
// whole 512-byte sectors, as qemu-img convert records a disk) into f.
// Close completes the image; f is not closed.
func NewWriter(f File, size int64, o WriterOptions) (*Writer, error) {
	l, err := newLayout(size, o)
	if err != nil {
		return nil, err
	}
	w := &Writer{f: f, size: l.size, given: size, blocks: l.blocks, offData: l.offData, static: o.Static,
		uuidImage: l.uuidImage, uuidSnap: l.uuidSnap, page: -1}
	if !o.Static {
		w.buf = make([]byte, wPageBytes)
		w.flushed = make([]uint64, (w.pages()+63)/64)
	}
	return w, nil
}

// layout is what the header says of an image to be written.
type layout struct {
	size, blocks, offData int64
	uuidImage, uuidSnap   uuid.UUID
}

func newLayout(size int64, o WriterOptions) (layout, error) {
	if size < 0 || size > MaxSize {
		return layout{}, fmt.Errorf("vdi: image size %d out of range (QEMU takes up to %d bytes)", size, int64(MaxSize))
	}
	l := layout{size: (size + sectorSize - 1) &^ (sectorSize - 1)}
	l.blocks = (l.size + BlockSize - 1) / BlockSize
	l.offData = bmapOffset + (4*l.blocks+sectorSize-1)&^(sectorSize-1)
	l.uuidImage = o.UUID
	var err error
	if l.uuidImage == uuid.Nil {
		if l.uuidImage, err = uuid.NewRandom(); err == nil {
			l.uuidSnap, err = uuid.NewRandom()
		}
		if err != nil {
			return layout{}, fmt.Errorf("vdi: making a UUID: %w", err)
		}
	} else {
		l.uuidSnap = uuid.NewSHA1(l.uuidImage, []byte("vmaconv vdi last modification"))
	}
	return l, nil
}

// header returns the image's header, as qemu-img writes it.
func (l layout) header(static bool, allocated int64) []byte {
	b := make([]byte, headerSize)
	le := binary.LittleEndian
	copy(b, qemuText)
	le.PutUint32(b[offSignature:], Signature)
	le.PutUint32(b[offVersion:], version11)
	le.PutUint32(b[offHeaderSize:], header1Size)
	le.PutUint32(b[offImageType:], typeDynamic)
	if static {
		le.PutUint32(b[offImageType:], typeStatic)
	}
	le.PutUint32(b[offBmap:], bmapOffset)
	le.PutUint32(b[offData:], uint32(l.offData))
	le.PutUint32(b[offSectorSize:], sectorSize)
	le.PutUint64(b[offDiskSize:], uint64(l.size))
	le.PutUint32(b[offBlockSize:], BlockSize)
	le.PutUint32(b[offBlocks:], uint32(l.blocks))
	le.PutUint32(b[offAllocated:], uint32(allocated))
	for _, u := range []struct {
		id  uuid.UUID
		off int
	}{{l.uuidImage, offUUIDImage}, {l.uuidSnap, offUUIDSnap}} {
		id := u.id
		swapUUID(&id)
		copy(b[u.off:], id[:])
	}
	return b
}

// pages returns the number of pages of the block map.
func (w *Writer) pages() int64 { return (w.blocks + wPageEntries - 1) / wPageEntries }

// pageLen returns the bytes of page pg of the block map.
func (w *Writer) pageLen(pg int64) int64 { return min(wPageBytes, 4*w.blocks-pg*wPageBytes) }

func (w *Writer) fail(err error) error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.err == nil {
		w.err = err
	}
	return w.err
}

func (w *Writer) sticky() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

// WriteAt writes p at offset off of the disk.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if err := w.put(p, off, int64(len(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ZeroAt records that the n bytes at off are zero: the new file reads as
// zeros where nothing is written, and unallocated blocks read as zeros.
func (w *Writer) ZeroAt(off, n int64) error { return w.put(nil, off, n) }

func (w *Writer) put(p []byte, off, n int64) error {
	if w.static {
		w.mu.RLock()
		defer w.mu.RUnlock()
	} else {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	if err := w.sticky(); err != nil {
		return err
	}
	switch {
	case w.closed:
		return errors.New("vdi: write after Close")
	case off < 0 || n < 0 || off+n > w.given:
		return fmt.Errorf("vdi: write of %d bytes at %d outside the image (%d bytes)", n, off, w.given)
	case p == nil:
		return nil
	case w.static:
		if err := zero.WriteNonZero(w.f, p, w.offData+off); err != nil {
			return w.fail(fmt.Errorf("vdi: writing data: %w", err))
		}
		return nil
	}
	if err := w.putDynamic(p, off); err != nil {
		return w.fail(err)
	}
	return nil
}

// putDynamic writes p at off of a dynamic image, block by block: a block
// is allocated by its first piece that is not all zeros. Pieces that land
// on consecutive data blocks are written with one call.
func (w *Writer) putDynamic(p []byte, off int64) error {
	runStart, runHost := -1, int64(0) // p[runStart:pos] goes to runHost
	flush := func(pos int) error {
		if runStart < 0 {
			return nil
		}
		err := zero.WriteNonZero(w.f, p[runStart:pos], runHost)
		runStart = -1
		if err != nil {
			return fmt.Errorf("vdi: writing data: %w", err)
		}
		return nil
	}
	for pos := 0; pos < len(p); {
		at := off + int64(pos)
		b, inner := at/BlockSize, at%BlockSize
		k := int(min(BlockSize-inner, int64(len(p)-pos)))
		if zero.IsZero(p[pos : pos+k]) {
			if err := flush(pos); err != nil {
				return err
			}
			pos += k
			continue
		}
		idx, err := w.entry(b)
		if err != nil {
			return err
		}
		host := w.offData + idx*BlockSize + inner
		if runStart < 0 || runHost+int64(pos-runStart) != host {
			if err := flush(pos); err != nil {
				return err
			}
			runStart, runHost = pos, host
		}
		pos += k
	}
	return flush(len(p))
}

// entry returns the data block of block b, allocating the next one if b
// has none.
func (w *Writer) entry(b int64) (int64, error) {
	if pg := b / wPageEntries; pg != w.page {
		if err := w.load(pg); err != nil {
			return 0, err
		}
	}
	i := b % wPageEntries * 4
	if e := binary.LittleEndian.Uint32(w.buf[i:]); e < discarded {
		return int64(e), nil
	}
	idx := w.allocated
	w.allocated++
	binary.LittleEndian.PutUint32(w.buf[i:], uint32(idx))
	w.dirty = true
	return idx, nil
}

// load makes page pg of the block map the one in buf: read back from the
// file if it was written there, else all unallocated.
func (w *Writer) load(pg int64) error {
	if err := w.store(); err != nil {
		return err
	}
	buf := w.buf[:w.pageLen(pg)]
	if w.flushed[pg/64]&(1<<(pg%64)) != 0 {
		if _, err := w.f.ReadAt(buf, bmapOffset+pg*wPageBytes); err != nil {
			return fmt.Errorf("vdi: reading back the block map: %w", err)
		}
	} else {
		fillUnallocated(buf)
	}
	w.page = pg
	return nil
}

// store writes the page in buf to its place in the file, if it changed.
func (w *Writer) store() error {
	if !w.dirty {
		return nil
	}
	if _, err := w.f.WriteAt(w.buf[:w.pageLen(w.page)], bmapOffset+w.page*wPageBytes); err != nil {
		return fmt.Errorf("vdi: writing the block map: %w", err)
	}
	w.flushed[w.page/64] |= 1 << (w.page % 64)
	w.dirty = false
	return nil
}

// Abort stops writing; the image is left incomplete (no header).
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail(errors.New("vdi: write aborted"))
	w.closed = true
}

// Close writes the rest of the block map, sizes the file and writes the
// header. Bytes never delivered read as zeros.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.sticky()
	}
	w.closed = true
	if err := w.sticky(); err != nil {
		return err
	}
	if err := w.finish(); err != nil {
		return w.fail(err)
	}
	return nil
}

// mapChunk is the block map written at once at Close: 1 MiB, the map of
// 256 GiB.
const mapChunk = 1 << 20

func (w *Writer) finish() error {
	l := layout{size: w.size, blocks: w.blocks, offData: w.offData, uuidImage: w.uuidImage, uuidSnap: w.uuidSnap}
	allocated := w.allocated
	if w.static {
		allocated = w.blocks
		if err := writeIdentityMap(w.f, w.blocks); err != nil {
			return err
		}
	} else {
		if err := w.store(); err != nil {
			return err
		}
		// The pages never written: all unallocated, in runs.
		ff := make([]byte, min(mapChunk, 4*w.blocks))
		fillUnallocated(ff)
		for pg := int64(0); pg < w.pages(); {
			if w.flushed[pg/64]&(1<<(pg%64)) != 0 {
				pg++
				continue
			}
			end := pg + 1
			for end < w.pages() && end-pg < mapChunk/wPageBytes && w.flushed[end/64]&(1<<(end%64)) == 0 {
				end++
			}
			n := (end-pg-1)*wPageBytes + w.pageLen(end-1)
			if _, err := w.f.WriteAt(ff[:n], bmapOffset+pg*wPageBytes); err != nil {
				return fmt.Errorf("vdi: writing the block map: %w", err)
			}
			pg = end
		}
	}
	if err := w.f.Truncate(w.offData + allocated*BlockSize); err != nil {
		return fmt.Errorf("vdi: sizing the image: %w", err)
	}
	if _, err := w.f.WriteAt(l.header(w.static, allocated), 0); err != nil {
		return fmt.Errorf("vdi: writing the header: %w", err)
	}
	return nil
}

// fillUnallocated sets every entry of a piece of block map to
// unallocated.
func fillUnallocated(b []byte) {
	for i := 0; i+4 <= len(b); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], unallocated)
	}
}

// writeIdentityMap writes a static image's block map: block i in data
// block i.
func writeIdentityMap(w io.WriterAt, blocks int64) error {
	buf := make([]byte, min(mapChunk, 4*blocks))
	for b := int64(0); b < blocks; {
		k := min(int64(len(buf))/4, blocks-b)
		for i := range k {
			binary.LittleEndian.PutUint32(buf[4*i:], uint32(b+i))
		}
		if _, err := w.WriteAt(buf[:4*k], bmapOffset+4*b); err != nil {
			return fmt.Errorf("vdi: writing the block map: %w", err)
		}
		b += k
	}
	return nil
}

// StreamWriter writes a static image to a stream, in order: the header
// and block map first (a static image's are known before its data), then
// the disk's bytes, then zeros to the end of the last block. Its calls
// must come from one goroutine, each starting where the previous one
// ended (format.Sequential).
type StreamWriter struct {
	w     *bufio.Writer
	given int64 // bytes that will be delivered
	end   int64 // data bytes of the image: whole blocks
	pos   int64
	err   error
	done  bool
}

// NewStreamWriter returns a StreamWriter of a static image of size bytes
// (rounded up to whole 512-byte sectors) to w; o.Static must be set (a
// dynamic image's block map, written before its data, depends on them).
// Its header and block map are written at once.
func NewStreamWriter(w io.Writer, size int64, o WriterOptions) (*StreamWriter, error) {
	if !o.Static {
		return nil, errors.New("vdi: a dynamic image cannot be written in order (its block map comes before the data it maps)")
	}
	l, err := newLayout(size, o)
	if err != nil {
		return nil, err
	}
	s := &StreamWriter{w: bufio.NewWriterSize(w, 1<<20), given: size, end: l.blocks * BlockSize}
	if _, err := s.w.Write(l.header(true, l.blocks)); err != nil {
		return nil, err
	}
	if err := writeIdentityMap(&offsetWriter{w: s.w, at: headerSize}, l.blocks); err != nil {
		return nil, err
	}
	if err := s.zeros(l.offData - headerSize - 4*l.blocks); err != nil {
		return nil, err
	}
	return s, nil
}

// offsetWriter is a stream taken for an io.WriterAt written in order from
// at on.
type offsetWriter struct {
	w  io.Writer
	at int64
}

func (o *offsetWriter) WriteAt(p []byte, off int64) (int, error) {
	if off != o.at {
		return 0, fmt.Errorf("vdi: stream written at %d, expected %d", off, o.at)
	}
	n, err := o.w.Write(p)
	o.at += int64(n)
	return n, err
}

var zeroChunk = make([]byte, 1<<20)

func (s *StreamWriter) zeros(n int64) error {
	for n > 0 && s.err == nil {
		k := min(n, int64(len(zeroChunk)))
		_, s.err = s.w.Write(zeroChunk[:k])
		n -= k
	}
	return s.err
}

func (s *StreamWriter) check(off, n int64) error {
	switch {
	case s.err != nil:
	case s.done:
		s.err = errors.New("vdi: write after Close")
	case off != s.pos:
		s.err = fmt.Errorf("vdi: stream written out of order: at byte %d, expected %d", off, s.pos)
	case n < 0 || off+n > s.given:
		s.err = fmt.Errorf("vdi: write of %d bytes at %d outside the image (%d bytes)", n, off, s.given)
	}
	return s.err
}

// WriteAt writes p, which must start where the previous write ended.
func (s *StreamWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := s.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := s.w.Write(p)
	s.pos += int64(n)
	s.err = err
	return n, err
}

// ZeroAt writes n zeros, which must start where the previous write ended.
func (s *StreamWriter) ZeroAt(off, n int64) error {
	if err := s.check(off, n); err != nil {
		return err
	}
	s.pos += n
	return s.zeros(n)
}

// Sequential marks the writer as a format.Sequential one.
func (s *StreamWriter) Sequential() {}

// Close pads the last block with zeros and flushes the stream; it fails
// if the disk was not written whole.
func (s *StreamWriter) Close() error {
	if s.done {
		return s.err
	}
	s.done = true
	if s.err == nil && s.pos != s.given {
		s.err = fmt.Errorf("vdi: stream ends at byte %d of %d", s.pos, s.given)
	}
	if s.err == nil && s.zeros(s.end-s.pos) == nil {
		s.err = s.w.Flush()
	}
	return s.err
}

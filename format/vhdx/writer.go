package vhdx

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// Zeros says what the BAT records for a payload block that holds no data
// (qemu-img's block_state_zero).
type Zeros int

// What blocks without data become.
const (
	// ZerosDefault is qemu-img's default for a dynamic image
	// (PAYLOAD_BLOCK_ZERO), and for a fixed image the block stays present
	// (a hole of the file), as a fixed image's blocks all are.
	ZerosDefault Zeros = iota
	// ZerosBlockZero records PAYLOAD_BLOCK_ZERO (block_state_zero=on),
	// for a fixed image too (its space stays reserved in the file).
	ZerosBlockZero
	// ZerosUnallocated records PAYLOAD_BLOCK_NOT_PRESENT in a dynamic
	// image (block_state_zero=off); a fixed image's block stays present.
	ZerosUnallocated
)

// WriterOptions configure a Writer. The zero value writes a dynamic image
// with qemu-img's defaults.
type WriterOptions struct {
	// BlockSize is a power of two from 1 MiB to 256 MiB; 0 chooses as
	// qemu-img does: 8 MiB up to 1 GiB, 16 MiB up to 100 GiB, 32 MiB up to
	// 32 TiB, 64 MiB above.
	BlockSize int64
	// LogSize is a multiple of 1 MiB below 4 GiB; 0 means 1 MiB.
	LogSize int64
	// Fixed writes a fixed image: every block has its place in the file
	// (LeaveBlockAllocated), which holds blocks of zeros as holes.
	Fixed bool
	Zeros Zeros
	// Rand, if set, is read for the GUIDs qemu-img draws at random (the
	// headers' FileWriteGuid and DataWriteGuid, the page 83 data) and the
	// headers' first sequence number; nil: crypto/rand.
	Rand io.Reader
}

// File is what a Writer writes into: a new file, which reads as zeros
// where it was not written. It is read back only for BAT pages the
// Writer had to put aside (data arriving far out of order).
type File interface {
	io.WriterAt
	io.ReaderAt
	Truncate(size int64) error
}

// plan is the layout of an image qemu-img would write: the header
// section, the log at 1 MiB, the BAT, the metadata region (1 MiB), 4 MiB
// of room, the payload blocks.
type plan struct {
	size, bs, cr    int64 // virtual size; block size; chunk ratio
	blocks, entries int64
	logOff, logLen  int64
	batOff, batLen  int64
	metaOff         int64
	dataOff         int64
}

const metaLen = 1 * mib

// checkOptions validates o and fills in its defaults for a disk of size
// bytes (already whole sectors).
func checkOptions(o *WriterOptions, size int64) error {
	if size < 0 || size > maxDiskSize {
		return fmt.Errorf("vhdx: image size %d: at most 64 TiB", size)
	}
	if o.BlockSize == 0 {
		switch {
		case size > 32<<40:
			o.BlockSize = 64 * mib
		case size > 100<<30:
			o.BlockSize = 32 * mib
		case size > 1<<30:
			o.BlockSize = 16 * mib
		default:
			o.BlockSize = 8 * mib
		}
	}
	if bs := o.BlockSize; bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("vhdx: block size %d: want a power of two from 1 MiB to 256 MiB", bs)
	}
	if o.LogSize == 0 {
		o.LogSize = 1 * mib
	}
	if o.LogSize < mib || o.LogSize%mib != 0 || o.LogSize >= 4<<30 {
		return fmt.Errorf("vhdx: log size %d: want a multiple of 1 MiB below 4 GiB", o.LogSize)
	}
	if o.Zeros < ZerosDefault || o.Zeros > ZerosUnallocated {
		return fmt.Errorf("vhdx: Zeros %d: unknown", o.Zeros)
	}
	return nil
}

func newPlan(size int64, o WriterOptions) plan {
	p := plan{size: size, bs: o.BlockSize, cr: sectorsPerChunk * 512 / o.BlockSize}
	p.blocks = (size + p.bs - 1) / p.bs
	if p.blocks > 0 {
		p.entries = p.blocks + (p.blocks-1)/p.cr
	}
	n := p.entries
	if n == 0 {
		// QEMU counts the entries of an empty disk in 32 bits, from -1:
		// its BAT region must be as large for QEMU to open the image.
		n = int64(uint32(0xffffffff) >> bits.TrailingZeros64(uint64(p.cr)))
	}
	p.logOff, p.logLen = headerSection, o.LogSize
	p.batOff = (p.logOff + p.logLen + mib - 1) &^ (mib - 1)
	p.batLen = (n*8 + mib - 1) &^ (mib - 1)
	p.metaOff = p.batOff + p.batLen
	p.dataOff = p.batOff + p.batLen + 5*mib
	return p
}

// Writer writes a new VHDX image (one disk, 512-byte logical and physical
// sectors) as qemu-img writes it: the layout of newPlan, the metadata
// items qemu-img writes, the region table and both headers with their
// CRC-32C (and the region table's copy).
//
// Data may arrive in any order, in pieces of any size. In a dynamic
// image, a block is allocated at the end of the file when its first
// non-zero byte arrives (so the layout follows the order of writes, and
// the same writes give the same file but for the random GUIDs and
// sequence number), and blocks that get no data are recorded as
// PAYLOAD_BLOCK_ZERO (or NOT_PRESENT: Zeros); a fixed image has every
// block at its place. Zero 4 KiB blocks are never written: they stay
// holes of the file.
//
// The BAT is written as the writes move past it: a chunk's entries (the
// payload blocks one sector bitmap block maps, 4 GiB of disk) are held in
// memory while the chunk is written and stored in place when all its
// bytes have been written or declared zero. Memory: at most maxHeld
// chunks' entries (32 KiB each at 1 MiB blocks, 520 bytes at 64 MiB), put
// aside in the file and read back when writes come far out of order, plus
// 9 bytes of bookkeeping a chunk (144 KiB for 64 TiB). The metadata,
// region tables, headers and file identifier are written last, by Close.
//
// WriteAt and ZeroAt are safe for concurrent use (they are serialised).
// Errors are sticky.
type Writer struct {
	f     File
	p     plan
	given int64 // bytes that will be delivered
	fixed bool
	empty uint64 // the BAT entry of a block without data, but for a fixed image's place
	rand  io.Reader

	mu     sync.Mutex
	err    error
	closed bool
	next   int64            // dynamic: where the next block goes
	state  []uint8          // per chunk
	cover  []int64          // per chunk: bytes written or declared zero
	held   map[int64]*chunk // chunks whose entries are in memory
	tick   uint64
	buf    []byte // a chunk's entries, encoded
}

// Chunk states.
const (
	chunkNew    = iota // no entry set: all as Zeros says
	chunkHeld          // in memory
	chunkStored        // put aside in the file, not complete
	chunkDone          // complete and stored
)

// maxHeld bounds the chunks whose entries are in memory at once.
const maxHeld = 64

type chunk struct {
	e    []uint64 // its payload blocks' entries, then its sector bitmap's if it has one
	used uint64
}

// NewWriter returns a Writer of a disk of size bytes (rounded up to whole
// 512-byte sectors, as qemu-img sizes images) into f, a new, empty file.
// Close completes the image; f is not closed.
func NewWriter(f File, size int64, o WriterOptions) (*Writer, error) {
	if size < 0 {
		return nil, fmt.Errorf("vhdx: image size %d", size)
	}
	vsize := (size + 511) &^ 511
	if err := checkOptions(&o, vsize); err != nil {
		return nil, err
	}
	p := newPlan(vsize, o)
	w := &Writer{f: f, p: p, given: size, fixed: o.Fixed, rand: o.Rand, next: p.dataOff, held: map[int64]*chunk{}}
	if w.rand == nil {
		w.rand = rand.Reader
	}
	switch {
	case o.Zeros == ZerosBlockZero || o.Zeros == ZerosDefault && !o.Fixed:
		w.empty = blockZero
	case !o.Fixed:
		w.empty = blockNotPresent
	default:
		w.empty = blockFullyPresent
	}
	n := (p.blocks + p.cr - 1) / p.cr
	w.state = make([]uint8, n)
	w.cover = make([]int64, n)
	return w, nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// chunkBytes returns the bytes of chunk c that will be delivered.
func (w *Writer) chunkBytes(c int64) int64 {
	span := w.p.cr * w.p.bs
	return min(w.given, (c+1)*span) - c*span
}

// WriteAt writes p at disk offset off.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if err := w.put(off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ZeroAt declares the n bytes at disk offset off zero.
func (w *Writer) ZeroAt(off, n int64) error { return w.put(off, n, nil) }

func (w *Writer) put(off, n int64, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("vhdx: write after Close")
	}
	if off < 0 || n < 0 || off > w.given-n {
		return fmt.Errorf("vhdx: write of %d bytes at %d outside the disk (%d bytes)", n, off, w.given)
	}
	bs := w.p.bs
	for pos := int64(0); pos < n; {
		at := off + pos
		b := at / bs
		c := b / w.p.cr
		var k int64
		if p == nil {
			// Zeros: as far as the chunk goes at once.
			k = min(n-pos, (c+1)*w.p.cr*bs-at)
		} else {
			k = min(n-pos, (b+1)*bs-at)
			if piece := p[pos : pos+k]; !zero.IsZero(piece) {
				if err := w.putData(b, at-b*bs, piece); err != nil {
					return w.fail(err)
				}
			}
		}
		if err := w.covered(c, k); err != nil {
			return w.fail(err)
		}
		pos += k
	}
	return nil
}

// putData writes data into block b at inner, allocating the block first
// if it has no place yet.
func (w *Writer) putData(b, inner int64, piece []byte) error {
	ch, err := w.chunk(b / w.p.cr)
	if err != nil {
		return err
	}
	e := &ch.e[b%w.p.cr]
	if *e&stateMask != blockFullyPresent {
		host := w.p.dataOff + b*w.p.bs
		if !w.fixed {
			host, w.next = w.next, w.next+w.p.bs
		}
		*e = uint64(host) | blockFullyPresent
	}
	host := int64(*e >> offsetShift << offsetShift)
	if err := zero.WriteNonZero(w.f, piece, host+inner); err != nil {
		return fmt.Errorf("vhdx: writing data: %w", err)
	}
	return nil
}

// entriesOf returns the number of BAT entries of chunk c.
func (w *Writer) entriesOf(c int64) int64 {
	return min(w.p.cr+1, w.p.entries-c*(w.p.cr+1))
}

// fresh returns chunk c's entries before any data: every block as Zeros
// says, or at its place in a fixed image; the sector bitmap not present.
func (w *Writer) fresh(c int64) []uint64 {
	e := make([]uint64, w.entriesOf(c))
	for i := range e {
		b := c*w.p.cr + int64(i)
		switch {
		case int64(i) == w.p.cr:
		case w.empty == blockFullyPresent:
			e[i] = uint64(w.p.dataOff+b*w.p.bs) | blockFullyPresent
		default:
			e[i] = w.empty
		}
	}
	return e
}

// chunk returns chunk c's entries, in memory: made, or read back if they
// were put aside. It puts the least recently used chunk aside when too
// many are held.
func (w *Writer) chunk(c int64) (*chunk, error) {
	w.tick++
	if ch := w.held[c]; ch != nil {
		ch.used = w.tick
		return ch, nil
	}
	var e []uint64
	switch w.state[c] {
	case chunkNew:
		e = w.fresh(c)
	case chunkStored:
		n := w.entriesOf(c)
		b := make([]byte, n*8)
		if _, err := w.f.ReadAt(b, w.p.batOff+c*(w.p.cr+1)*8); err != nil {
			return nil, fmt.Errorf("vhdx: reading back BAT entries: %w", err)
		}
		e = make([]uint64, n)
		for i := range e {
			e[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
	default:
		return nil, fmt.Errorf("vhdx: bytes of chunk %d written twice (after all its bytes were)", c)
	}
	if len(w.held) >= maxHeld {
		old := int64(-1)
		for k, ch := range w.held {
			if old < 0 || ch.used < w.held[old].used {
				old = k
			}
		}
		if err := w.store(old, w.held[old].e); err != nil {
			return nil, err
		}
		delete(w.held, old)
		w.state[old] = chunkStored
	}
	ch := &chunk{e: e, used: w.tick}
	w.held[c] = ch
	w.state[c] = chunkHeld
	return ch, nil
}

// store writes chunk c's entries to their place in the BAT (entries all
// zero are the new file's zeros already).
func (w *Writer) store(c int64, e []uint64) error {
	w.buf = w.buf[:0]
	nonzero := false
	for _, v := range e {
		w.buf = binary.LittleEndian.AppendUint64(w.buf, v)
		nonzero = nonzero || v != 0
	}
	if !nonzero && w.state[c] == chunkNew {
		return nil
	}
	if _, err := w.f.WriteAt(w.buf, w.p.batOff+c*(w.p.cr+1)*8); err != nil {
		return fmt.Errorf("vhdx: writing the BAT: %w", err)
	}
	return nil
}

// covered counts k bytes of chunk c as delivered and stores its entries
// once all its bytes are.
func (w *Writer) covered(c, k int64) error {
	w.cover[c] += k
	switch {
	case w.cover[c] > w.chunkBytes(c):
		return fmt.Errorf("vhdx: bytes of chunk %d (%d bytes from %d) written twice", c, w.p.cr*w.p.bs, c*w.p.cr*w.p.bs)
	case w.cover[c] == w.chunkBytes(c):
		return w.finish(c)
	}
	return nil
}

// finish stores chunk c's entries for good.
func (w *Writer) finish(c int64) error {
	var e []uint64
	switch w.state[c] {
	case chunkDone:
		return nil
	case chunkNew:
		e = w.fresh(c)
	default:
		ch, err := w.chunk(c)
		if err != nil {
			return err
		}
		e = ch.e
	}
	if err := w.store(c, e); err != nil {
		return err
	}
	delete(w.held, c)
	w.state[c] = chunkDone
	return nil
}

// Abort abandons the image: later writes fail, and Close writes nothing.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail(errors.New("vhdx: write aborted"))
	w.closed = true
}

// Close stores the BAT entries still pending (bytes never delivered read
// as zeros), then the metadata, the region tables, the headers and the
// file identifier, and sizes the file: to the end of its last block.
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
	for c := range int64(len(w.state)) {
		if err := w.finish(c); err != nil {
			return w.fail(err)
		}
	}
	if err := w.writeStructures(); err != nil {
		return w.fail(err)
	}
	end := w.next
	if w.fixed {
		end = w.p.dataOff + w.p.blocks*w.p.bs
	}
	if err := w.f.Truncate(end); err != nil {
		return w.fail(fmt.Errorf("vhdx: sizing the file: %w", err))
	}
	return nil
}

// newGUID draws a random GUID, version 4 as Microsoft lays one out.
func (w *Writer) newGUID() (guid, error) {
	var g guid
	if _, err := io.ReadFull(w.rand, g[:]); err != nil {
		return g, fmt.Errorf("vhdx: drawing a GUID: %w", err)
	}
	g[7] = g[7]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	return g, nil
}

// writeStructures writes everything but the BAT and the data.
func (w *Writer) writeStructures() error {
	var ids [3]guid
	for i := range ids {
		var err error
		if ids[i], err = w.newGUID(); err != nil {
			return err
		}
	}
	var seq [4]byte
	if _, err := io.ReadFull(w.rand, seq[:]); err != nil {
		return fmt.Errorf("vhdx: drawing a sequence number: %w", err)
	}
	meta := encodeMetadata(w.p.bs, w.fixed, w.p.size, ids[2])
	if _, err := w.f.WriteAt(meta, w.p.metaOff); err != nil {
		return fmt.Errorf("vhdx: writing the metadata: %w", err)
	}
	rt := encodeRegionTable([]regionEntry{
		{id: batGUID, off: uint64(w.p.batOff), length: uint32(w.p.batLen), required: true},
		{id: metadataGUID, off: uint64(w.p.metaOff), length: metaLen, required: true},
	})
	for _, at := range []int64{region1Offset, region2Offset} {
		if _, err := w.f.WriteAt(rt, at); err != nil {
			return fmt.Errorf("vhdx: writing the region table: %w", err)
		}
	}
	h := header{
		seq: uint64(binary.LittleEndian.Uint32(seq[:])), fileWrite: ids[0], dataWrite: ids[1],
		version: 1, logLength: uint32(w.p.logLen), logOffset: uint64(w.p.logOff),
	}
	for _, at := range []int64{header1Offset, header2Offset} {
		if _, err := w.f.WriteAt(encodeHeader(h), at); err != nil {
			return fmt.Errorf("vhdx: writing a header: %w", err)
		}
		h.seq++
	}
	id := append(append([]byte(nil), Magic[:]...), putUTF16le(creator)...)
	if _, err := w.f.WriteAt(id, 0); err != nil {
		return fmt.Errorf("vhdx: writing the file identifier: %w", err)
	}
	return nil
}

// creator is what the file identifier says wrote the file.
const creator = "vmaconv"

// encodeRegionTable returns the 64 KiB of a region table, with its
// checksum.
func encodeRegionTable(es []regionEntry) []byte {
	b := make([]byte, regionTableBytes)
	copy(b, "regi")
	binary.LittleEndian.PutUint32(b[8:], uint32(len(es)))
	for i, e := range es {
		r := b[16+32*i:]
		copy(r, e.id[:])
		binary.LittleEndian.PutUint64(r[16:], e.off)
		binary.LittleEndian.PutUint32(r[24:], e.length)
		if e.required {
			binary.LittleEndian.PutUint32(r[28:], 1)
		}
	}
	binary.LittleEndian.PutUint32(b[4:], checksum(b, 4))
	return b
}

// encodeMetadata returns the metadata table and the five items qemu-img
// writes (file parameters, virtual disk size, page 83 data, logical and
// physical sector sizes of 512 bytes), at 64 KiB into the region.
func encodeMetadata(bs int64, fixed bool, size int64, page83 guid) []byte {
	le := binary.LittleEndian
	b := make([]byte, metaTableBytes+40)
	copy(b, "metadata")
	items := []struct {
		id    guid
		flags uint32
		value []byte
	}{
		{fileParamsGUID, 4, nil},                                 // IsRequired
		{virtualSizeGUID, 6, le.AppendUint64(nil, uint64(size))}, // IsRequired, IsVirtualDisk
		{page83GUID, 6, page83[:]},
		{logicalSectorGUID, 6, le.AppendUint32(nil, 512)},
		{physicalSectorGUID, 6, le.AppendUint32(nil, 512)},
	}
	params := le.AppendUint32(nil, uint32(bs))
	if fixed {
		items[0].value = le.AppendUint32(params, 1) // LeaveBlockAllocated
	} else {
		items[0].value = le.AppendUint32(params, 0)
	}
	le.PutUint16(b[10:], uint16(len(items)))
	off := metaTableBytes
	for i, it := range items {
		e := b[32+32*i:]
		copy(e, it.id[:])
		le.PutUint32(e[16:], uint32(off))
		le.PutUint32(e[20:], uint32(len(it.value)))
		le.PutUint32(e[24:], it.flags)
		copy(b[off:], it.value)
		off += len(it.value)
	}
	return b
}

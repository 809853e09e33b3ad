package vma

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
)

// Byte offsets inside an extent header.
const (
	extOffMagic      = 0
	extOffReserved   = 4
	extOffBlockCount = 6
	extOffUUID       = 8
	extOffMD5        = 24
	extOffBlockInfo  = 40
	maxExtentBlocks  = SlotsPerExtent * BlocksPerCluster
)

// maxPartialPages bounds the memory a Reader spends on duplicate detection
// (about 520 bytes a page). Archives written in ascending order per device,
// as Proxmox writes them, use one page per device.
const maxPartialPages = 1 << 16

// Cluster is one 64 KiB cluster of a device as stored in an extent.
type Cluster struct {
	Device Device // the device the cluster belongs to
	Index  int64  // cluster number: the cluster covers bytes [Index*ClusterSize, (Index+1)*ClusterSize)
	// Mask has bit i set when 4 KiB block i (bit 0 = first) is stored;
	// blocks not stored are all zero.
	Mask uint16
	// Data holds the stored blocks back to back in ascending block order,
	// 4096 bytes each. It is only valid until the next call to Next.
	Data []byte
	// Offset is the archive byte offset of Data (of the extent header when
	// nothing is stored).
	Offset int64
}

// Block returns the 4 KiB of block i (0..15), or nil if that block is zero.
func (c *Cluster) Block(i int) []byte {
	if c.Mask&(1<<i) == 0 {
		return nil
	}
	k := bits.OnesCount16(c.Mask & (1<<i - 1))
	return c.Data[k*BlockSize : (k+1)*BlockSize]
}

// Expand writes the full 64 KiB cluster, zero blocks included, into dst,
// which must be at least ClusterSize bytes long.
func (c *Cluster) Expand(dst []byte) {
	dst = dst[:ClusterSize]
	k := 0
	for i := range BlocksPerCluster {
		b := dst[i*BlockSize : (i+1)*BlockSize]
		if c.Mask&(1<<i) != 0 {
			copy(b, c.Data[k*BlockSize:])
			k++
		} else {
			clear(b)
		}
	}
}

// Reader reads an archive sequentially: the header when it is created, then
// clusters one by one with Next. It reads from the underlying io.Reader in
// order and never seeks, so it works on pipes.
//
// Every check Proxmox's reader makes is made here (header and extent MD5,
// UUID, magic, block accounting, device ids, cluster range, stored blocks
// past a device's end, duplicates, vmstate order), and one more: when the
// input ends, every cluster of every disk must have been seen.
//
// A Reader is not safe for concurrent use. Errors are sticky.
type Reader struct {
	r      io.Reader
	hdr    *Header
	off    int64 // bytes consumed from r
	devs   [maxDevID + 1]*devState
	err    error
	buf    []byte // current extent, header and data
	slots  []slotInfo
	next   int   // next slot of the current extent to return
	extOff int64 // archive offset of the current extent
	nExt   int64
	pages  int    // partially filled cluster-set pages, all devices
	ext    Extent // returned by NextExtent, reused

	// Set by Want on a seekable input: extents storing nothing of the
	// wanted devices are seeked over (skipped) instead of read.
	want    map[int]bool
	seeker  io.Seeker
	size    int64 // input size, to notice truncation when seeking
	skipped bool  // the current extent's data was not read

	salvage bool
	damage  []Damage
	suspect []SuspectExtent
	window  []byte   // salvage: resync's scan buffer
	dropped int64    // damaged ranges not kept (beyond maxDamage)
	back    [][]byte // pushed back, first chunk first: read before r.r (salvage)
	readErr error    // salvage: an input error met reading ahead, for after back
	ended   bool     // salvage: the input ended inside an extent
	marked  []marked // clusters the current extent marked as seen
}

// maxDamage bounds the damaged ranges a salvaging Reader keeps; adjacent
// ones are merged first.
const maxDamage = 1000

type marked struct {
	dev     *devState
	cluster uint32
}

// Want declares that only the data of the devices with the given ids will
// be used. If the input can seek (a file, not a pipe), an extent that
// stores no block of them is seeked over instead of read, and its clusters
// come back with Data nil (Mask still says what is stored). Everything is
// checked as before; truncation is still noticed. It returns whether the
// input can seek. Call it before the first Next.
func (r *Reader) Want(ids ...int) bool {
	s, ok := r.r.(io.Seeker)
	if !ok {
		return false
	}
	cur, err := s.Seek(0, io.SeekCurrent)
	if err != nil || cur != r.off {
		return false // not a plain file, or read through a buffer
	}
	end, err := s.Seek(0, io.SeekEnd)
	if err != nil {
		return false
	}
	if _, err := s.Seek(cur, io.SeekStart); err != nil {
		return false
	}
	r.seeker, r.size, r.want = s, end, map[int]bool{}
	for _, id := range ids {
		r.want[id] = true
	}
	return true
}

type devState struct {
	dev     Device
	seen    clusterSet
	vmstate bool
	nextVM  int64 // next expected vmstate cluster
}

type slotInfo struct {
	dev     *devState
	cluster int64
	mask    uint16
	data    int // start of the cluster's data in buf
}

// NewReader reads and validates the archive header from r and returns a
// Reader positioned at the first extent. The Reader does not close r.
func NewReader(r io.Reader) (*Reader, error) {
	h, size, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: r, hdr: h, off: size, slots: make([]slotInfo, 0, SlotsPerExtent)}
	for _, d := range h.Devices {
		rd.devs[d.ID] = &devState{dev: d, vmstate: d.IsVMState()}
	}
	return rd, nil
}

// Header returns the archive header.
func (r *Reader) Header() *Header { return r.hdr }

// Offset returns the number of archive bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// Extents returns the number of extents read so far.
func (r *Reader) Extents() int64 { return r.nExt }

// Next returns the next cluster in archive order. At the end of a sound
// archive it returns io.EOF; if clusters are missing it returns a
// *FormatError wrapping ErrIncomplete instead (see MissingClusters).
// The returned Cluster's Data is valid until the next call to Next or
// NextExtent.
func (r *Reader) Next() (Cluster, error) {
	for r.err == nil && r.next >= len(r.slots) {
		r.err = r.readExtent()
	}
	if r.err != nil {
		return Cluster{}, r.err
	}
	r.next++
	return r.cluster(r.next - 1), nil
}

// Extent is one extent of an archive.
type Extent struct {
	Offset   int64     // archive byte offset of the extent header
	Clusters []Cluster // in the order stored
	// Data holds the stored blocks of all of Clusters back to back; each
	// cluster's Data is a piece of it, in order.
	Data []byte
}

// NextExtent returns the clusters of the next extent (or of the rest of the
// current one, if Next has been called). The clusters' Data, and the
// Clusters slice, are valid until the next call to Next or NextExtent. The
// end of the archive is reported as by Next. Empty extents are skipped.
func (r *Reader) NextExtent() (*Extent, error) {
	for r.err == nil && r.next >= len(r.slots) {
		r.err = r.readExtent()
	}
	if r.err != nil {
		return nil, r.err
	}
	r.ext.Offset = r.extOff
	r.ext.Clusters = r.ext.Clusters[:0]
	r.ext.Data = nil
	if !r.skipped {
		r.ext.Data = r.buf[r.slots[r.next].data:]
	}
	for ; r.next < len(r.slots); r.next++ {
		r.ext.Clusters = append(r.ext.Clusters, r.cluster(r.next))
	}
	return &r.ext, nil
}

func (r *Reader) cluster(i int) Cluster {
	s := &r.slots[i]
	n := bits.OnesCount16(s.mask) * BlockSize
	c := Cluster{Device: s.dev.dev, Index: s.cluster, Mask: s.mask}
	if !r.skipped {
		c.Data = r.buf[s.data : s.data+n : s.data+n]
	}
	c.Offset = r.extOff + int64(s.data)
	if n == 0 {
		c.Offset = r.extOff
	}
	return c
}

// errEnd marks the clean end of the input inside readExtentOnce.
var errEnd = errors.New("end of archive")

// readExtent reads and validates one extent. At a clean end of input it
// returns io.EOF or the completeness error. In salvage mode a damaged
// extent is recorded and skipped: the reader resynchronises on the next
// valid extent header, as many times as it takes, in one loop; and an
// input that fails to read (a corrupt or truncated compression layer) ends
// the archive there, recorded as damage.
func (r *Reader) readExtent() error {
	for {
		start := r.off
		err := r.readExtentOnce()
		if err == nil {
			return nil
		}
		if err == errEnd {
			return r.finish()
		}
		if !r.salvage {
			return err
		}
		r.undo()
		r.slots, r.next = r.slots[:0], 0
		var fe *FormatError
		if !errors.As(err, &fe) { // the input itself failed: nothing more to read
			r.addDamage(Damage{Offset: start, Length: r.off - start, Err: err})
			return r.finish()
		}
		found, err := r.resync(start, fe)
		if err != nil {
			return err
		}
		if !found {
			return r.finish()
		}
	}
}

// undo forgets the clusters the failed extent had marked as seen.
func (r *Reader) undo() {
	for _, m := range r.marked {
		if m.dev.vmstate {
			m.dev.nextVM = min(m.dev.nextVM, int64(m.cluster))
			continue
		}
		r.pages += m.dev.seen.remove(m.cluster)
	}
	r.marked = r.marked[:0]
}

// pushBack makes b the next bytes read (b is kept, not copied).
func (r *Reader) pushBack(b []byte) {
	pushedBack += len(b)
	if len(b) > 0 {
		r.back = slices.Insert(r.back, 0, b)
	}
}

// read reads len(p) bytes, from the pushed-back bytes first.
func (r *Reader) read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.back) > 0 {
		k := copy(p[n:], r.back[0])
		n += k
		if r.back[0] = r.back[0][k:]; len(r.back[0]) == 0 {
			r.back = r.back[1:]
		}
	}
	if n == len(p) {
		return n, nil
	}
	if err := r.readErr; err != nil {
		r.readErr = nil
		return n, err
	}
	m, err := io.ReadFull(r.r, p[n:])
	if err == io.EOF && n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n + m, err
}

// resync looks for the next valid extent header of this archive after
// the damaged extent at start, scanning byte by byte from start+1 (bytes
// inserted or lost move extents off the 512-byte grid), over what the
// damaged extent consumed and then the input. If it finds one, it records
// the damage up to it and pushes the header back to be read next;
// otherwise it records the damage up to the end of the input. Memory is
// constant and time linear in the bytes scanned.
func (r *Reader) resync(start int64, cause *FormatError) (found bool, err error) {
	// What the damaged extent consumed, after its first byte, is scanned
	// again: push it back.
	consumed := int(r.off - start)
	if consumed > 1 && consumed <= len(r.buf) {
		r.pushBack(bytes.Clone(r.buf[1:consumed]))
		r.off = start + 1
	}
	if r.window == nil {
		r.window = make([]byte, 0, resyncStep+ExtentHeaderSize)
	}
	window := r.window[:0]
	winOff := r.off // input offset of window[0]
	step := 2 * ExtentHeaderSize
	for {
		for i := 0; ; {
			k := bytes.Index(window[i:], ExtentMagic[:])
			if k < 0 {
				break
			}
			i += k
			if len(window)-i < ExtentHeaderSize {
				break // need more input to check it
			}
			if r.plausibleHeader(window[i : i+ExtentHeaderSize]) {
				at := winOff + int64(i)
				r.addDamage(Damage{Offset: start, Length: at - start, Err: cause})
				r.pushBack(bytes.Clone(window[i:]))
				r.off = at
				return true, nil
			}
			i++
		}
		// Keep the bytes that might start a header; read more.
		if keep := ExtentHeaderSize - 1; len(window) > keep {
			winOff += int64(len(window) - keep)
			window = append(window[:0], window[len(window)-keep:]...)
		}
		// Small reads: what follows a header found is pushed back, and
		// should not be much more than the header.
		n, rerr := r.read(window[len(window):cap(window)][:min(step, cap(window)-len(window))])
		step = min(2*step, resyncStep)
		r.off += int64(n)
		window = window[:len(window)+n]
		if rerr != nil && rerr != io.ErrUnexpectedEOF || rerr != nil && n == 0 {
			r.addDamage(Damage{Offset: start, Length: r.off - start, Err: cause})
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				return false, nil
			}
			// The input failed (a compression layer): it ends here.
			r.addDamage(Damage{Offset: r.off, Err: rerr})
			return false, nil
		}
	}
}

// addDamage records d, merged with the previous range if they touch.
func (r *Reader) addDamage(d Damage) {
	if k := len(r.damage) - 1; k >= 0 && r.damage[k].Offset+r.damage[k].Length == d.Offset && d.Length > 0 {
		r.damage[k].Length += d.Length
		return
	}
	if len(r.damage) >= maxDamage {
		r.dropped++
		return
	}
	r.damage = append(r.damage, d)
}

// headerStarts reports whether hdr starts like an extent header of this
// archive: magic, reserved field and UUID, nothing more.
func (r *Reader) headerStarts(hdr []byte) bool {
	return bytes.Equal(hdr[:4], ExtentMagic[:]) && hdr[extOffReserved] == 0 && hdr[extOffReserved+1] == 0 &&
		bytes.Equal(hdr[extOffUUID:extOffUUID+16], r.hdr.UUID[:])
}

// plausibleHeader reports whether hdr is an extent header of this archive:
// the cheap checks first (magic, reserved field, block count, UUID, block
// accounting, device ids and cluster ranges, no cluster twice), then the
// MD5, so that input crafted to be full of candidates costs no more than
// reading it.
func (r *Reader) plausibleHeader(hdr []byte) bool {
	if !r.headerStarts(hdr) {
		return false
	}
	count := int(binary.BigEndian.Uint16(hdr[extOffBlockCount:]))
	if count > maxExtentBlocks {
		return false
	}
	var slots [SlotsPerExtent]uint64
	n, blocks := 0, 0
	for i := range SlotsPerExtent {
		bi := binary.BigEndian.Uint64(hdr[extOffBlockInfo+8*i:])
		id := int(byte(bi >> 32))
		if id == 0 {
			continue
		}
		d := r.devs[id]
		if d == nil || !d.vmstate && int64(uint32(bi)) >= d.dev.Clusters() {
			return false
		}
		blocks += bits.OnesCount16(uint16(bi >> 48))
		slots[n] = bi & 0xff_ffffffff // device and cluster
		n++
	}
	if blocks != count {
		return false
	}
	s := slots[:n]
	slices.Sort(s)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return false
		}
	}
	md5Checks++
	var stored [16]byte
	copy(stored[:], hdr[extOffMD5:])
	clear(hdr[extOffMD5 : extOffMD5+16])
	sum := md5.Sum(hdr)
	copy(hdr[extOffMD5:], stored[:])
	return sum == stored
}

// pushedBack counts the bytes pushed back to be read again, for tests (as
// md5Checks).
var pushedBack int

// md5Checks counts the candidate headers whose MD5 was computed, for
// tests (not synchronised: tests read it from the goroutine that reads).
var md5Checks int

// Damage is a range of an archive that salvage mode skipped.
type Damage struct {
	Offset int64 // where the damaged extent started
	Length int64 // bytes skipped
	Err    error // what was wrong with it
}

// Salvage switches the reader into salvage mode: instead of failing on a
// damaged extent, it records it (see Damaged), skips to the next valid
// extent header, and goes on; the clusters lost with it are reported by
// MissingClusters, and the end of the archive is io.EOF even when clusters
// are missing. The header must be intact. Call it before the first Next;
// it reads through a buffer and disables Want.
func (r *Reader) Salvage() {
	r.salvage = true
	r.want, r.seeker = nil, nil
	r.r = bufio.NewReaderSize(r.r, 1<<20)
}

// Damaged returns the ranges salvage mode skipped so far, adjacent ones
// merged; at most 1000 are kept (see DamagedDropped).
func (r *Reader) Damaged() []Damage { return r.damage }

// DamagedDropped returns how many damaged ranges were not kept by Damaged.
func (r *Reader) DamagedDropped() int64 { return r.dropped }

// readExtentOnce reads and checks one extent; errEnd at a clean end.
func (r *Reader) readExtentOnce() error {
	r.slots, r.next = r.slots[:0], 0
	r.marked = r.marked[:0]
	off := r.off
	if r.buf == nil {
		r.buf = make([]byte, ExtentHeaderSize, MaxExtentSize)
	}
	if r.ended {
		return errEnd
	}
	hdr := r.buf[:ExtentHeaderSize]
	n, err := r.read(hdr)
	r.off += int64(n)
	switch {
	case err == io.EOF:
		return errEnd
	case err == io.ErrUnexpectedEOF:
		return errAt(ErrCorrupt, off, "truncated extent header: %d of %d bytes after the last extent", n, ExtentHeaderSize)
	case err != nil:
		return fmt.Errorf("vma: reading extent at byte offset %d: %w", off, err)
	}
	var stored [16]byte
	copy(stored[:], hdr[extOffMD5:])
	clear(hdr[extOffMD5 : extOffMD5+16])
	sum := md5.Sum(hdr)
	copy(hdr[extOffMD5:], stored[:])
	if sum != stored {
		return errAt(ErrChecksum, off, "extent %d: header MD5 mismatch: stored %x, computed %x", r.nExt, stored, sum)
	}
	if !bytes.Equal(hdr[extOffUUID:extOffUUID+16], r.hdr.UUID[:]) {
		return errAt(ErrCorrupt, off, "extent %d: UUID %x does not match the archive's %s", r.nExt, hdr[extOffUUID:extOffUUID+16], r.hdr.UUID)
	}
	if !bytes.Equal(hdr[:4], ExtentMagic[:]) || hdr[extOffReserved] != 0 || hdr[extOffReserved+1] != 0 {
		return errAt(ErrCorrupt, off, "extent %d: bad extent magic %q or reserved field %x", r.nExt, hdr[:4], hdr[extOffReserved:extOffReserved+2])
	}
	count := int(binary.BigEndian.Uint16(hdr[extOffBlockCount:]))
	if count > maxExtentBlocks {
		return errAt(ErrCorrupt, off+extOffBlockCount, "extent %d: block count %d exceeds %d", r.nExt, count, maxExtentBlocks)
	}

	// Check the block accounting before reading the data, so that a bad
	// count is reported as such and not as a truncation.
	blocks := 0
	for i := range SlotsPerExtent {
		bi := binary.BigEndian.Uint64(hdr[extOffBlockInfo+8*i:])
		if byte(bi>>32) != 0 {
			blocks += bits.OnesCount16(uint16(bi >> 48))
		}
	}
	if blocks != count {
		return errAt(ErrCorrupt, off+extOffBlockCount, "extent %d: block count %d, but its clusters store %d blocks", r.nExt, count, blocks)
	}
	data := ExtentHeaderSize
	wanted := r.want == nil
	for i := range SlotsPerExtent {
		at := off + extOffBlockInfo + 8*int64(i)
		bi := binary.BigEndian.Uint64(hdr[extOffBlockInfo+8*i:])
		id := int(byte(bi >> 32))
		if id == 0 {
			continue // unused slot; its other fields mean nothing
		}
		mask, c := uint16(bi>>48), int64(uint32(bi))
		d := r.devs[id]
		if d == nil {
			return errAt(ErrCorrupt, at, "extent %d: cluster %d for unknown device id %d", r.nExt, c, id)
		}
		if err := r.checkCluster(d, c, mask); err != nil {
			err.Offset = at
			return err
		}
		r.marked = append(r.marked, marked{d, uint32(c)})
		r.slots = append(r.slots, slotInfo{dev: d, cluster: c, mask: mask, data: data})
		data += bits.OnesCount16(mask) * BlockSize
		wanted = wanted || mask != 0 && r.want[id]
	}

	n = count * BlockSize
	r.skipped = !wanted && n > 0
	if r.skipped { // seek over data nobody will look at
		if end := r.off + int64(n); end > r.size {
			return errAt(ErrCorrupt, off, "extent %d: truncated: %d of %d data bytes", r.nExt, max(r.size-r.off, 0), n)
		}
		if _, err := r.seeker.Seek(int64(n), io.SeekCurrent); err != nil {
			return fmt.Errorf("vma: skipping extent %d at byte offset %d: %w", r.nExt, off, err)
		}
		r.off += int64(n)
	} else {
		r.buf = r.buf[:ExtentHeaderSize+n]
		got, err := r.read(r.buf[ExtentHeaderSize:])
		r.off += int64(got)
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = errAt(ErrCorrupt, off, "extent %d: truncated: %d of %d data bytes", r.nExt, got, n)
			} else {
				err = fmt.Errorf("vma: reading extent %d at byte offset %d: %w", r.nExt, off, err)
			}
			if r.salvage {
				return r.partialExtent(off, got, err)
			}
			return err
		}
		if r.salvage {
			if err := r.checkNextHeader(off, n); err != nil {
				return err
			}
		}
	}
	r.extOff = off
	r.nExt++
	return nil
}

// resyncStep is how much resync reads at a time.
const resyncStep = 16 << 10

// shiftWindow is how far around an extent's end salvage looks for the next
// header when it is not where the extent's length puts it.
const shiftWindow = 64 << 10

// checkNextHeader, in salvage mode, looks past the extent just read (at
// off, n data bytes) before it is delivered. The extent MD5 covers only the
// header, so bytes inserted into or lost from an extent's data go unnoticed
// there, and show only as the next header being out of place. If the next
// 512 bytes are not a valid header, it looks for one nearby at a distance
// that is not a multiple of 512 (a damaged next header would leave the ones
// after it on the grid):
//   - found before the extent's end: bytes were lost from its data, which
//     then holds part of the next header. The extent fails, so that its
//     clusters are reported lost rather than delivered wrong, and the
//     resynchronisation that follows finds the header inside it.
//   - found after it: bytes were inserted, into its data or after it; which
//     cannot be told. The extent is delivered, and its stored clusters are
//     listed by Suspect.
//
// It reads ahead without consuming.
func (r *Reader) checkNextHeader(off int64, n int) error {
	// A header starts where it should (its MD5 is checked when it is read):
	// nothing moved. Most often seen in the read buffer, without a copy
	// (only bytes already buffered: a Peek that reads could swallow an
	// input error).
	if br, ok := r.r.(*bufio.Reader); ok && len(r.back) == 0 && br.Buffered() >= ExtentHeaderSize {
		if p, _ := br.Peek(ExtentHeaderSize); r.headerStarts(p) {
			return nil
		}
	}
	// Look no further than the extent is long, so that input made of tiny
	// extents followed by junk costs time linear in its size.
	reach := min(shiftWindow, max(n, ExtentHeaderSize))
	hdr := make([]byte, ExtentHeaderSize, ExtentHeaderSize+reach)
	m, err := r.read(hdr)
	if err == nil && r.headerStarts(hdr) {
		r.pushBack(hdr)
		return nil
	}
	ahead := hdr[:m]
	if err == nil { // not a header: read what a displaced one could need
		var k int
		k, err = r.read(hdr[m : m+reach])
		ahead = hdr[:m+k]
	}
	r.pushBack(ahead)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		r.readErr = err // the input failed: reported after what was read
		return nil
	}
	if len(ahead) == 0 {
		return nil // the end
	}
	tail := r.buf[ExtentHeaderSize+n-min(n, shiftWindow) : ExtentHeaderSize+n]
	window := slices.Concat(tail, ahead)
	for i := 0; ; {
		k := bytes.Index(window[i:], ExtentMagic[:])
		if k < 0 || i+k+ExtentHeaderSize > len(window) {
			return nil
		}
		i += k
		d := i - len(tail)
		if d%ExtentHeaderSize == 0 || !r.plausibleHeader(window[i:i+ExtentHeaderSize]) {
			i++
			continue
		}
		if d < 0 {
			return errAt(ErrCorrupt, off, "extent %d: the next extent header starts %d bytes before its end: bytes were lost from its data", r.nExt, -d)
		}
		r.addSuspect(off, int64(d))
		return nil
	}
}

// maxSuspect bounds the extents Suspect reports.
const maxSuspect = 1000

// SuspectExtent is an extent salvage delivered whose data may be shifted:
// the next header was found Gap bytes after its end, and whether those
// bytes were inserted into its data or after it cannot be told (VMA has no
// data checksums).
type SuspectExtent struct {
	Offset   int64           // archive byte offset of the extent
	Gap      int64           // bytes between its end and the next header
	Clusters []MissingRanges // its stored clusters, by device (Total: how many)
}

// Suspect returns the extents salvage delivered that may hold shifted data
// (at most 1000).
func (r *Reader) Suspect() []SuspectExtent { return r.suspect }

func (r *Reader) addSuspect(off, gap int64) {
	if len(r.suspect) >= maxSuspect {
		return
	}
	byDev := map[*devState][]int64{}
	var order []*devState
	for _, s := range r.slots {
		if s.mask == 0 {
			continue // nothing stored, nothing to shift
		}
		if byDev[s.dev] == nil {
			order = append(order, s.dev)
		}
		byDev[s.dev] = append(byDev[s.dev], s.cluster)
	}
	se := SuspectExtent{Offset: off, Gap: gap}
	for _, d := range order {
		cs := byDev[d]
		slices.Sort(cs)
		m := MissingRanges{Device: d.dev, Total: int64(len(cs))}
		for _, c := range cs {
			if k := len(m.Ranges) - 1; k >= 0 && m.Ranges[k].Last == c-1 {
				m.Ranges[k].Last = c
			} else {
				m.Ranges = append(m.Ranges, Range{First: c, Last: c})
			}
		}
		se.Clusters = append(se.Clusters, m)
	}
	if len(se.Clusters) > 0 {
		r.suspect = append(r.suspect, se)
	}
}

// partialExtent ends salvage at an extent whose data stops after got
// bytes (the input ended or failed): the clusters whose data arrived whole
// are kept, the rest is damage, and the input is at its end.
func (r *Reader) partialExtent(off int64, got int, cause error) error {
	avail := ExtentHeaderSize + got
	k, end := 0, ExtentHeaderSize
	for k < len(r.slots) {
		e := r.slots[k].data + bits.OnesCount16(r.slots[k].mask)*BlockSize
		if e > avail {
			break
		}
		k, end = k+1, e
	}
	lost := r.marked[k:]
	r.marked = r.marked[:k]
	for _, m := range lost {
		if m.dev.vmstate {
			m.dev.nextVM = min(m.dev.nextVM, int64(m.cluster))
			continue
		}
		r.pages += m.dev.seen.remove(m.cluster)
	}
	r.slots = r.slots[:k]
	if k == 0 {
		end = 0 // nothing of the extent is used, its header neither
	}
	r.addDamage(Damage{Offset: off + int64(end), Length: r.off - off - int64(end), Err: cause})
	r.ended = true
	if k == 0 {
		return errEnd
	}
	r.buf = r.buf[:avail]
	r.skipped = false
	r.extOff = off
	r.nExt++
	return nil
}

// checkCluster applies the per-cluster rules to cluster c of d and records
// it as seen.
func (r *Reader) checkCluster(d *devState, c int64, mask uint16) *FormatError {
	fail := func(kind error, format string, args ...any) *FormatError {
		return &FormatError{Device: d.dev.Name, Cluster: c, Msg: fmt.Sprintf(format, args...), Err: kind}
	}
	if d.vmstate {
		// A RAM-state stream must arrive in order; it has no upper bound.
		if c != d.nextVM {
			return fail(ErrCorrupt, "vmstate cluster out of order, expected %d", d.nextVM)
		}
		d.nextVM++
		return nil
	}
	if n := d.dev.Clusters(); c >= n {
		return fail(ErrCorrupt, "cluster beyond the end of the device (%d clusters)", n)
	}
	// Stored blocks that start at or past the device's end: Proxmox's
	// reader accepts them only inside a fully stored cluster (it writes a
	// full cluster in one go, truncated), which is what writers before
	// mid-2020 produced for a partial last cluster.
	if end := d.dev.Size - c*ClusterSize; end < ClusterSize && mask != 0xffff {
		firstPast := (end + BlockSize - 1) / BlockSize
		if mask>>firstPast != 0 {
			return fail(ErrCorrupt, "stored block past the end of the device (size %d)", d.dev.Size)
		}
	}
	dup, delta := d.seen.add(uint32(c))
	if dup {
		return fail(ErrCorrupt, "duplicate cluster")
	}
	r.pages += delta
	if r.pages > maxPartialPages {
		return fail(ErrUnsupported, "too many clusters out of order to track")
	}
	return nil
}

// maxMissingRanges bounds the ranges MissingClusters reports per device.
const maxMissingRanges = 16

// MissingRanges lists clusters of one device that the archive lacks.
type MissingRanges struct {
	Device Device
	Ranges []Range // the first few missing ranges, ascending
	Total  int64   // number of missing clusters
}

// MissingClusters returns, for every disk with clusters not yet seen, which
// ones. After Next has returned io.EOF or ErrIncomplete it describes the
// whole archive.
func (r *Reader) MissingClusters() []MissingRanges {
	var out []MissingRanges
	for _, d := range r.devs {
		if d == nil || d.vmstate {
			continue
		}
		if ranges, total := d.seen.missing(d.dev.Clusters(), maxMissingRanges); total > 0 {
			out = append(out, MissingRanges{Device: d.dev, Ranges: ranges, Total: total})
		}
	}
	return out
}

func (r *Reader) finish() error {
	miss := r.MissingClusters()
	if len(miss) == 0 || r.salvage {
		return io.EOF
	}
	var parts []string
	for _, m := range miss {
		var rs []string
		listed := int64(0)
		for _, x := range m.Ranges {
			listed += x.Last - x.First + 1
			if x.First == x.Last {
				rs = append(rs, fmt.Sprint(x.First))
			} else {
				rs = append(rs, fmt.Sprintf("%d-%d", x.First, x.Last))
			}
		}
		more := ""
		if listed < m.Total {
			more = ",…"
		}
		parts = append(parts, fmt.Sprintf("%s: %d of %d clusters missing (%s%s)",
			m.Device.Name, m.Total, m.Device.Clusters(), strings.Join(rs, ","), more))
	}
	return errAt(ErrIncomplete, r.off, "archive ends with clusters missing: %s", strings.Join(parts, "; "))
}

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
	pending bool     // r.buf holds the next extent header, found by resync
	marked  []marked // clusters the current extent marked as seen
}

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
	h, buf, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: r, hdr: h, off: int64(len(buf)), slots: make([]slotInfo, 0, SlotsPerExtent)}
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
// valid extent header.
func (r *Reader) readExtent() error {
	off := r.off
	err := r.readExtentOnce()
	if err == nil {
		return nil
	}
	if err == errEnd {
		return r.finish()
	}
	var fe *FormatError
	if !r.salvage || !errors.As(err, &fe) {
		return err
	}
	r.undo()
	r.slots, r.next = r.slots[:0], 0
	return r.resync(off, fe)
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

// resync scans forward from the damaged extent at off, byte by byte, for
// a valid extent header of this archive (inserted or lost bytes can move
// extents off the 512-byte grid), records the damaged range, and continues
// there. At the end of the input it records the damage up to there and
// ends.
func (r *Reader) resync(off int64, cause *FormatError) error {
	if r.off < off+ExtentHeaderSize { // at most a partial header was read
		r.damage = append(r.damage, Damage{Offset: off, Length: r.off - off, Err: cause})
		return r.finish()
	}
	// window holds input bytes from winOff on, starting after the failed
	// header's first byte.
	window := append(make([]byte, 0, 1<<20), r.buf[1:ExtentHeaderSize]...)
	winOff := off + 1
	if r.off > off+ExtentHeaderSize { // data was read too (a truncated extent): it is at EOF
		window, winOff = window[:0], r.off
	}
	chunk := make([]byte, 256<<10)
	for {
		for start := 0; ; {
			i := bytes.Index(window[start:], ExtentMagic[:])
			if i < 0 {
				break
			}
			i += start
			if len(window)-i < ExtentHeaderSize {
				break // need more input to check it
			}
			if r.plausibleHeader(window[i : i+ExtentHeaderSize]) {
				at := winOff + int64(i)
				r.damage = append(r.damage, Damage{Offset: off, Length: at - off, Err: cause})
				copy(r.buf[:ExtentHeaderSize], window[i:i+ExtentHeaderSize])
				rest := bytes.Clone(window[i+ExtentHeaderSize:])
				r.r = io.MultiReader(bytes.NewReader(rest), r.r)
				r.off = at + ExtentHeaderSize
				r.pending = true
				return r.readExtent()
			}
			start = i + 1
		}
		// Keep the last bytes that might start a header; read more.
		if keep := ExtentHeaderSize - 1; len(window) > keep {
			winOff += int64(len(window) - keep)
			window = append(window[:0], window[len(window)-keep:]...)
		}
		n, err := io.ReadFull(r.r, chunk)
		r.off += int64(n)
		window = append(window, chunk[:n]...)
		if err != nil && n == 0 || err != nil && err != io.ErrUnexpectedEOF {
			r.damage = append(r.damage, Damage{Offset: off, Length: r.off - off, Err: cause})
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return r.finish()
			}
			return fmt.Errorf("vma: reading at byte offset %d: %w", r.off, err)
		}
	}
}

// plausibleHeader reports whether hdr is an extent header of this archive
// with a valid MD5 and consistent block count.
func (r *Reader) plausibleHeader(hdr []byte) bool {
	if !bytes.Equal(hdr[:4], ExtentMagic[:]) || !bytes.Equal(hdr[extOffUUID:extOffUUID+16], r.hdr.UUID[:]) {
		return false
	}
	var stored [16]byte
	copy(stored[:], hdr[extOffMD5:])
	clear(hdr[extOffMD5 : extOffMD5+16])
	sum := md5.Sum(hdr)
	copy(hdr[extOffMD5:], stored[:])
	return sum == stored
}

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

// Damaged returns the ranges salvage mode skipped so far.
func (r *Reader) Damaged() []Damage { return r.damage }

// readExtentOnce reads and checks one extent; errEnd at a clean end.
func (r *Reader) readExtentOnce() error {
	r.slots, r.next = r.slots[:0], 0
	r.marked = r.marked[:0]
	off := r.off
	if r.buf == nil {
		r.buf = make([]byte, ExtentHeaderSize, MaxExtentSize)
	}
	hdr := r.buf[:ExtentHeaderSize]
	if r.pending { // resync found this header already
		r.pending = false
		off -= ExtentHeaderSize
	} else {
		n, err := io.ReadFull(r.r, hdr)
		r.off += int64(n)
		switch {
		case err == io.EOF:
			return errEnd
		case err == io.ErrUnexpectedEOF:
			return errAt(ErrCorrupt, off, "truncated extent header: %d of %d bytes after the last extent", n, ExtentHeaderSize)
		case err != nil:
			return fmt.Errorf("vma: reading extent at byte offset %d: %w", off, err)
		}
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

	n := count * BlockSize
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
		got, err := io.ReadFull(r.r, r.buf[ExtentHeaderSize:])
		r.off += int64(got)
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return errAt(ErrCorrupt, off, "extent %d: truncated: %d of %d data bytes", r.nExt, got, n)
			}
			return fmt.Errorf("vma: reading extent %d at byte offset %d: %w", r.nExt, off, err)
		}
	}
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

package vhdx

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"

	"github.com/vmaconv/vmaconv/format"
)

// header is a VHDX header ([MS-VHDX] 2.2.2).
type header struct {
	seq        uint64
	fileWrite  guid
	dataWrite  guid
	log        guid
	logVersion uint16
	version    uint16
	logLength  uint32
	logOffset  uint64
}

// region is a range of the file that holds a structure, for the overlap
// checks.
type region struct {
	name        string
	off, length uint64
}

// overlaps reports whether [off, off+n) overlaps r, as QEMU's
// vhdx_region_check decides it.
func (r region) overlaps(off, n uint64) bool {
	return !(off >= r.off+r.length || off+n <= r.off)
}

// layout is what the structures of a VHDX file say, checked.
type layout struct {
	r        io.ReaderAt // the file, through the replayed log if it has one
	fileSize int64       // after replaying the log
	head     header      // the current header
	headAt   int64       // its offset
	replayed int         // log entries replayed in memory
	creator  string

	regions []region // the log, the BAT, the metadata region, other regions
	bat     region
	meta    region

	blockSize  int64
	fixed      bool // LeaveBlockAllocated
	hasParent  bool
	size       int64 // virtual size, as read: whole logical sectors
	rawSize    uint64
	logical    int64
	physical   int64
	page83     guid
	locator    *locator
	chunkRatio int64 // payload blocks per sector bitmap block
	blocks     int64 // payload blocks
	entries    int64 // BAT entries
}

// sectorBits returns log2 of the logical sector size.
func (l *layout) sectorBits() uint { return uint(bits.TrailingZeros64(uint64(l.logical))) }

// batIndex returns the BAT entry of payload block b: the entries of a
// chunk's payload blocks are followed by its sector bitmap's.
func (l *layout) batIndex(b int64) int64 { return b + b/l.chunkRatio }

// parse reads and checks the structures of the VHDX file r of size
// bytes: the file identifier, the headers, the log (replayed in memory
// through an overlay when it holds entries to replay), the region table
// and the metadata. It reads nothing in proportion to a field's value
// but the log and the parent locator, both bounded.
func parse(r io.ReaderAt, size int64) (*layout, error) {
	l := &layout{r: r, fileSize: size}
	id := make([]byte, 8+512)
	if err := readAt(r, size, id, 0); err != nil {
		return nil, fmt.Errorf("vhdx: reading the file identifier: %w", err)
	}
	if !bytes.Equal(id[:8], Magic[:]) {
		return nil, fmt.Errorf("vhdx: %w: not a VHDX file (signature %q)", format.ErrUnknownFormat, id[:8])
	}
	l.creator = utf16le(id[8:])
	if err := l.readHeaders(); err != nil {
		return nil, err
	}
	if err := l.readLog(); err != nil {
		return nil, err
	}
	if err := l.readRegions(); err != nil {
		return nil, err
	}
	if err := l.readMetadata(); err != nil {
		return nil, err
	}
	return l, nil
}

// readHeaders chooses the current header as QEMU does: the valid one, or
// of two valid ones the one with the larger sequence number (two with the
// same number must be identical, as Disk2VHD writes them).
func (l *layout) readHeaders() error {
	var raw [2][]byte
	var hs [2]header
	var errs [2]error
	for i, at := range []int64{header1Offset, header2Offset} {
		b := make([]byte, headerBytes)
		if err := readAt(l.r, l.fileSize, b, at); err != nil {
			return fmt.Errorf("vhdx: reading header %d at %#x: %w", i+1, at, err)
		}
		raw[i] = b
		hs[i], errs[i] = decodeHeader(b)
	}
	switch {
	case errs[0] != nil && errs[1] != nil:
		return corrupt("no valid header: header 1 at %#x: %v; header 2 at %#x: %v", header1Offset, errs[0], header2Offset, errs[1])
	case errs[1] != nil || errs[0] == nil && hs[0].seq > hs[1].seq:
		l.head, l.headAt = hs[0], header1Offset
	case errs[0] != nil || hs[1].seq > hs[0].seq:
		l.head, l.headAt = hs[1], header2Offset
	case bytes.Equal(raw[0][:80], raw[1][:80]):
		l.head, l.headAt = hs[0], header1Offset
	default:
		return corrupt("headers 1 (at %#x) and 2 (at %#x) have the same sequence number %d but differ", header1Offset, header2Offset, hs[0].seq)
	}
	return nil
}

// decodeHeader checks and decodes a header's 4 KiB.
func decodeHeader(b []byte) (header, error) {
	le := binary.LittleEndian
	if want, got := le.Uint32(b[4:]), checksum(b, 4); want != got {
		return header{}, fmt.Errorf("checksum %#08x, computed %#08x", want, got)
	}
	if !bytes.Equal(b[:4], []byte("head")) {
		return header{}, fmt.Errorf("signature %q, want \"head\"", b[:4])
	}
	h := header{
		seq:        le.Uint64(b[8:]),
		logVersion: le.Uint16(b[64:]), version: le.Uint16(b[66:]),
		logLength: le.Uint32(b[68:]), logOffset: le.Uint64(b[72:]),
	}
	copy(h.fileWrite[:], b[16:])
	copy(h.dataWrite[:], b[32:])
	copy(h.log[:], b[48:])
	if h.version != 1 {
		return header{}, fmt.Errorf("version %d, want 1", h.version)
	}
	return h, nil
}

// encodeHeader returns h as 4 KiB with its checksum.
func encodeHeader(h header) []byte {
	le := binary.LittleEndian
	b := make([]byte, headerBytes)
	copy(b, "head")
	le.PutUint64(b[8:], h.seq)
	copy(b[16:], h.fileWrite[:])
	copy(b[32:], h.dataWrite[:])
	copy(b[48:], h.log[:])
	le.PutUint16(b[64:], h.logVersion)
	le.PutUint16(b[66:], h.version)
	le.PutUint32(b[68:], h.logLength)
	le.PutUint64(b[72:], h.logOffset)
	le.PutUint32(b[4:], checksum(b, 4))
	return b
}

// headerName names the current header in messages.
func (l *layout) headerName() string {
	if l.headAt == header1Offset {
		return fmt.Sprintf("header 1 (at %#x)", header1Offset)
	}
	return fmt.Sprintf("header 2 (at %#x)", header2Offset)
}

// readLog checks the current header's log fields as QEMU does and, where
// the log holds a sequence of entries to replay, replays it in memory:
// l.r becomes the file as it reads after the replay.
func (l *layout) readLog() error {
	h := l.head
	switch {
	case h.logOffset < headerSection || h.logOffset%mib != 0:
		return corrupt("%s: LogOffset %#x: want a multiple of 1 MiB past the header section", l.headerName(), h.logOffset)
	case h.logOffset > 1<<62:
		return corrupt("%s: LogOffset %#x out of range", l.headerName(), h.logOffset)
	case h.logVersion != 0:
		return corrupt("%s: LogVersion %d, want 0", l.headerName(), h.logVersion)
	}
	l.regions = append(l.regions, region{"the log", h.logOffset, uint64(h.logLength)})
	if h.log.isZero() || h.logLength == 0 {
		return nil
	}
	if h.logLength%mib != 0 {
		return corrupt("%s: LogLength %d: want a multiple of 1 MiB", l.headerName(), h.logLength)
	}
	lg := &logReader{r: l.r, fileSize: l.fileSize, off: int64(h.logOffset), length: int64(h.logLength), guid: h.log}
	seq, err := lg.search()
	if err != nil || seq.count == 0 {
		return err
	}
	ov, err := lg.replay(seq)
	if err != nil {
		return err
	}
	l.r, l.fileSize, l.replayed = ov, ov.size, seq.count
	return nil
}

// readRegions reads the region table (its copy when the first is
// damaged) and finds the BAT and the metadata region, refusing regions
// that overlap each other or the log, and required regions it does not
// know.
func (l *layout) readRegions() error {
	var first error
	for _, at := range []int64{region1Offset, region2Offset} {
		regions, err := l.readRegionTable(at)
		if err == nil {
			return l.useRegions(regions, at)
		}
		if first != nil {
			return corrupt("region table at %#x: %v; its copy at %#x: %v", region1Offset, first, region2Offset, err)
		}
		first = err
	}
	return nil
}

type regionEntry struct {
	id       guid
	off      uint64
	length   uint32
	required bool
}

func (l *layout) readRegionTable(at int64) ([]regionEntry, error) {
	b := make([]byte, regionTableBytes)
	if err := readAt(l.r, l.fileSize, b, at); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if want, got := le.Uint32(b[4:]), checksum(b, 4); want != got {
		return nil, fmt.Errorf("checksum %#08x, computed %#08x", want, got)
	}
	if !bytes.Equal(b[:4], []byte("regi")) {
		return nil, fmt.Errorf("signature %q, want \"regi\"", b[:4])
	}
	n := le.Uint32(b[8:])
	if n > maxRegions {
		return nil, fmt.Errorf("EntryCount %d: at most %d", n, maxRegions)
	}
	es := make([]regionEntry, n)
	for i := range es {
		e := b[16+32*i:]
		copy(es[i].id[:], e)
		es[i].off, es[i].length, es[i].required = le.Uint64(e[16:]), le.Uint32(e[24:]), le.Uint32(e[28:])&1 != 0
	}
	return es, nil
}

func (l *layout) useRegions(es []regionEntry, at int64) error {
	var haveBAT, haveMeta bool
	for i, e := range es {
		where := fmt.Sprintf("region table at %#x: entry %d (%s at %#x, %d bytes)", at, i, e.id, e.off, e.length)
		if e.off > 1<<62 {
			return corrupt("%s: FileOffset out of range", where)
		}
		r := region{name: "region " + e.id.String(), off: e.off, length: uint64(e.length)}
		switch e.id {
		case batGUID:
			r.name = "the BAT"
		case metadataGUID:
			r.name = "the metadata region"
		}
		for _, o := range l.regions {
			if o.overlaps(r.off, r.length) {
				return corrupt("%s: %s overlaps %s (at %#x, %d bytes)", where, r.name, o.name, o.off, o.length)
			}
		}
		l.regions = append(l.regions, r)
		switch e.id {
		case batGUID:
			if haveBAT {
				return corrupt("%s: a second BAT", where)
			}
			haveBAT, l.bat = true, r
		case metadataGUID:
			if haveMeta {
				return corrupt("%s: a second metadata region", where)
			}
			haveMeta, l.meta = true, r
		default:
			if e.required {
				return fmt.Errorf("%w: %s: a required region this driver does not know", ErrUnsupported, where)
			}
		}
	}
	switch {
	case !haveBAT:
		return corrupt("region table at %#x: no BAT region", at)
	case !haveMeta:
		return corrupt("region table at %#x: no metadata region", at)
	}
	return nil
}

// metaEntry is an entry of the metadata table.
type metaEntry struct {
	off, length uint32
	at          int64 // the entry's place in the file, for messages
}

// readMetadata reads the metadata table and its items, and works out the
// BAT's shape.
func (l *layout) readMetadata() error {
	b := make([]byte, metaTableBytes)
	if err := readAt(l.r, l.fileSize, b, int64(l.meta.off)); err != nil {
		return fmt.Errorf("vhdx: reading the metadata table at %#x: %w", l.meta.off, err)
	}
	le := binary.LittleEndian
	if !bytes.Equal(b[:8], []byte("metadata")) {
		return corrupt("metadata table at %#x: signature %q, want \"metadata\"", l.meta.off, b[:8])
	}
	n := int(le.Uint16(b[10:]))
	if n > maxMetaEntries {
		return corrupt("metadata table at %#x: EntryCount %d: at most %d", l.meta.off, n, maxMetaEntries)
	}
	known := map[guid]*metaEntry{
		fileParamsGUID: nil, virtualSizeGUID: nil, page83GUID: nil,
		logicalSectorGUID: nil, physicalSectorGUID: nil, parentLocatorGUID: nil,
	}
	for i := range n {
		e := b[32+32*i:]
		var id guid
		copy(id[:], e)
		at := int64(l.meta.off) + 32 + 32*int64(i)
		prev, ok := known[id]
		if !ok {
			if le.Uint32(e[24:])&4 != 0 {
				return fmt.Errorf("%w: metadata entry %d at %#x: item %s is required and this driver does not know it", ErrUnsupported, i, at, id)
			}
			continue
		}
		if prev != nil {
			return corrupt("metadata entry %d at %#x: a second %s item", i, at, itemName(id))
		}
		known[id] = &metaEntry{off: le.Uint32(e[16:]), length: le.Uint32(e[20:]), at: at}
	}
	for _, id := range []guid{fileParamsGUID, virtualSizeGUID, page83GUID, logicalSectorGUID, physicalSectorGUID} {
		if known[id] == nil {
			return corrupt("metadata table at %#x: no %s item", l.meta.off, itemName(id))
		}
	}
	item := func(id guid, want int) ([]byte, error) {
		e := known[id]
		if int64(e.length) < int64(want) || e.length > maxMetaItem || uint64(e.off)+uint64(e.length) > l.meta.length {
			return nil, corrupt("metadata entry at %#x: %s item at offset %#x, %d bytes: want %d bytes within the %d-byte metadata region",
				e.at, itemName(id), e.off, e.length, want, l.meta.length)
		}
		v := make([]byte, max(want, int(e.length)))
		if err := readAt(l.r, l.fileSize, v, int64(l.meta.off)+int64(e.off)); err != nil {
			return nil, fmt.Errorf("vhdx: reading the %s item at %#x: %w", itemName(id), int64(l.meta.off)+int64(e.off), err)
		}
		return v, nil
	}
	v, err := item(fileParamsGUID, 8)
	if err != nil {
		return err
	}
	itemAt := func(id guid) int64 { return int64(l.meta.off) + int64(known[id].off) }
	l.blockSize = int64(le.Uint32(v))
	flags := le.Uint32(v[4:])
	l.fixed, l.hasParent = flags&1 != 0, flags&2 != 0
	if bs := l.blockSize; bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return corrupt("file parameters at %#x: BlockSize %d: want a power of two from 1 MiB to 256 MiB", itemAt(fileParamsGUID), bs)
	}
	if v, err = item(virtualSizeGUID, 8); err != nil {
		return err
	}
	l.rawSize = le.Uint64(v)
	if l.rawSize > maxDiskSize {
		return corrupt("virtual disk size at %#x: %d bytes: more than 64 TiB, the format's largest disk", itemAt(virtualSizeGUID), l.rawSize)
	}
	if v, err = item(page83GUID, 16); err != nil {
		return err
	}
	copy(l.page83[:], v)
	for _, s := range []struct {
		id  guid
		dst *int64
	}{{logicalSectorGUID, &l.logical}, {physicalSectorGUID, &l.physical}} {
		if v, err = item(s.id, 4); err != nil {
			return err
		}
		*s.dst = int64(le.Uint32(v))
		if *s.dst != 512 && *s.dst != 4096 {
			return corrupt("%s at %#x: %d: want 512 or 4096", itemName(s.id), itemAt(s.id), *s.dst)
		}
	}
	// The disk is whole logical sectors, as QEMU reads it.
	l.size = int64(l.rawSize) &^ (l.logical - 1)
	l.chunkRatio = sectorsPerChunk * l.logical / l.blockSize
	l.blocks = (l.size + l.blockSize - 1) / l.blockSize
	if l.hasParent {
		if known[parentLocatorGUID] == nil {
			return corrupt("file parameters at %#x: HasParent is set, and there is no parent locator", itemAt(fileParamsGUID))
		}
		e := known[parentLocatorGUID]
		if v, err = item(parentLocatorGUID, 20); err != nil {
			return err
		}
		if l.locator, err = parseLocator(v[:e.length], itemAt(parentLocatorGUID)); err != nil {
			return err
		}
		l.entries = (l.blocks + l.chunkRatio - 1) / l.chunkRatio * (l.chunkRatio + 1)
	} else if l.blocks > 0 {
		l.entries = l.blocks + (l.blocks-1)/l.chunkRatio
	}
	if uint64(l.entries)*8 > l.bat.length {
		return corrupt("the BAT at %#x: %d bytes hold %d entries; the disk (%d bytes in %d-byte blocks) needs %d",
			l.bat.off, l.bat.length, l.bat.length/8, l.size, l.blockSize, l.entries)
	}
	return nil
}

// itemName names a metadata item for messages.
func itemName(id guid) string {
	switch id {
	case fileParamsGUID:
		return "file parameters"
	case virtualSizeGUID:
		return "virtual disk size"
	case page83GUID:
		return "page 83 data"
	case logicalSectorGUID:
		return "logical sector size"
	case physicalSectorGUID:
		return "physical sector size"
	case parentLocatorGUID:
		return "parent locator"
	}
	return id.String()
}

// locator is a parent locator ([MS-VHDX] 2.6.2.6): its type and its
// key-value pairs, in order.
type locator struct {
	typ    guid
	keys   []string
	values []string
}

// get returns the value of key, or "".
func (p *locator) get(key string) string {
	for i, k := range p.keys {
		if k == key {
			return p.values[i]
		}
	}
	return ""
}

// parseLocator decodes a parent locator item b, found at at.
func parseLocator(b []byte, at int64) (*locator, error) {
	le := binary.LittleEndian
	p := &locator{}
	copy(p.typ[:], b)
	n := int(le.Uint16(b[18:]))
	if 20+12*n > len(b) {
		return nil, corrupt("parent locator at %#x: KeyValueCount %d: the entries run past the item's %d bytes", at, n, len(b))
	}
	for i := range n {
		e := b[20+12*i:]
		ko, vo := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
		kl, vl := uint64(le.Uint16(e[8:])), uint64(le.Uint16(e[10:]))
		if kl == 0 || vl == 0 || ko+kl > uint64(len(b)) || vo+vl > uint64(len(b)) {
			return nil, corrupt("parent locator at %#x: entry %d: key at %d (%d bytes) or value at %d (%d bytes) outside the item's %d bytes",
				at, i, ko, kl, vo, vl, len(b))
		}
		k, v := utf16le(b[ko:ko+kl]), utf16le(b[vo:vo+vl])
		if slices.Contains(p.keys, k) {
			return nil, corrupt("parent locator at %#x: entry %d: key %q given twice", at, i, k)
		}
		p.keys, p.values = append(p.keys, k), append(p.values, v)
	}
	return p, nil
}

package ntfs

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"unicode/utf16"

	"github.com/vmaconv/vmaconv/guest"
)

// Limits on what one record or file may hold, so that a hostile image
// costs bounded memory.
const (
	recordCacheSize = 256      // parsed MFT records kept
	recordCacheMax  = 16 << 20 // bytes of records kept
	maxExtBytes     = 4 << 20  // bytes of the extension records of one file
	maxAttrs        = 8192     // attributes of one file
	maxAttrList     = 1 << 20  // bytes of one $ATTRIBUTE_LIST
	maxRuns         = 1 << 18  // runs of one stream
)

// Attribute types.
const (
	atStandardInfo = 0x10
	atAttrList     = 0x20
	atFileName     = 0x30
	atData         = 0x80
	atIndexRoot    = 0x90
	atIndexAlloc   = 0xA0
	atBitmap       = 0xB0
	atReparse      = 0xC0
	atEnd          = 0xFFFFFFFF
)

// Attribute flags.
const (
	afCompressed = 0x0001
	afEncrypted  = 0x4000
	afSparse     = 0x8000
)

// attr is one attribute (or, for a non-resident attribute split over
// several records, one extent of it).
type attr struct {
	typ      uint32
	name     string
	flags    uint16
	nonres   bool
	value    []byte // resident
	startVCN int64  // non-resident: the extent's first and last VCN
	lastVCN  int64
	mapping  []byte // non-resident: the mapping pairs (run list)
	compUnit uint8
	// allocSize, dataSize and initSize are valid in the extent at VCN 0.
	allocSize, dataSize, initSize int64
}

// record is a parsed MFT record, with the attributes of its extension
// records when it has an attribute list. Immutable once built.
type record struct {
	num   uint64
	seq   uint16
	flags uint16 // 1: in use, 2: directory
	base  uint64 // the base record's number, 0 for a base record
	attrs []attr
	bytes int64 // of the record and its extension records
}

func (r *record) isDir() bool { return r.flags&2 != 0 }

// volume is an opened NTFS file system.
type volume struct {
	dev  io.ReaderAt
	size int64
	boot
	mft     *stream // $MFT's $DATA
	records int64   // records in the $MFT
	cache   recordCache
}

// recordCache is a small LRU of parsed records.
type recordCache struct {
	mu    sync.Mutex
	max   int
	bytes int64
	lru   *list.List
	m     map[uint64]*list.Element
}

func (c *recordCache) init(max int) {
	c.max, c.lru, c.m = max, list.New(), map[uint64]*list.Element{}
}

func (c *recordCache) get(n uint64) *record {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[n]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*record)
	}
	return nil
}

func (c *recordCache) put(r *record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[r.num]; ok || r.bytes > recordCacheMax/4 {
		return
	}
	c.m[r.num] = c.lru.PushFront(r)
	c.bytes += r.bytes
	for c.lru.Len() > c.max || c.bytes > recordCacheMax {
		e := c.lru.Back()
		c.lru.Remove(e)
		c.bytes -= e.Value.(*record).bytes
		delete(c.m, e.Value.(*record).num)
	}
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("ntfs: "+format+": %w", append(args, guest.ErrCorrupt)...)
}

// fixup applies the update sequence array of a multi-sector record (FILE
// or INDX) in place.
func fixup(b []byte, what string) error {
	if len(b) < 512 || len(b)%512 != 0 {
		return corrupt("%s: size %d is not a multiple of 512", what, len(b))
	}
	off := int(binary.LittleEndian.Uint16(b[4:]))
	cnt := int(binary.LittleEndian.Uint16(b[6:]))
	if cnt != len(b)/512+1 || off < 8 || off+2*cnt > len(b) {
		return corrupt("%s: update sequence array of %d at %d", what, cnt, off)
	}
	usn := b[off : off+2]
	for i := 1; i < cnt; i++ {
		p := i*512 - 2
		if b[p] != usn[0] || b[p+1] != usn[1] {
			return corrupt("%s: update sequence mismatch in sector %d (torn write)", what, i-1)
		}
		b[p], b[p+1] = b[off+2*i], b[off+2*i+1]
	}
	return nil
}

func utf16String(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// parseRecord parses the fixed-up MFT record num from b (recordSize bytes).
func parseRecord(num uint64, b []byte) (*record, error) {
	what := fmt.Sprintf("MFT record %d", num)
	if string(b[:4]) != "FILE" {
		if string(b[:4]) == "BAAD" {
			return nil, corrupt("%s: marked bad (BAAD)", what)
		}
		return nil, corrupt("%s: bad magic %q", what, b[:4])
	}
	if err := fixup(b, what); err != nil {
		return nil, err
	}
	r := &record{
		num:   num,
		bytes: int64(len(b)),
		seq:   binary.LittleEndian.Uint16(b[0x10:]),
		flags: binary.LittleEndian.Uint16(b[0x16:]),
		base:  binary.LittleEndian.Uint64(b[0x20:]) & (1<<48 - 1),
	}
	if r.flags&1 == 0 {
		return nil, corrupt("%s: not in use", what)
	}
	used := int(binary.LittleEndian.Uint32(b[0x18:]))
	if used > len(b) || used < 0x30 {
		return nil, corrupt("%s: %d bytes in use of %d", what, used, len(b))
	}
	off := int(binary.LittleEndian.Uint16(b[0x14:]))
	if off < 0x28 || off >= used {
		return nil, corrupt("%s: attributes at %d of %d", what, off, used)
	}
	for {
		if off+4 > used {
			return nil, corrupt("%s: attribute list runs past the end", what)
		}
		typ := binary.LittleEndian.Uint32(b[off:])
		if typ == atEnd {
			break
		}
		if off+0x18 > used {
			return nil, corrupt("%s: attribute at %d runs past the end", what, off)
		}
		ln := int(binary.LittleEndian.Uint32(b[off+4:]))
		if ln < 0x18 || ln > used-off {
			return nil, corrupt("%s: attribute %#x at %d: length %d", what, typ, off, ln)
		}
		a := b[off : off+ln]
		at := attr{typ: typ, nonres: a[8] != 0, flags: binary.LittleEndian.Uint16(a[0xC:])}
		nameLen, nameOff := int(a[9]), int(binary.LittleEndian.Uint16(a[0xA:]))
		if nameLen > 0 {
			if nameOff+2*nameLen > ln {
				return nil, corrupt("%s: attribute %#x at %d: name past its end", what, typ, off)
			}
			at.name = utf16String(a[nameOff : nameOff+2*nameLen])
		}
		if !at.nonres {
			vl := int(binary.LittleEndian.Uint32(a[0x10:]))
			vo := int(binary.LittleEndian.Uint16(a[0x14:]))
			if vl < 0 || vo > ln || vl > ln-vo {
				return nil, corrupt("%s: attribute %#x at %d: value of %d at %d past its end (%d)", what, typ, off, vl, vo, ln)
			}
			at.value = a[vo : vo+vl : vo+vl]
		} else {
			if ln < 0x40 {
				return nil, corrupt("%s: non-resident attribute %#x at %d: length %d", what, typ, off, ln)
			}
			at.startVCN = int64(binary.LittleEndian.Uint64(a[0x10:]))
			at.lastVCN = int64(binary.LittleEndian.Uint64(a[0x18:]))
			mo := int(binary.LittleEndian.Uint16(a[0x20:]))
			at.compUnit = a[0x22]
			at.allocSize = int64(binary.LittleEndian.Uint64(a[0x28:]))
			at.dataSize = int64(binary.LittleEndian.Uint64(a[0x30:]))
			at.initSize = int64(binary.LittleEndian.Uint64(a[0x38:]))
			if at.startVCN < 0 || at.startVCN > maxVCN || at.lastVCN < at.startVCN-1 || at.lastVCN > maxVCN {
				return nil, corrupt("%s: attribute %#x at %d: VCNs %d to %d", what, typ, off, at.startVCN, at.lastVCN)
			}
			if mo < 0x40 || mo > ln {
				return nil, corrupt("%s: attribute %#x at %d: run list at %d of %d", what, typ, off, mo, ln)
			}
			if at.startVCN == 0 && (at.dataSize < 0 || at.initSize < 0 || at.allocSize < 0 || at.dataSize > maxSize) {
				return nil, corrupt("%s: attribute %#x at %d: size %d (initialized %d)", what, typ, off, at.dataSize, at.initSize)
			}
			at.mapping = a[mo:ln:ln]
		}
		r.attrs = append(r.attrs, at)
		off += ln
	}
	return r, nil
}

// rawRecord reads MFT record num, fixed up, from the $MFT.
func (v *volume) rawRecord(num uint64) (*record, error) {
	if num >= uint64(v.records) {
		return nil, corrupt("MFT record %d past the end of the $MFT (%d records)", num, v.records)
	}
	b := make([]byte, v.recordSize)
	if _, err := v.mft.readFull(b, int64(num)*v.recordSize); err != nil {
		return nil, fmt.Errorf("ntfs: MFT record %d: %w", num, err)
	}
	return parseRecord(num, b)
}

// record returns the base MFT record num with its extension records'
// attributes.
func (v *volume) record(num uint64) (*record, error) {
	if r := v.cache.get(num); r != nil {
		return r, nil
	}
	r, err := v.rawRecord(num)
	if err != nil {
		return nil, err
	}
	if r.base != 0 {
		return nil, corrupt("MFT record %d: an extension record of %d, not a file", num, r.base)
	}
	if err := v.expand(r); err != nil {
		return nil, err
	}
	v.cache.put(r)
	return r, nil
}

// expand adds to r the attributes of the extension records its attribute
// list names.
func (v *volume) expand(r *record) error {
	var list *attr
	for i := range r.attrs {
		if r.attrs[i].typ == atAttrList {
			list = &r.attrs[i]
			break
		}
	}
	if list == nil {
		return nil
	}
	what := fmt.Sprintf("MFT record %d: $ATTRIBUTE_LIST", r.num)
	var b []byte
	if !list.nonres {
		b = list.value
	} else {
		s, err := v.newStream(what, []*attr{list})
		if err != nil {
			return err
		}
		if s.size > maxAttrList {
			return corrupt("%s: %d bytes > %d", what, s.size, maxAttrList)
		}
		b = make([]byte, s.size)
		if _, err := s.readFull(b, 0); err != nil {
			return err
		}
	}
	seen := map[uint64]bool{r.num: true}
	var ext []uint64
	for off := 0; off+0x1A <= len(b); {
		ln := int(binary.LittleEndian.Uint16(b[off+4:]))
		if ln < 0x1A || ln > len(b)-off {
			return corrupt("%s: entry at %d of length %d", what, off, ln)
		}
		ref := binary.LittleEndian.Uint64(b[off+0x10:]) & (1<<48 - 1)
		if !seen[ref] {
			seen[ref] = true
			if int64(len(ext)+1)*v.recordSize > maxExtBytes {
				return corrupt("%s: more than %d extension records", what, maxExtBytes/v.recordSize)
			}
			ext = append(ext, ref)
		}
		off += ln
	}
	for _, n := range ext {
		e, err := v.rawRecord(n)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		r.bytes += e.bytes
		if e.base != r.num {
			return corrupt("%s: extension record %d belongs to record %d", what, n, e.base)
		}
		for _, a := range e.attrs {
			if a.typ == atAttrList {
				continue
			}
			if len(r.attrs) >= maxAttrs {
				return corrupt("%s: more than %d attributes", what, maxAttrs)
			}
			r.attrs = append(r.attrs, a)
		}
	}
	return nil
}

// extents returns the attributes of type typ and name name (all the
// extents of one non-resident attribute).
func (r *record) extents(typ uint32, name string) []*attr {
	var out []*attr
	for i := range r.attrs {
		if a := &r.attrs[i]; a.typ == typ && a.name == name {
			out = append(out, a)
		}
	}
	return out
}

// first returns the attribute of type typ and name name that starts it
// (resident, or at VCN 0), or nil.
func (r *record) first(typ uint32, name string) *attr {
	for i := range r.attrs {
		if a := &r.attrs[i]; a.typ == typ && a.name == name && (!a.nonres || a.startVCN == 0) {
			return a
		}
	}
	return nil
}

// size returns an attribute's data size.
func (a *attr) size() int64 {
	if !a.nonres {
		return int64(len(a.value))
	}
	return a.dataSize
}

// bootstrap reads the $MFT's first record from the disk, builds the $MFT
// stream from it, and then from its attribute list if it has one.
func (v *volume) bootstrap() error {
	b := make([]byte, v.recordSize)
	off := v.mftLCN * v.clusterSize
	if n, err := v.dev.ReadAt(b, off); n < len(b) {
		return corrupt("$MFT record 0 at byte %d: %v", off, err)
	}
	r0, err := parseRecord(0, b)
	if err != nil {
		return err
	}
	if err := v.setMFT(r0); err != nil {
		return err
	}
	if r0.first(atAttrList, "") != nil {
		if err := v.expand(r0); err != nil {
			return err
		}
		if err := v.setMFT(r0); err != nil {
			return err
		}
	}
	if v.records <= rootRecord {
		return corrupt("$MFT: %d records, no root directory", v.records)
	}
	v.cache.put(r0)
	return nil
}

func (v *volume) setMFT(r0 *record) error {
	ext := r0.extents(atData, "")
	s, err := v.newStream("$MFT", ext)
	if err != nil {
		return err
	}
	if s.resident != nil || s.compressed {
		return corrupt("$MFT: resident or compressed")
	}
	if s.size > v.clusters*v.clusterSize {
		return corrupt("$MFT: %d bytes, larger than the volume", s.size)
	}
	v.mft = s
	v.records = min(s.init, s.mapped*v.clusterSize, 1<<40) / v.recordSize
	return nil
}

package vmdk

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zlib"

	"github.com/vmaconv/vmaconv/format"
)

// Fields of a hosted sparse extent header (VMDK4).
const (
	flagNLDetect  = 1 << 0  // the header's newline detection bytes are valid
	flagRGD       = 1 << 1  // a redundant grain directory exists
	flagZeroGrain = 1 << 2  // grain table entry 1 is a zeroed grain (version 2 and later)
	flagCompress  = 1 << 16 // grains are compressed
	flagMarker    = 1 << 17 // grains and metadata have markers

	compressDeflate = 1          // compressAlgorithm: zlib streams
	gdAtEnd         = ^uint64(0) // gdOffset: the footer holds the real one

	zeroedGTE = 1 // a zeroed grain, where flagZeroGrain is set

	// Marker types (the marker's type, after a size of 0).
	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3

	sector = 512
)

// Limits QEMU applies when it opens an extent (vmdk_add_extent,
// vmdk_open_vmdk4), and ours.
const (
	maxGrainSectors = 0x200000 // a grain of 1 GiB
	maxGTEs         = 512      // entries per grain table (VMDK4)
	cowdGTEs        = 4096     // entries per grain table (COWD)
	maxGDEntries    = 32 << 20 // QEMU's L1 size limit
	// maxCapacity keeps a disk's bytes within an int64, with room to add
	// extents up.
	maxCapacity = 1 << 53 // sectors
	// maxCompressedGrain bounds the grains of a compressed extent, each
	// decompressed whole into memory (VMware's are 64 KiB).
	maxCompressedGrain = 2 << 20
	// maxDescriptor is the most of a descriptor QEMU reads.
	maxDescriptor = 1<<20 - 1
)

// Errors.
var (
	// ErrCorrupt means the image is inconsistent: a field out of range, a
	// table or a grain outside its file.
	ErrCorrupt = errors.New("vmdk: corrupt image")
	// ErrUnsupported means a valid-looking image of a kind this package
	// does not read.
	ErrUnsupported = errors.New("vmdk: unsupported image")
	// ErrExtentFile means an extent file named by a descriptor was refused
	// or could not be used.
	ErrExtentFile = errors.New("vmdk: extent file")
	// ErrParent means a parent image was refused or could not be used.
	ErrParent = errors.New("vmdk: parent image")
)

// header is what a sparse extent's header says.
type header struct {
	cowd        bool // an ESX sparse extent (COWD), else hosted (KDMV)
	version     uint32
	flags       uint32
	capacity    uint64 // sectors
	granularity uint64 // sectors per grain
	descOffset  uint64 // sectors
	descSize    uint64 // sectors
	gtes        uint32 // entries per grain table
	rgdOffset   uint64 // sectors
	gdOffset    uint64 // sectors
	grainOffset uint64 // sectors before the first grain (overHead)
	compression uint16
	gdEntries   uint64 // COWD: entries of the grain directory
	footer      bool   // the header came from the footer (gdOffset GD_AT_END)
}

func (h *header) compressed() bool { return !h.cowd && h.compression == compressDeflate }

// readHeader reads and checks a sparse extent's header as QEMU does when it
// opens one (vmdk_open_vmdk4, vmdk_open_vmfs_sparse, vmdk_add_extent), and
// more: every table it points to must lie within the file. A hosted
// extent whose header says gdOffset GD_AT_END is read from its footer.
func readHeader(r io.ReaderAt, fileSize int64) (*header, error) {
	var b [sector]byte
	if n, err := r.ReadAt(b[:], 0); n < len(b) {
		if n >= 4 && !bytes.Equal(b[:4], Magic[:]) && !bytes.Equal(b[:4], MagicCOWD[:]) {
			return nil, fmt.Errorf("%w: not a VMDK sparse extent (magic %q)", format.ErrUnknownFormat, b[:4])
		}
		return nil, fmt.Errorf("%w: header too short: %d bytes of 512: %v", ErrCorrupt, n, err)
	}
	le := binary.LittleEndian
	switch {
	case bytes.Equal(b[:4], MagicCOWD[:]):
		return readCOWD(b[:], fileSize)
	case !bytes.Equal(b[:4], Magic[:]):
		return nil, fmt.Errorf("%w: not a VMDK sparse extent (magic %q)", format.ErrUnknownFormat, b[:4])
	}
	h := parseVMDK4(b[:])
	if h.capacity == 0 && h.descOffset != 0 {
		return h, nil // a descriptor in a sparse file: the caller reads it
	}
	if h.gdOffset == gdAtEnd {
		// The footer takes precedence: its sector is the third last of the
		// file, between a footer marker and the end-of-stream marker.
		end := (fileSize + sector - 1) &^ (sector - 1)
		if end < 4*sector {
			return nil, fmt.Errorf("%w: gdOffset is GD_AT_END, but the file (%d bytes) has no room for a footer", ErrCorrupt, fileSize)
		}
		var f [3 * sector]byte
		if n, err := r.ReadAt(f[:], end-3*sector); n < int(fileSize-(end-3*sector)) {
			return nil, fmt.Errorf("vmdk: reading the footer at %#x: %w", end-3*sector, err)
		}
		marker, eos := f[:sector], f[2*sector:]
		switch {
		case le.Uint32(marker[8:]) != 0 || le.Uint32(marker[12:]) != markerFooter:
			return nil, fmt.Errorf("%w: gdOffset is GD_AT_END, but no footer marker at %#x", ErrCorrupt, end-3*sector)
		case !bytes.Equal(f[sector:sector+4], Magic[:]):
			return nil, fmt.Errorf("%w: footer at %#x: magic %q", ErrCorrupt, end-2*sector, f[sector:sector+4])
		case le.Uint64(eos) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != markerEOS:
			return nil, fmt.Errorf("%w: no end-of-stream marker at %#x, after the footer", ErrCorrupt, end-sector)
		}
		h = parseVMDK4(f[sector : 2*sector])
		h.footer = true
	}
	switch {
	case h.version > 3:
		return nil, fmt.Errorf("%w: version %d (QEMU reads 1 to 3)", ErrUnsupported, h.version)
	case h.gtes > maxGTEs:
		return nil, fmt.Errorf("%w: numGTEsPerGT %d: grain tables of at most %d entries", ErrCorrupt, h.gtes, maxGTEs)
	case h.granularity == 0 || h.granularity > maxGrainSectors:
		return nil, fmt.Errorf("%w: grainSize %d sectors: want 1 to %d", ErrCorrupt, h.granularity, maxGrainSectors)
	case h.gtes == 0:
		return nil, fmt.Errorf("%w: numGTEsPerGT is 0", ErrCorrupt)
	case h.capacity > maxCapacity:
		return nil, fmt.Errorf("%w: capacity %d sectors out of range", ErrCorrupt, h.capacity)
	case h.grainOffset > uint64(fileSize+sector-1)/sector:
		return nil, fmt.Errorf("%w: the file is truncated: overHead says the first grain is at %#x, the file has %#x bytes", ErrCorrupt, h.grainOffset*sector, fileSize)
	case h.compressed() && h.granularity*sector > maxCompressedGrain:
		return nil, fmt.Errorf("%w: compressed grains of %d bytes (at most %d)", ErrUnsupported, h.granularity*sector, maxCompressedGrain)
	}
	perGT := uint64(h.gtes) * h.granularity
	h.gdEntries = (h.capacity + perGT - 1) / perGT
	return h, checkGD(h, fileSize)
}

// parseVMDK4 decodes a hosted sparse extent header (b starts with its
// magic).
func parseVMDK4(b []byte) *header {
	le := binary.LittleEndian
	return &header{
		version: le.Uint32(b[4:]), flags: le.Uint32(b[8:]), capacity: le.Uint64(b[12:]),
		granularity: le.Uint64(b[20:]), descOffset: le.Uint64(b[28:]), descSize: le.Uint64(b[36:]),
		gtes: le.Uint32(b[44:]), rgdOffset: le.Uint64(b[48:]), gdOffset: le.Uint64(b[56:]),
		grainOffset: le.Uint64(b[64:]), compression: le.Uint16(b[77:]),
	}
}

// readCOWD decodes an ESX sparse extent header (VMDK3): its grain tables
// have 4096 entries, and the directory's length is in the header.
func readCOWD(b []byte, fileSize int64) (*header, error) {
	le := binary.LittleEndian
	h := &header{
		cowd: true, version: le.Uint32(b[4:]), flags: le.Uint32(b[8:]),
		capacity: uint64(le.Uint32(b[12:])), granularity: uint64(le.Uint32(b[16:])),
		gdOffset: uint64(le.Uint32(b[20:])), gdEntries: uint64(le.Uint32(b[24:])), gtes: cowdGTEs,
		grainOffset: 1,
	}
	switch {
	case h.granularity == 0 || h.granularity > maxGrainSectors:
		return nil, fmt.Errorf("%w: COWD granularity %d sectors: want 1 to %d", ErrCorrupt, h.granularity, maxGrainSectors)
	case h.gdEntries*cowdGTEs*h.granularity < h.capacity:
		return nil, fmt.Errorf("%w: COWD grain directory of %d entries maps less than the disk's %d sectors", ErrCorrupt, h.gdEntries, h.capacity)
	}
	return h, checkGD(h, fileSize)
}

// checkGD checks that the grain directory lies within the file.
func checkGD(h *header, fileSize int64) error {
	if h.gdEntries > maxGDEntries {
		return fmt.Errorf("%w: a grain directory of %d entries (QEMU's limit is %d)", ErrCorrupt, h.gdEntries, maxGDEntries)
	}
	off := h.gdOffset * sector
	if h.gdOffset > uint64(fileSize)/sector || h.gdEntries*4 > uint64(fileSize)-off {
		return fmt.Errorf("%w: grain directory at %#x (%d entries) runs past the end of the file (%#x bytes)", ErrCorrupt, off, h.gdEntries, fileSize)
	}
	return nil
}

// sparse is a sparse extent, hosted (monolithicSparse, streamOptimized,
// a twoGbMaxExtentSparse extent) or ESX (COWD). Safe for concurrent use.
type sparse struct {
	r        io.ReaderAt
	name     string // the file, for messages
	fileSize int64
	h        *header
	capacity int64 // bytes
	grain    int64 // bytes
	gtes     int64
	gdOff    int64 // bytes
	overhead int64 // bytes: grains lie at or after it
	zero     bool  // grain table entry 1 is a zeroed grain
	tables   *tables
	grains   *grainCache
	holes    format.ZeroMapper // the file's holes; nil if not known
}

func newSparse(r io.ReaderAt, name string, fileSize int64, h *header, t *tables) *sparse {
	return &sparse{
		r: r, name: name, fileSize: fileSize, h: h,
		capacity: int64(h.capacity) * sector, grain: int64(h.granularity) * sector,
		gtes: int64(h.gtes), gdOff: int64(h.gdOffset) * sector, overhead: int64(h.grainOffset) * sector,
		zero: !h.cowd && h.flags&flagZeroGrain != 0, tables: t, grains: &t.grains,
	}
}

// span kinds.
type kind uint8

const (
	unallocated kind = iota // the parent's, or zeros
	zeroed                  // zeros: a zeroed grain, a ZERO extent
	data                    // stored as is
	compressed              // a compressed grain
)

// span describes the run that starts at off (within the extent): its kind,
// the host offset of off for data (of the grain's marker, or of its data
// without markers, for a compressed grain), and its length, to the end of
// the grain (of the grain table's range, for a grain table that maps
// nothing).
func (s *sparse) span(off int64) (k kind, host, n int64, err error) {
	g := off / s.grain
	inner := off - g*s.grain
	gt := g / s.gtes
	page, err := s.tables.get(s, s.gdOff+gt/gdPage*gdPage*4, min(gdPage, int64(s.h.gdEntries)-gt/gdPage*gdPage))
	if err != nil {
		return 0, 0, 0, err
	}
	toTableEnd := (gt+1)*s.gtes*s.grain - off
	gtSector := int64(page.e[gt%gdPage])
	if gtSector == 0 {
		return unallocated, 0, toTableEnd, nil
	}
	if gtSector*sector+s.gtes*4 > s.fileSize {
		return 0, 0, 0, fmt.Errorf("%w: grain table at %#x (grain directory entry %d) runs past the end of the file (%#x bytes)", ErrCorrupt, gtSector*sector, gt, s.fileSize)
	}
	t, err := s.table(gtSector*sector, s.gtes)
	if err != nil {
		return 0, 0, 0, err
	}
	if t.empty {
		return unallocated, 0, toTableEnd, nil
	}
	i := g % s.gtes
	e := int64(t.e[i])
	// The run goes on over the grains of the table that follow alike:
	// unallocated, zeroed, or uncompressed and next in the file.
	end := i + 1
	switch {
	case e == 0:
		for end < s.gtes && t.e[end] == 0 {
			end++
		}
		return unallocated, 0, (end-i)*s.grain - inner, nil
	case e == zeroedGTE && s.zero:
		for end < s.gtes && t.e[end] == zeroedGTE {
			end++
		}
		return zeroed, 0, (end-i)*s.grain - inner, nil
	case e*sector < s.overhead:
		return 0, 0, 0, fmt.Errorf("%w: grain table at %#x, entry %d: grain at %#x, inside the header (grains start at %#x)", ErrCorrupt, gtSector*sector, i, e*sector, s.overhead)
	case s.h.compressed():
		return compressed, e * sector, s.grain - inner, nil
	}
	gran := int64(s.h.granularity)
	for end < s.gtes && int64(t.e[end]) == e+(end-i)*gran && (g+end-i)*s.grain < s.capacity {
		end++
	}
	// The disk's bytes of the run's grains must be in the file.
	last := g + end - 1 - i
	if need := min(s.grain, s.capacity-last*s.grain); (e+(end-1-i)*gran)*sector+need > s.fileSize {
		return 0, 0, 0, fmt.Errorf("%w: grain for disk offset %#x at %#x runs past the end of the file (%#x bytes)", ErrCorrupt, last*s.grain, (e+(end-1-i)*gran)*sector, s.fileSize)
	}
	return data, e*sector + inner, (end-i)*s.grain - inner, nil
}

// table returns the n entries at off, through the cache; a table the
// file holds as a hole (a table QEMU made and no grain was written into)
// is empty, known without reading it.
func (s *sparse) table(off, n int64) (*table, error) {
	if s.holes != nil {
		if x, err := s.holes.Region(off, n*4); err == nil && x.Zero && x.Length >= n*4 {
			return emptyTable, nil
		}
	}
	return s.tables.get(s, off, n)
}

// emptyTable is a grain table that maps nothing: its entries are never
// read (span returns first).
var emptyTable = &table{empty: true}

// readGrain fills p with the disk's bytes of the compressed grain g at
// host, from inner on. A read of a whole grain decompresses into p; others
// go through the image's cache of decompressed grains.
func (s *sparse) readGrain(p []byte, g, host, inner int64) error {
	if b := s.grains.get(s, host); b != nil {
		copy(p, b[inner:])
		return nil
	}
	if inner == 0 && int64(len(p)) >= s.grain {
		return s.inflateGrain(p[:s.grain], g, host)
	}
	out := make([]byte, s.grain)
	if err := s.inflateGrain(out, g, host); err != nil {
		return err
	}
	s.grains.put(s, host, out)
	copy(p, out[inner:])
	return nil
}

// inBufs holds buffers for compressed grains.
var inBufs sync.Pool

// inflateGrain decompresses the compressed grain g at host into out (a
// grain's worth), and checks it holds at least the disk's bytes of it.
func (s *sparse) inflateGrain(out []byte, g, host int64) error {
	bp, _ := inBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer inBufs.Put(bp)
	// The marker and, most often, all of the data, with one read.
	want := min(s.grain+s.grain/8+sector, s.fileSize-host)
	if s.h.flags&flagMarker == 0 {
		want = min(s.grain, s.fileSize-host) // QEMU reads a grain's worth
	}
	if int64(cap(*bp)) < want {
		*bp = make([]byte, want)
	}
	in := (*bp)[:want]
	if n, err := s.r.ReadAt(in, host); int64(n) < want {
		return fmt.Errorf("reading the grain at %#x: %w", host, err)
	}
	if s.h.flags&flagMarker != 0 {
		if len(in) < 12 {
			return fmt.Errorf("%w: grain marker at %#x (disk offset %#x) runs past the end of the file (%#x bytes)", ErrCorrupt, host, g*s.grain, s.fileSize)
		}
		size := int64(binary.LittleEndian.Uint32(in[8:]))
		switch {
		case size == 0 || size > 2*s.grain:
			return fmt.Errorf("%w: grain marker at %#x (disk offset %#x): compressed size %d (want 1 to %d)", ErrCorrupt, host, g*s.grain, size, 2*s.grain)
		case host+12+size > s.fileSize:
			return fmt.Errorf("%w: compressed grain at %#x (%d bytes, disk offset %#x) runs past the end of the file (%#x bytes)", ErrCorrupt, host, size, g*s.grain, s.fileSize)
		case 12+size > int64(len(in)):
			*bp = append(in, make([]byte, 12+size-int64(len(in)))...)
			rest := (*bp)[len(in):]
			if n, err := s.r.ReadAt(rest, host+int64(len(in))); n < len(rest) {
				return fmt.Errorf("reading the grain at %#x: %w", host, err)
			}
			in = *bp
		}
		in = in[12 : 12+size]
	}
	n, err := inflate(out, in)
	if err != nil {
		return fmt.Errorf("%w: compressed grain at %#x (disk offset %#x): %v", ErrCorrupt, host, g*s.grain, err)
	}
	if need := min(s.grain, s.capacity-g*s.grain); int64(n) < need {
		return fmt.Errorf("%w: compressed grain at %#x (disk offset %#x) holds %d bytes, want %d", ErrCorrupt, host, g*s.grain, n, need)
	}
	return nil
}

var zlibPool sync.Pool

// inflate decompresses the zlib stream in into out, and fails if it does
// not fit (as QEMU's uncompress does) or is not a whole stream.
func inflate(out, in []byte) (int, error) {
	br := bytes.NewReader(in)
	var zr io.ReadCloser
	if v := zlibPool.Get(); v != nil {
		zr = v.(io.ReadCloser)
		if err := zr.(zlib.Resetter).Reset(br, nil); err != nil {
			return 0, err
		}
	} else {
		var err error
		if zr, err = zlib.NewReader(br); err != nil {
			return 0, err
		}
	}
	defer zlibPool.Put(zr)
	n := 0
	for stalls := 0; n < len(out); {
		k, err := zr.Read(out[n:])
		n += k
		if k == 0 && err == nil {
			if stalls++; stalls > 100 {
				return n, io.ErrNoProgress
			}
			continue
		}
		switch {
		case err == io.EOF:
			return n, nil
		case err == io.ErrUnexpectedEOF:
			return n, errors.New("the zlib stream is cut short")
		case err != nil:
			return n, err
		}
	}
	// out is full: the stream must end here.
	var one [1]byte
	k, err := zr.Read(one[:])
	switch {
	case k > 0:
		return n, fmt.Errorf("decompresses to more than the grain's %d bytes", len(out))
	case err == io.ErrUnexpectedEOF:
		return n, errors.New("the zlib stream is cut short")
	case err != io.EOF:
		return n, err
	}
	return n, nil
}

// grainCacheBytes bounds the decompressed grains an image keeps: 64 of
// VMware's 64 KiB grains.
const grainCacheBytes = 4 << 20

// grainCache keeps recently decompressed grains, so that small reads in a
// row (an NBD client's, 4 KiB at a time) and parallel readers decompress
// each grain once. Safe for concurrent use.
type grainCache struct {
	mu    sync.Mutex
	m     map[grainKey]*list.Element // of *cachedGrain
	lru   list.List
	bytes int64
}

type grainKey struct {
	ext  *sparse
	host int64
}

type cachedGrain struct {
	key grainKey
	b   []byte
}

func (c *grainCache) get(ext *sparse, host int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[grainKey{ext, host}]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*cachedGrain).b
	}
	return nil
}

func (c *grainCache) put(ext *sparse, host int64, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := grainKey{ext, host}
	if c.m == nil {
		c.m = map[grainKey]*list.Element{}
	}
	if _, ok := c.m[k]; ok {
		return
	}
	c.m[k] = c.lru.PushFront(&cachedGrain{k, b})
	c.bytes += int64(len(b))
	for c.bytes > grainCacheBytes && c.lru.Len() > 1 {
		old := c.lru.Back()
		g := old.Value.(*cachedGrain)
		c.lru.Remove(old)
		delete(c.m, g.key)
		c.bytes -= int64(len(g.b))
	}
}

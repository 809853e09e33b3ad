package vpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
)

// Format is the VHD driver, for a format.Registry.
var Format = format.Format{
	Name:      Name,
	Probe:     Probe,
	ProbeTail: ProbeTail,
	Open: func(f *os.File, o format.OpenOptions) (format.Image, error) {
		s, err := Open(f, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	OpenAt: func(r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
		s, err := OpenAt(r, size, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	Extensions: []string{".vhd"},
	Create:     Create,
	Options:    options,
	Targets:    targets,
	DiskSize:   diskSize,
	InfoAt:     info,
}

// Errors.
var (
	// ErrCorrupt means the image's metadata is inconsistent.
	ErrCorrupt = errors.New("vpc: corrupt image")
	// ErrBacking means a differencing disk's parent was refused or could
	// not be used.
	ErrBacking = errors.New("vpc: parent")
	// ErrUnsupported means a valid-looking image this driver does not read.
	ErrUnsupported = errors.New("vpc: unsupported image")
)

// Bounds of what Open reads into memory.
const (
	// maxEntries bounds the BAT entries an image keeps (those that map
	// its virtual size): 16 MiB of them, for a 2040 GiB disk of blocks of
	// 512 KiB and more (4 MiB at the usual 2 MiB).
	maxEntries = 4 << 20
	// maxChainEntries bounds the BAT entries of a whole chain of parents.
	maxChainEntries = 2 * maxEntries
	// maxDepth bounds a chain of parents.
	maxDepth = 16
	// maxLocator bounds the bytes of a parent locator (a path).
	maxLocator = 64 << 10
	// maxBitmapRead bounds the bitmap bytes read for one span of a
	// differencing disk: 16 MiB of sectors.
	maxBitmapRead = 4096
)

// Probe reports whether head starts with a VHD footer's cookie: the copy
// of the footer a dynamic or differencing disk starts with, as QEMU
// probes it.
func Probe(head []byte) bool { return len(head) >= 8 && string(head[:8]) == string(footerCookie) }

// ProbeTail reports whether tail, the last 512 bytes of a file of size
// bytes, is the footer of a fixed VHD: the cookie, a checksum that adds
// up, the fixed disk type, and a current size that fits in the file
// before the footer. A raw disk is never taken for one by chance: that
// takes 8 bytes of cookie and a 32-bit checksum of the rest.
func ProbeTail(tail []byte, size int64) bool {
	f, err := parseFooter(tail, size-footerSize)
	return err == nil && f.diskType == TypeFixed && f.currentSize <= uint64(max(size-footerSize, 0))
}

// Source is an open VHD: one disk, its parents' under it. It is safe for
// concurrent use.
//
// Memory: the BAT entries that map the virtual size, 4 bytes per block
// (4 MiB for the largest disk, 2040 GiB, at 2 MiB blocks; at most 16 MiB:
// see maxEntries), per image of a chain; Open holds a sorted copy of them
// for a moment to check that no two blocks overlap. Bitmaps are read as
// they are needed (at most 4 KiB at a time), never kept.
type Source struct {
	img *image
}

// image is one file of a chain: the disk the user named, or a parent.
type image struct {
	r          io.ReaderAt
	fileSize   int64
	name       string
	closer     io.Closer // the file, if the image owns it
	host       *raw.Source
	foot       *footer
	head       *header // dynamic and differencing disks
	size       int64   // virtual size
	blockSize  int64
	bitmapSize int64
	bat        []uint32 // the entries that map [0, size)
	parent     *image   // differencing disks
}

// chain is what Open knows of the images it opened so far.
type chain struct {
	files   []os.FileInfo
	names   []string
	entries int64
}

// Open opens f as a VHD of any kind; the Source's Close closes f (and
// the parents' files), and so does a failing Open. A differencing disk's
// parent is opened only with o.AllowBacking.
func Open(f *os.File, o format.OpenOptions) (*Source, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil { // a block device
			f.Close()
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
	}
	ch := &chain{files: []os.FileInfo{fi}, names: []string{f.Name()}}
	img, err := openImage(f, size, f.Name(), f, fi.Mode().IsRegular(), o, ch, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	img.closer = f
	return &Source{img: img}, nil
}

// OpenAt opens the size bytes of r as a fixed or dynamic VHD (a
// differencing disk needs its parent's file: open it with Open). The
// Source's Close does not close r.
func OpenAt(r io.ReaderAt, size int64, o format.OpenOptions) (*Source, error) {
	img, err := openImage(r, size, "", nil, false, o, &chain{}, 0)
	if err != nil {
		return nil, err
	}
	return &Source{img: img}, nil
}

// openImage opens one image of a chain: r holds size bytes, f is its
// file (nil for a view that is not one: no parent can be found then),
// regular says whether it may have holes to map.
func openImage(r io.ReaderAt, size int64, name string, f *os.File, regular bool, o format.OpenOptions, ch *chain, depth int) (*image, error) {
	img := &image{r: r, fileSize: size, name: name}
	foot, err := readFooter(r, size)
	if err != nil {
		return nil, err
	}
	img.foot = foot
	if img.size = foot.diskSize(); img.size > MaxSize {
		return nil, fmt.Errorf("%w: virtual size %d bytes (%s, creator %s): a VHD holds at most 2040 GiB", ErrCorrupt, img.size, sizeSource(foot), foot.creator())
	}
	if f != nil && regular {
		img.host = raw.Map(f, size)
	}
	if foot.diskType == TypeFixed {
		if img.size > size-footerSize {
			return nil, fmt.Errorf("%w: fixed disk of %d bytes (%s) in a file of %d bytes: its data ends before its footer", ErrCorrupt, img.size, sizeSource(foot), size)
		}
		return img, nil
	}
	if img.head, err = readHeader(r, size, foot); err != nil {
		return nil, err
	}
	if err := img.loadBAT(ch); err != nil {
		return nil, err
	}
	if foot.diskType == TypeDifferencing {
		if img.parent, err = openParent(img, f, o, ch, depth); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// sizeSource says where a virtual size comes from, for messages.
func sizeSource(f *footer) string {
	if f.sizedByGeometry() {
		return fmt.Sprintf("CHS %d/%d/%d", f.cylinders, f.heads, f.sectors)
	}
	return "current size at 0x30"
}

// readFooter finds the footer as QEMU does: the copy at the start of a
// dynamic or differencing disk, else the footer at the end of a fixed
// one.
func readFooter(r io.ReaderAt, size int64) (*footer, error) {
	if size < footerSize {
		return nil, fmt.Errorf("%w: not a VHD: %d bytes, less than a footer", format.ErrUnknownFormat, size)
	}
	var b [footerSize]byte
	if _, err := r.ReadAt(b[:], 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading the footer at 0: %w", err)
	}
	if Probe(b[:]) {
		f, err := parseFooter(b[:], 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		switch f.diskType {
		case TypeDynamic, TypeDifferencing:
			return f, nil
		case TypeFixed:
			return nil, fmt.Errorf("%w: disk type 2 (fixed) in the footer at 0: a fixed disk has its footer only at the end", ErrCorrupt)
		}
		return nil, fmt.Errorf("%w: disk type %d in the footer at 0x3c: want 3 (dynamic) or 4 (differencing)", ErrCorrupt, f.diskType)
	}
	off := size - footerSize
	if _, err := r.ReadAt(b[:], off); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading the footer at %#x: %w", off, err)
	}
	if !Probe(b[:]) {
		return nil, fmt.Errorf("%w: not a VHD: no footer (%q) at the start or the end", format.ErrUnknownFormat, footerCookie)
	}
	f, err := parseFooter(b[:], off)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	case f.diskType != TypeFixed:
		return nil, fmt.Errorf("%w: disk type %d in the footer at %#x, but no copy of the footer at 0, which a dynamic or differencing disk starts with", ErrCorrupt, f.diskType, off+0x3c)
	}
	return f, nil
}

// readHeader reads and checks the dynamic disk header the footer points
// to.
func readHeader(r io.ReaderAt, size int64, foot *footer) (*header, error) {
	off := foot.dataOffset
	if off > uint64(size) || uint64(size)-off < headerSize {
		return nil, fmt.Errorf("%w: data offset %#x (footer at 0x10): the dynamic disk header runs past the end of the file (%#x bytes)", ErrCorrupt, off, size)
	}
	b := make([]byte, headerSize)
	if _, err := r.ReadAt(b, int64(off)); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading the dynamic disk header at %#x: %w", off, err)
	}
	h, err := parseHeader(b, int64(off))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return h, nil
}

// loadBAT checks the header's BAT and block size and reads the entries
// that map the disk, checking every block as it goes.
func (m *image) loadBAT(ch *chain) error {
	h := m.head
	hoff := int64(m.foot.dataOffset)
	bs := int64(h.blockSize)
	switch {
	case bs&(bs-1) != 0 || bs == 0:
		return fmt.Errorf("%w: block size %d (header at %#x): not a power of two", ErrCorrupt, bs, hoff+0x20)
	case bs < 4096:
		// QEMU puts the data of such blocks over their bitmap, the
		// specification after it: no image of either is known.
		return fmt.Errorf("%w: block size %d (header at %#x): blocks under 4 KiB are not read (QEMU and the specification disagree on where their data lies)", ErrUnsupported, bs, hoff+0x20)
	}
	m.blockSize = bs
	m.bitmapSize = (bs/(8*sector) + sector - 1) &^ (sector - 1)
	n := int64(h.maxTableEntries)
	needed := (m.size + bs - 1) / bs
	batEnd := uint64(h.tableOffset) + uint64(n)*4 // no overflow: n < 2^32
	switch {
	case n < needed:
		return fmt.Errorf("%w: max table entries %d (header at %#x): %d blocks of %d bytes do not cover the disk's %d bytes", ErrCorrupt, n, hoff+0x1c, n, bs, m.size)
	case n > 0x7fffffff/4:
		return fmt.Errorf("%w: max table entries %d (header at %#x): a BAT over 512 MiB (QEMU's limit)", ErrCorrupt, n, hoff+0x1c)
	case needed > maxEntries:
		return fmt.Errorf("%w: %d blocks of %d bytes: vmaconv maps at most %d (a 2040 GiB disk of 512 KiB blocks)", ErrUnsupported, needed, bs, maxEntries)
	case h.tableOffset > uint64(m.fileSize) || (batEnd+sector-1)&^(sector-1) > uint64(m.fileSize):
		return fmt.Errorf("%w: BAT at %#x (table offset, header at %#x) of %d entries runs past the end of the file (%#x bytes)", ErrCorrupt, h.tableOffset, hoff+0x10, n, m.fileSize)
	}
	if ch.entries += needed; ch.entries > maxChainEntries {
		return fmt.Errorf("%w: the chain's BATs map more than %d blocks", ErrBacking, maxChainEntries)
	}
	m.bat = make([]uint32, needed)
	buf := make([]byte, 64<<10)
	stride := m.bitmapSize + bs
	for i := int64(0); i < n; {
		k := min(int64(len(buf))/4, n-i)
		at := int64(h.tableOffset) + 4*i
		if _, err := m.r.ReadAt(buf[:4*k], at); err != nil && err != io.EOF {
			return fmt.Errorf("reading the BAT at %#x: %w", at, err)
		}
		for j := range k {
			e := binary.BigEndian.Uint32(buf[4*j:])
			if i+j < needed {
				m.bat[i+j] = e
			}
			if e != unallocated && int64(e)*sector+stride > m.fileSize {
				return fmt.Errorf("%w: BAT entry %d (at %#x): block at %#x runs past the end of the file (%#x bytes)", ErrCorrupt, i+j, at+4*j, int64(e)*sector, m.fileSize)
			}
		}
		i += k
	}
	return m.checkOverlaps(n)
}

// checkOverlaps refuses blocks that overlap one another, or the
// metadata: the footer's copy, the header, the BAT (of n entries) and the
// parent locators' data.
func (m *image) checkOverlaps(n int64) error {
	stride := m.bitmapSize + m.blockSize
	var offs []uint32
	for _, e := range m.bat {
		if e != unallocated {
			offs = append(offs, e)
		}
	}
	slices.Sort(offs)
	for k := 1; k < len(offs); k++ {
		if a, b := int64(offs[k-1])*sector, int64(offs[k])*sector; b-a < stride {
			i, j := slices.Index(m.bat, offs[k-1]), slices.Index(m.bat, offs[k])
			if i == j { // the same block twice: the second entry
				j = i + 1 + slices.Index(m.bat[i+1:], offs[k])
			}
			return fmt.Errorf("%w: BAT entries %d and %d (at %#x and %#x): blocks at %#x and %#x overlap (a block takes %#x bytes)", ErrCorrupt, i, j, m.batAt(i), m.batAt(j), a, b, stride)
		}
	}
	type region struct {
		what       string
		start, end uint64
	}
	meta := []region{
		{"the footer's copy", 0, footerSize},
		{"the dynamic disk header", m.foot.dataOffset, m.foot.dataOffset + headerSize},
		{"the BAT", m.head.tableOffset, m.head.tableOffset + uint64(n)*4},
	}
	if m.foot.diskType == TypeDifferencing {
		for i, l := range m.head.locators {
			if l.platform != 0 && l.dataLength > 0 {
				meta = append(meta, region{fmt.Sprintf("parent locator %d's data", i), l.dataOffset, l.dataOffset + uint64(l.dataLength)})
			}
		}
	}
	for _, r := range meta {
		// The first block that ends after the region starts.
		k, _ := slices.BinarySearchFunc(offs, r.start, func(e uint32, start uint64) int {
			if uint64(e)*sector+uint64(stride) <= start {
				return -1
			}
			return 1
		})
		if k < len(offs) && uint64(offs[k])*sector < r.end {
			i := slices.Index(m.bat, offs[k])
			return fmt.Errorf("%w: BAT entry %d (at %#x): block at %#x overlaps %s (%#x to %#x)", ErrCorrupt, i, m.batAt(i), int64(offs[k])*sector, r.what, r.start, r.end)
		}
	}
	return nil
}

// batAt is the offset of BAT entry i in the file.
func (m *image) batAt(i int) int64 { return int64(m.head.tableOffset) + 4*int64(i) }

// What holds a span of a disk.
type kind int

const (
	spanZero   kind = iota // nothing: it reads as zeros
	spanData               // the image's file, at host
	spanParent             // the parent
)

// span returns what holds the disk at off, for how many bytes from there
// (at most max, which is at least 1), and where in the file for data.
func (m *image) span(off, max int64) (k kind, host, n int64, err error) {
	n = min(max, m.size-off)
	if m.head == nil {
		return spanData, off, n, nil
	}
	bs := m.blockSize
	b := off / bs
	in := off % bs
	e := m.bat[b]
	if e == unallocated {
		// Blocks not in the file, as many as follow.
		end := b + 1
		for end < int64(len(m.bat)) && m.bat[end] == unallocated && end*bs < off+n {
			end++
		}
		n = min(n, end*bs-off)
		if m.parent != nil {
			return spanParent, 0, n, nil
		}
		return spanZero, 0, n, nil
	}
	n = min(n, bs-in)
	host = int64(e)*sector + m.bitmapSize + in
	if m.parent == nil {
		return spanData, host, n, nil
	}
	// A differencing disk: the run of sectors from off that its bitmap
	// marks alike.
	s0 := in / sector
	s1 := min((in+n-1)/sector+1, s0+maxBitmapRead*8-s0%8)
	var bm [maxBitmapRead]byte
	b0 := s0 / 8
	bmBytes := bm[:(s1+7)/8-b0]
	at := int64(e)*sector + b0
	if _, err := m.r.ReadAt(bmBytes, at); err != nil && err != io.EOF {
		return 0, 0, 0, fmt.Errorf("%s: reading the bitmap of block %d at %#x: %w", m.label(), b, at, err)
	}
	bit := func(s int64) bool { return bmBytes[s/8-b0]&(0x80>>(s%8)) != 0 }
	set := bit(s0)
	s := s0 + 1
	for s < s1 && bit(s) == set {
		s++
	}
	n = min(n, s*sector-in)
	if set {
		return spanData, host, n, nil
	}
	return spanParent, 0, n, nil
}

// label names the image in messages: its file, or nothing for the image
// the caller named (whose errors the caller prefixes with its name).
func (m *image) label() string {
	if m.name == "" {
		return "vpc"
	}
	return m.name
}

// readAt reads len(p) bytes of the disk at off, which lie within it.
func (m *image) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		k, host, n, err := m.span(off, int64(len(p)))
		if err != nil {
			return err
		}
		switch k {
		case spanZero:
			clear(p[:n])
		case spanData:
			if k, err := m.r.ReadAt(p[:n], host); int64(k) < n {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("%s: reading %d bytes at %#x: %w", m.label(), n, host, err)
			}
		case spanParent:
			if err := m.parent.readPadded(p[:n], off); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readPadded reads p at off from an image that may be smaller than its
// child: past its end, zeros.
func (m *image) readPadded(p []byte, off int64) error {
	k := max(min(int64(len(p)), m.size-off), 0)
	clear(p[k:])
	if k == 0 {
		return nil
	}
	return m.readAt(p[:k], off)
}

// region is Source.Region for one image.
func (m *image) region(start, length int64) (format.Region, error) {
	if start >= m.size {
		return format.Region{Start: start, Length: length, Zero: true}, nil // a parent smaller than its child
	}
	k, host, n, err := m.span(start, length)
	if err != nil {
		return format.Region{}, err
	}
	switch k {
	case spanZero:
		return format.Region{Start: start, Length: n, Zero: true}, nil
	case spanParent:
		return m.parent.region(start, n)
	}
	// Data the file holds as a hole reads as zeros.
	if m.host != nil {
		x, err := m.host.Region(host, n)
		if err != nil {
			return format.Region{}, err
		}
		return format.Region{Start: start, Length: min(n, x.Length), Zero: x.Zero}, nil
	}
	return format.Region{Start: start, Length: n}, nil
}

// mapping is Source.Mapping for one image at depth in the chain.
func (m *image) mapping(start, length int64, depth int) (format.Mapping, error) {
	if start >= m.size {
		return format.Mapping{Start: start, Length: length, Depth: depth, Zero: true, Offset: -1}, nil
	}
	k, host, n, err := m.span(start, length)
	if err != nil {
		return format.Mapping{}, err
	}
	mp := format.Mapping{Start: start, Length: n, Depth: depth, Present: true, Offset: -1}
	switch k {
	case spanZero:
		mp.Zero = true
	case spanParent:
		pm, err := m.parent.mapping(start, n, depth+1)
		if err != nil {
			return format.Mapping{}, err
		}
		// vmaconv does not follow the offsets of a chain (qemu-img map
		// shows one file).
		pm.Present, pm.Data, pm.Offset = !pm.Zero, !pm.Zero, -1
		return pm, nil
	case spanData:
		mp.Data, mp.Offset = true, host
		// qemu's block status of a fixed disk is its file's (holes read
		// as zeros); of a block, the block's.
		if m.head == nil && m.host != nil {
			x, err := m.host.Mapping(host, n)
			if err != nil {
				return format.Mapping{}, err
			}
			mp.Length, mp.Zero = min(n, x.Length), x.Zero
		}
	}
	if depth > 0 && mp.Zero {
		mp.Present, mp.Data = false, false
	}
	return mp, nil
}

func (m *image) close() error {
	var err error
	if m.closer != nil {
		err = m.closer.Close()
	}
	if m.parent != nil {
		err = errors.Join(err, m.parent.close())
	}
	return err
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	size := s.img.size
	if off < 0 {
		return 0, fmt.Errorf("vpc: negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > size-off {
		p, short = p[:size-off], true
	}
	if err := s.img.readAt(p, off); err != nil {
		return 0, err
	}
	if short {
		return len(p), io.EOF
	}
	return len(p), nil
}

// Region implements format.ZeroMapper: blocks not in the file (and not
// in a parent) are zero, and so is data the file holds as holes.
func (s *Source) Region(start, length int64) (format.Region, error) {
	length = min(length, s.img.size-start)
	if start < 0 || length <= 0 {
		return format.Region{}, fmt.Errorf("vpc: extent at %#x outside the disk (%d bytes)", start, s.img.size)
	}
	return s.img.region(start, length)
}

// Mapping implements format.Mapper as QEMU answers qemu-img map: a fixed
// disk is its file's ranges at their own offsets (holes read as zeros); a
// block of a dynamic disk is data at its place in the file, a block not
// in the file zero; a differencing disk's sectors left to its parent are
// the parent's (depth 1 and on, without offsets).
func (s *Source) Mapping(start, length int64) (format.Mapping, error) {
	length = min(length, s.img.size-start)
	if start < 0 || length <= 0 {
		return format.Mapping{}, fmt.Errorf("vpc: mapping at %#x outside the disk (%d bytes)", start, s.img.size)
	}
	return s.img.mapping(start, length, 0)
}

// Size returns the virtual size.
func (s *Source) Size() int64 { return s.img.size }

// Close closes the image's file (if Open opened it) and its parents'.
func (s *Source) Close() error { return s.img.close() }

// BlockSize returns the size of the disk's blocks, or 0 for a fixed disk.
func (s *Source) BlockSize() int64 { return s.img.blockSize }

// Type returns the disk type: TypeFixed, TypeDynamic or TypeDifferencing.
func (s *Source) Type() int { return int(s.img.foot.diskType) }

package qcow2

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/lima-vm/go-qcow2reader/image"
	libqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"
	libraw "github.com/lima-vm/go-qcow2reader/image/raw"
	"github.com/lima-vm/go-qcow2reader/log"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
)

// Format is the qcow2 driver, for a format.Registry.
var Format = format.Format{
	Name:  Name,
	Probe: func(head []byte) bool { return bytes.HasPrefix(head, Magic[:]) },
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
	Extensions: []string{".qcow2"},
	Create:     Create,
	Options:    options,
	InfoAt:     info,
}

// Errors.
var (
	// ErrCorrupt means the image header is inconsistent.
	ErrCorrupt = errors.New("qcow2: corrupt image")
	// ErrBacking means a backing file was refused or could not be used.
	ErrBacking = errors.New("qcow2: backing file")
	// ErrUnsupported means a valid-looking image of a version or with a
	// feature this driver does not read.
	ErrUnsupported = errors.New("qcow2: unsupported image")
)

// Bounds of a backing chain: its length, and the L1 tables of all its
// images together (the library allocates each image's L1 table whole).
const (
	maxBackingDepth = 16
	maxChainL1      = 64 << 20
)

// chain is what open knows of the images opened so far for one Open.
type chain struct {
	files []os.FileInfo // to detect loops
	names []string
	l1    int64 // bytes of L1 tables
	depth int
}

// Source is an open qcow2 image. It is safe for concurrent use.
type Source struct {
	img  *libqcow2.Qcow2
	m    *clusterMap
	name string
}

var setup sync.Once

// setupLibrary sets the library's codec map and logger, globals: once,
// before any image is opened, and never again.
func setupLibrary() {
	setup.Do(func() {
		libqcow2.SetDecompressor(libqcow2.CompressionTypeZlib, zlibDecompressor)
		libqcow2.SetDecompressor(libqcow2.CompressionTypeZstd, zstdDecompressor)
		log.SetWarnFunc(nil)
	})
}

// OpenAt opens the size bytes of r, a view that is not a file (a remote
// object), as a qcow2 image, with the same checks as Open; an image with a
// backing file is refused (its backing file is a path beside a file). The
// Source's Close does not close r.
func OpenAt(r io.ReaderAt, size int64, o format.OpenOptions) (s *Source, err error) {
	setupLibrary()
	h, err := readHeader(r, size)
	if err != nil {
		return nil, err
	}
	if h.backingOffset != 0 {
		return nil, fmt.Errorf("%w: the image has a backing file, which is not followed from a view that is not a file: download the image and its backing file", ErrBacking)
	}
	defer func() { // the library panics on some corrupt images
		if p := recover(); p != nil {
			s, err = nil, fmt.Errorf("%w: qcow2 reader failed: %v", ErrCorrupt, p)
		}
	}()
	ra := readerOnly{r}
	img, err := libqcow2.Open(ra, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := img.Readable(); err != nil {
		return nil, err
	}
	ext := h.version >= 3 && img.Header.IncompatibleFeatures&(1<<4) != 0
	m, err := newClusterMap(ra, img, size, h, ext, nil)
	if err != nil {
		return nil, err
	}
	return &Source{img: img, m: m}, nil
}

// readerOnly hides a Close of the reader from the library, which closes
// what it reads when it has one.
type readerOnly struct{ r io.ReaderAt }

func (r readerOnly) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(p, off) }

// Open opens f as a qcow2 image; the Source's Close closes f (and backing
// files), and so does a failing Open.
func Open(f *os.File, o format.OpenOptions) (*Source, error) {
	setupLibrary()
	ch := &chain{}
	img, err := open(f, f.Name(), o, ch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	m, err := mapImage(f, img, ch)
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &Source{img: img, m: m, name: f.Name()}, nil
}

// mapImage builds the cluster map of the image the user named (the
// library has opened and checked it).
func mapImage(f *os.File, img *libqcow2.Qcow2, ch *chain) (*clusterMap, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h, err := readHeader(f, fi.Size())
	if err != nil {
		return nil, err
	}
	if ch.l1+int64(h.l1Size)*8 > maxChainL1 {
		return nil, fmt.Errorf("%w: the backing chain's L1 tables need more than %d MiB", ErrBacking, maxChainL1>>20)
	}
	ext := h.version >= 3 && img.Header.IncompatibleFeatures&(1<<4) != 0
	var host format.ZeroMapper
	if fi.Mode().IsRegular() {
		host = raw.Map(f, fi.Size())
	}
	return newClusterMap(f, img, fi.Size(), h, ext, host)
}

// header is what open checks before handing the file to the library.
type header struct {
	version       uint32
	backingOffset uint64
	backingSize   uint32
	clusterBits   uint32
	size          uint64
	l1Size        uint32
	l1Offset      uint64
}

// Limits QEMU applies when it opens an image (block/qcow2.h).
const (
	maxL1Bytes       = 32 << 20 // QCOW_MAX_L1_SIZE
	maxRefTableBytes = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	maxSnapshots     = 65536    // QCOW_MAX_SNAPSHOTS
	snapshotMinBytes = 40       // the fixed part of a snapshot table entry
)

// readHeader checks the header as strictly as QEMU does when it opens an
// image, before the library allocates anything from it, and says which
// field is wrong (offsets in hex).
func readHeader(ra io.ReaderAt, fileSize int64) (*header, error) {
	var b [112]byte
	n, err := ra.ReadAt(b[:], 0)
	if n < 72 {
		return nil, fmt.Errorf("%w: header too short: %d bytes: %v", ErrCorrupt, n, err)
	}
	if !bytes.Equal(b[:4], Magic[:]) {
		return nil, fmt.Errorf("%w: not a qcow2 image (magic %q)", format.ErrUnknownFormat, b[:4])
	}
	be := binary.BigEndian
	h := &header{
		version:       be.Uint32(b[4:]),
		backingOffset: be.Uint64(b[8:]), backingSize: be.Uint32(b[16:]),
		clusterBits: be.Uint32(b[20:]), size: be.Uint64(b[24:]),
		l1Size: be.Uint32(b[36:]), l1Offset: be.Uint64(b[40:]),
	}
	switch h.version {
	case 2, 3:
	case 1:
		return nil, fmt.Errorf("%w: qcow version 1 (the original qcow format); convert it with qemu-img convert -O qcow2", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: qcow version %d", ErrUnsupported, h.version)
	}
	// qemu accepts 512 B to 2 MiB clusters.
	if h.clusterBits < 9 || h.clusterBits > 21 {
		return nil, fmt.Errorf("%w: cluster_bits %d: unsupported cluster size (qemu takes 512 bytes to 2 MiB, cluster_bits 9 to 21)", ErrCorrupt, h.clusterBits)
	}
	csize := uint64(1) << h.clusterBits
	if h.size > 1<<62 {
		return nil, fmt.Errorf("%w: virtual size %d out of range", ErrCorrupt, h.size)
	}
	headerLen := uint64(72)
	if h.version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("%w: header too short: %d bytes", ErrCorrupt, n)
		}
		headerLen = uint64(be.Uint32(b[100:]))
		switch {
		case headerLen < 104:
			return nil, fmt.Errorf("%w: header too short: header_length %d, at least 104 for version 3", ErrCorrupt, headerLen)
		case headerLen > csize:
			return nil, fmt.Errorf("%w: header_length %d exceeds the %d-byte cluster", ErrCorrupt, headerLen, csize)
		}
		if order := be.Uint32(b[96:]); order > 6 {
			return nil, fmt.Errorf("%w: refcount_order %d: reference count entries are at most 64 bits (order 6)", ErrCorrupt, order)
		}
	}
	if err := checkExtensions(ra, headerLen, csize, h.backingOffset, fileSize); err != nil {
		return nil, err
	}
	// Tables the library or qemu would read.
	rtOff, rtClusters := be.Uint64(b[48:]), uint64(be.Uint32(b[56:]))
	switch {
	case rtClusters*csize > maxRefTableBytes:
		return nil, fmt.Errorf("%w: refcount table of %d clusters is too large (at most %d MiB)", ErrCorrupt, rtClusters, maxRefTableBytes>>20)
	case rtOff%csize != 0:
		return nil, fmt.Errorf("%w: refcount_table_offset %#x is not aligned to a cluster", ErrCorrupt, rtOff)
	case rtOff > uint64(fileSize) || rtClusters*csize > uint64(fileSize)-rtOff:
		return nil, fmt.Errorf("%w: refcount table at %#x (%d clusters) runs past the end of the file (%#x bytes)", ErrCorrupt, rtOff, rtClusters, fileSize)
	}
	snaps, snapOff := uint64(be.Uint32(b[60:])), be.Uint64(b[64:])
	switch {
	case snaps > maxSnapshots:
		return nil, fmt.Errorf("%w: snapshot table too large: %d snapshots (at most %d)", ErrCorrupt, snaps, maxSnapshots)
	case snaps > 0 && snapOff%csize != 0:
		return nil, fmt.Errorf("%w: snapshots_offset %#x is not aligned to a cluster", ErrCorrupt, snapOff)
	case snaps > 0 && (snapOff > uint64(fileSize) || snaps*snapshotMinBytes > uint64(fileSize)-snapOff):
		return nil, fmt.Errorf("%w: snapshot table at %#x (%d snapshots) runs past the end of the file (%#x bytes)", ErrCorrupt, snapOff, snaps, fileSize)
	}
	// The library allocates the L1 table from l1_size before reading it:
	// bound it by qemu's limit and by the file first.
	l1 := uint64(h.l1Size) * 8
	switch {
	case l1 > maxL1Bytes:
		return nil, fmt.Errorf("%w: l1_size %d: an L1 table of %d MiB (qemu's limit is %d MiB)", ErrCorrupt, h.l1Size, l1>>20, maxL1Bytes>>20)
	case h.l1Size > 0 && h.l1Offset%csize != 0:
		return nil, fmt.Errorf("%w: l1_table_offset %#x is not aligned to a cluster", ErrCorrupt, h.l1Offset)
	case h.l1Offset > uint64(fileSize) || l1 > uint64(fileSize)-h.l1Offset:
		return nil, fmt.Errorf("%w: L1 table at %#x (%d bytes) runs past the end of the file (%#x bytes)", ErrCorrupt, h.l1Offset, l1, fileSize)
	}
	l2Entries := csize / 8
	if covered := uint64(h.l1Size) * l2Entries; (h.size+csize-1)>>h.clusterBits > covered {
		return nil, fmt.Errorf("%w: l1_size %d: too small for the virtual size of %d bytes", ErrCorrupt, h.l1Size, h.size)
	}
	return h, nil
}

// checkExtensions walks the header extensions after the header, as qemu
// does, refusing one that runs past the first cluster (or into the
// backing file name).
func checkExtensions(ra io.ReaderAt, off, csize, backingOffset uint64, fileSize int64) error {
	end := csize
	if backingOffset != 0 && backingOffset < end {
		end = backingOffset
	}
	end = min(end, uint64(max(fileSize, 0)))
	var e [8]byte
	for off+8 <= end {
		if _, err := ra.ReadAt(e[:], int64(off)); err != nil {
			return fmt.Errorf("%w: reading the header extension at %#x: %v", ErrCorrupt, off, err)
		}
		typ, n := binary.BigEndian.Uint32(e[:]), uint64(binary.BigEndian.Uint32(e[4:]))
		if typ == 0 {
			return nil
		}
		if n > end-off-8 {
			return fmt.Errorf("%w: header extension %#08x at %#x: %d bytes run past the end of the first cluster", ErrCorrupt, typ, off, n)
		}
		off += 8 + (n+7)&^7
	}
	return nil
}

// open opens one image of a backing chain; the first is the image the
// user named.
func open(f *os.File, name string, o format.OpenOptions, ch *chain) (img *libqcow2.Qcow2, err error) {
	fail := func(err error) (*libqcow2.Qcow2, error) {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	for i, seen := range ch.files {
		if os.SameFile(seen, fi) {
			return fail(fmt.Errorf("%w: backing file loop: %s is already in the chain as %s", ErrBacking, name, ch.names[i]))
		}
	}
	ch.files, ch.names = append(ch.files, fi), append(ch.names, name)
	h, err := readHeader(f, fi.Size())
	if err != nil {
		return fail(err)
	}
	if ch.l1 += int64(h.l1Size) * 8; ch.l1 > maxChainL1 {
		return fail(fmt.Errorf("%w: the backing chain's L1 tables need more than %d MiB", ErrBacking, maxChainL1>>20))
	}
	depth := ch.depth
	if h.backingOffset != 0 {
		if err := checkBacking(f, name, h, o, depth); err != nil {
			return fail(err)
		}
	}
	defer func() { // the library panics on some corrupt backing chains
		if r := recover(); r != nil {
			f.Close()
			img, err = nil, fmt.Errorf("%w: qcow2 reader failed: %v", ErrCorrupt, r)
		}
	}()
	// The library flattens the callback's error into a string; keep ours,
	// which is precise and wraps ErrBacking.
	var backingErr error
	img, err = libqcow2.Open(f, func(ra io.ReaderAt, t image.Type) (image.Image, error) {
		ch.depth = depth + 1
		bimg, err := openBacking(ra, t, o, ch, name)
		if err != nil && backingErr == nil {
			backingErr = err
		}
		return bimg, err
	})
	if err != nil {
		if img != nil {
			img.Close()
		} else {
			f.Close()
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := img.Readable(); err != nil {
		img.Close()
		if backingErr != nil {
			return nil, backingErr
		}
		return nil, err
	}
	return img, nil
}

// checkBacking applies the backing-file policy before the library opens
// anything: the user must allow backing files, the image must record the
// backing format (probing a backing file is how raw images get
// reinterpreted), and the file must be a regular file.
func checkBacking(f *os.File, name string, h *header, o format.OpenOptions, depth int) error {
	if h.backingSize > 1023 {
		return fmt.Errorf("%w: backing file name of %d bytes", ErrCorrupt, h.backingSize)
	}
	b := make([]byte, h.backingSize)
	if _, err := f.ReadAt(b, int64(h.backingOffset)); err != nil {
		return fmt.Errorf("%w: reading backing file name: %v", ErrCorrupt, err)
	}
	backing := string(b)
	if !o.AllowBacking {
		return fmt.Errorf("%w: image has backing file %q; pass --allow-backing to read it", ErrBacking, backing)
	}
	if depth >= maxBackingDepth {
		return fmt.Errorf("%w: backing chain deeper than %d (a loop?)", ErrBacking, maxBackingDepth)
	}
	path := backing
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(name), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrBacking, backing, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w %q is not a regular file", ErrBacking, backing)
	}
	return nil
}

// openBacking is the library's callback for backing files.
func openBacking(ra io.ReaderAt, t image.Type, o format.OpenOptions, ch *chain, of string) (image.Image, error) {
	f, ok := ra.(*os.File)
	if !ok {
		return failed(ra, fmt.Errorf("%w: unexpected %T", ErrBacking, ra))
	}
	switch t {
	case "":
		return failed(ra, fmt.Errorf("%w %s: the image does not record the backing file's format; refusing to guess (set it with qemu-img rebase -u -F FMT)", ErrBacking, f.Name()))
	case libraw.Type:
		note(o, fmt.Sprintf("%s: reading backing file %s (raw)", of, f.Name()))
		return libraw.Open(f)
	case libqcow2.Type:
		note(o, fmt.Sprintf("%s: reading backing file %s (qcow2)", of, f.Name()))
		img, err := open(f, f.Name(), o, ch)
		if err != nil {
			return failed(nil, err)
		}
		return img, nil
	default:
		return failed(ra, fmt.Errorf("%w %s: format %q is not supported", ErrBacking, f.Name(), t))
	}
}

func note(o format.OpenOptions, msg string) {
	if o.Note != nil {
		o.Note(msg)
	}
}

// failed returns an image that only reports err. The library calls Close
// on whatever its callback returned, even with an error, so it must not be
// nil.
func failed(ra io.ReaderAt, err error) (image.Image, error) {
	return &errImage{ra: ra, err: err}, err
}

type errImage struct {
	ra  io.ReaderAt
	err error
}

func (e *errImage) ReadAt([]byte, int64) (int, error)         { return 0, e.err }
func (e *errImage) Extent(int64, int64) (image.Extent, error) { return image.Extent{}, e.err }
func (e *errImage) Type() image.Type                          { return "" }
func (e *errImage) Size() int64                               { return 0 }
func (e *errImage) Readable() error                           { return e.err }
func (e *errImage) Close() error {
	if c, ok := e.ra.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("%w: %s: reading at %#x: %v", ErrCorrupt, s.name, off, r)
		}
	}()
	size := s.Size()
	if off >= size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > size-off {
		p, short = p[:size-off], true
	}
	if err := s.m.readAt(p, off); err != nil {
		return 0, err
	}
	if short {
		return len(p), io.EOF
	}
	return len(p), nil
}

// Region implements format.ZeroMapper from the image's cluster map:
// unallocated clusters (without a backing file behind them) and zero
// clusters are Zero and never read.
func (s *Source) Region(start, length int64) (e format.Region, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: cluster map at %#x: %v", ErrCorrupt, s.name, start, r)
		}
	}()
	length = min(length, s.Size()-start)
	if start < 0 || length <= 0 {
		return format.Region{}, fmt.Errorf("qcow2: %s: extent at %#x outside the disk (%d bytes)", s.name, start, s.Size())
	}
	x, err := s.m.extent(start, length)
	if err != nil {
		return format.Region{}, err
	}
	if x.Length <= 0 {
		return format.Region{}, fmt.Errorf("%w: %s: empty extent at %#x", ErrCorrupt, s.name, start)
	}
	// Clusters that fall through to a backing file carry the backing
	// image's status, so Zero is right for the whole chain.
	return x, nil
}

// Size returns the virtual size, cut to whole 512-byte sectors as qemu
// reads it.
func (s *Source) Size() int64 { return s.img.Size() &^ 511 }

// Close closes the image and its backing files.
func (s *Source) Close() error { return s.img.Close() }

// fullReader makes every Read fill its buffer: the library decompresses a
// cluster again from the start for every short Read.
type fullReader struct {
	r     io.Reader
	close func() error
}

func (f *fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (f *fullReader) Close() error { return f.close() }

var flatePool sync.Pool

func zlibDecompressor(r io.Reader) (io.ReadCloser, error) {
	var zr io.ReadCloser
	if v := flatePool.Get(); v != nil {
		zr = v.(io.ReadCloser)
		if err := zr.(flate.Resetter).Reset(r, nil); err != nil {
			return nil, err
		}
	} else {
		zr = flate.NewReader(r)
	}
	return &fullReader{r: zr, close: func() error { flatePool.Put(zr); return nil }}, nil
}

var zstdPool sync.Pool

func zstdDecompressor(r io.Reader) (io.ReadCloser, error) {
	d, _ := zstdPool.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		if d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true)); err != nil {
			return nil, err
		}
	}
	if err := d.Reset(r); err != nil {
		return nil, err
	}
	return &fullReader{r: d, close: func() error { d.Reset(nil); zstdPool.Put(d); return nil }}, nil
}

// Info is what a qcow2 header says of an image, as qemu-img info reports
// it.
type Info struct {
	Version       int    // 2 or 3 (qemu-img's compat 0.10 or 1.1)
	ClusterSize   int64  // bytes
	Size          int64  // virtual size, as qemu reads it (whole sectors)
	Compression   string // Zlib or Zstd
	RefcountBits  int
	Backing       string // backing file name, as recorded
	BackingFormat string // its format, if recorded
	Dirty         bool   // incompatible feature bit 0: refcounts may be stale
	Corrupt       bool   // incompatible feature bit 1
	LazyRefcounts bool   // compatible feature bit 0
	ExtendedL2    bool   // incompatible feature bit 4: subclusters
}

// ReadInfo reads an image's header, checked as Open checks it, without
// opening the image (nor its backing file).
func ReadInfo(ra io.ReaderAt, fileSize int64) (*Info, error) {
	h, err := readHeader(ra, fileSize)
	if err != nil {
		return nil, err
	}
	var b [112]byte
	n, _ := ra.ReadAt(b[:], 0)
	be := binary.BigEndian
	in := &Info{Version: int(h.version), ClusterSize: 1 << h.clusterBits, Size: int64(h.size) &^ 511,
		Compression: Zlib, RefcountBits: 16}
	headerLen := uint64(72)
	if h.version == 3 && n >= 104 {
		incompat, compat := be.Uint64(b[72:]), be.Uint64(b[80:])
		in.Dirty, in.Corrupt, in.ExtendedL2 = incompat&1 != 0, incompat&2 != 0, incompat&16 != 0
		in.LazyRefcounts = compat&1 != 0
		in.RefcountBits = 1 << be.Uint32(b[96:])
		headerLen = uint64(be.Uint32(b[100:]))
		if headerLen > 104 && n > 104 && b[104] == 1 {
			in.Compression = Zstd
		}
	}
	if h.backingOffset != 0 && h.backingSize <= 1023 {
		name := make([]byte, h.backingSize)
		if _, err := ra.ReadAt(name, int64(h.backingOffset)); err == nil {
			in.Backing = string(name)
		}
	}
	// The backing format is a header extension (0xe2792aca).
	csize := uint64(1) << h.clusterBits
	end := min(csize, uint64(max(fileSize, 0)))
	if h.backingOffset != 0 && h.backingOffset < end {
		end = h.backingOffset
	}
	var e [8]byte
	for off := headerLen; off+8 <= end; {
		if _, err := ra.ReadAt(e[:], int64(off)); err != nil {
			break
		}
		typ, l := be.Uint32(e[:]), uint64(be.Uint32(e[4:]))
		if typ == 0 || l > end-off-8 {
			break
		}
		if typ == 0xe2792aca && l <= 64 {
			f := make([]byte, l)
			if _, err := ra.ReadAt(f, int64(off+8)); err == nil {
				in.BackingFormat = string(f)
			}
		}
		off += 8 + (l+7)&^7
	}
	return in, nil
}

// info describes the size bytes of r, an image, as qemu-img info does,
// from its header (ReadInfo): without opening it or its backing file.
func info(r io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	in, err := ReadInfo(r, size)
	if err != nil {
		return nil, err
	}
	fs := format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: in.Size, Show: format.ShowSize},
		st.DiskSize(),
		{Key: "cluster-size", Label: "cluster_size", Value: in.ClusterSize},
	}
	if in.Backing != "" {
		fs = append(fs, format.Field{Key: "backing-filename", Label: "backing file", Value: in.Backing, Show: format.ShowName})
		if in.BackingFormat != "" {
			fs = append(fs, format.Field{Key: "backing-filename-format", Label: "backing file format", Value: in.BackingFormat, Show: format.ShowName})
		}
	}
	// qemu-img's format-specific data; version 2 images have no feature
	// bits, so qemu-img reports none.
	data := format.Info{
		{Key: "compat", Label: "compat", Value: "0.10"},
		{Key: "compression-type", Label: "compression type", Value: in.Compression},
	}
	if in.Version >= 3 {
		data[0].Value = "1.1"
		data = append(data, format.Field{Key: "lazy-refcounts", Label: "lazy refcounts", Value: in.LazyRefcounts})
	}
	data = append(data, format.Field{Key: "refcount-bits", Label: "refcount bits", Value: in.RefcountBits})
	if in.Version >= 3 {
		data = append(data,
			format.Field{Key: "corrupt", Label: "corrupt", Value: in.Corrupt},
			format.Field{Key: "extended-l2", Label: "extended l2", Value: in.ExtendedL2})
	}
	specific := format.Info{
		{Key: "type", Value: Name, Show: format.ShowHidden},
		{Key: "data", Value: data},
	}
	if in.Dirty {
		specific = append(specific, format.Field{Label: "dirty", Value: true})
	}
	return append(fs,
		format.Field{Key: "dirty-flag", Value: in.Dirty, Show: format.ShowHidden},
		format.Field{Key: "format-specific", Label: "Format specific information", Value: specific},
	), nil
}

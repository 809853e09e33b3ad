package vhdx

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
)

// Source is an open VHDX image: its disk, read at random. It is safe for
// concurrent use. Memory: the BAT cache (batCacheBytes) and, for a
// differencing image, the sector bitmap cache (bitmapCacheBytes), for it
// and for each parent.
type Source struct {
	l      *layout
	name   string
	bat    *batCache
	parent *Source           // a differencing image's parent
	host   format.ZeroMapper // the file's holes; nil: none known
	closer io.Closer         // the file, for Close; nil for OpenAt

	bitmaps bitmapCache
}

// Open opens f as a VHDX image. The Source's Close closes f (and the
// parents' files); so does a failing Open. A differencing image's parent
// is read only with o.AllowBacking, and each parent followed is told to
// o.Note.
func Open(f *os.File, o format.OpenOptions) (*Source, error) {
	s, err := open(f, f.Name(), o, &chain{})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// OpenAt opens the size bytes of r as a VHDX image, which must be
// self-contained: a differencing image, whose parent is a file beside it,
// is refused. The Source's Close does not close r.
func OpenAt(r io.ReaderAt, size int64, o format.OpenOptions) (*Source, error) {
	l, err := parse(r, size)
	if err == nil && l.hasParent {
		err = fmt.Errorf("%w: a differencing image read from a stream has no directory to find its parent %q in", ErrBacking, l.locator.firstPath())
	}
	if err == nil {
		err = l.scanBAT()
	}
	if err != nil {
		return nil, err
	}
	return newSource(l, "", nil), nil
}

func newSource(l *layout, name string, closer io.Closer) *Source {
	return &Source{
		l: l, name: name, closer: closer,
		bat: &batCache{r: l.r, fileSize: l.fileSize, off: int64(l.bat.off), entries: l.entries},
	}
}

// open opens one image of a chain; the first is the one the user named.
func open(f *os.File, name string, o format.OpenOptions, ch *chain) (*Source, error) {
	fail := func(err error) (*Source, error) {
		f.Close()
		if len(ch.names) > 1 {
			return nil, err // a parent's error, already prefixed by the child
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := ch.add(fi, name); err != nil {
		return fail(err)
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil { // a block device
			return fail(err)
		}
	}
	l, err := parse(f, size)
	if err == nil {
		err = l.scanBAT()
	}
	if err != nil {
		return fail(err)
	}
	s := newSource(l, name, f)
	if l.replayed == 0 && fi.Mode().IsRegular() {
		// Where the log rewrote nothing, the file's holes are zeros of
		// the present blocks.
		s.host = raw.Map(f, size)
	}
	if l.hasParent {
		if s.parent, err = openParent(s, o, ch); err != nil {
			f.Close()
			return nil, err
		}
	}
	return s, nil
}

// Size returns the virtual size: whole logical sectors.
func (s *Source) Size() int64 { return s.l.size }

// Close closes the image and its parents.
func (s *Source) Close() error {
	var err error
	if s.parent != nil {
		err = s.parent.Close()
	}
	if s.closer != nil {
		if e := s.closer.Close(); err == nil {
			err = e
		}
	}
	return err
}

// Block kinds, as a read sees them.
type kind uint8

const (
	zeros   kind = iota // reads as zeros
	present             // in the file
	parent              // in the parent
)

// span returns what the disk holds at off: its kind, where it is in the
// file (present), and for how many bytes (within its block; within a run
// of equal sector bitmap bits of a partially present block).
func (s *Source) span(off int64) (k kind, host, n int64, err error) {
	l := s.l
	b := off / l.blockSize
	inner := off - b*l.blockSize
	n = min(l.blockSize-inner, l.size-off)
	e, err := s.bat.entry(l.batIndex(b))
	if err != nil {
		return 0, 0, 0, err
	}
	state, fileOff := e&stateMask, int64(e>>offsetShift<<offsetShift)
	switch state {
	case blockFullyPresent:
		return present, fileOff + inner, n, nil
	case blockNotPresent:
		if l.hasParent {
			return parent, 0, n, nil
		}
		return zeros, 0, n, nil
	case blockPartiallyPresent:
		if !l.hasParent {
			break
		}
		in, run, err := s.bitmapRun(b, inner, n)
		if err != nil {
			return 0, 0, 0, err
		}
		if in {
			return present, fileOff + inner, run, nil
		}
		return parent, 0, run, nil
	case blockZero, blockUndefined, blockUnmapped, blockUnmapped095:
		// Zeros for every image type: UNDEFINED and UNMAPPED leave the
		// content to the implementation ([MS-VHDX] 2.5.1.1), and QEMU reads
		// zeros.
		return zeros, 0, n, nil
	}
	return 0, 0, 0, corrupt("%s: block %d: %s", s.name, b, stateName(state)) // scanBAT refused it already
}

// bitmapRun returns the sector bitmap bit of the sector at inner in
// block b (set: the sector is in this file) and the bytes, at most n, of
// the run of sectors from inner with that bit.
func (s *Source) bitmapRun(b, inner, n int64) (bool, int64, error) {
	bm, err := s.bitmap(b)
	if err != nil {
		return false, 0, err
	}
	bits := s.l.sectorBits()
	first := inner >> bits
	last := (inner + n - 1) >> bits
	set := bm[first/8]>>(first%8)&1 != 0
	for i := first + 1; i <= last; i++ {
		if bm[i/8]>>(i%8)&1 != 0 != set {
			return set, (i << bits) - inner, nil
		}
	}
	return set, n, nil
}

// bitmapCacheBytes bounds the sector bitmaps of blocks kept in memory
// (256 bytes a block of 1 MiB, 64 KiB of 256 MiB, at 512-byte sectors).
const bitmapCacheBytes = 1 << 20

// bitmap returns the sector bitmap bits of partially present block b, a
// bit a sector, read from its chunk's sector bitmap block once while it
// stays in a bounded cache.
func (s *Source) bitmap(b int64) ([]byte, error) {
	l := s.l
	c := &s.bitmaps
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	for i := range c.blocks {
		if c.blocks[i].b == b {
			c.blocks[i].used = c.tick
			return c.blocks[i].bits, nil
		}
	}
	chunk := b / l.chunkRatio
	e, err := s.bat.entry(chunk*(l.chunkRatio+1) + l.chunkRatio)
	if err != nil {
		return nil, err
	}
	n := l.blockSize >> l.sectorBits() / 8
	at := int64(e>>offsetShift<<offsetShift) + b%l.chunkRatio*n
	bm := make([]byte, n)
	if err := readAt(l.r, l.fileSize, bm, at); err != nil {
		return nil, fmt.Errorf("vhdx: %s: reading the sector bitmap at %#x: %w", s.name, at, err)
	}
	if int64(len(c.blocks)) < max(1, bitmapCacheBytes/n) {
		c.blocks = append(c.blocks, cachedBitmap{b: b, bits: bm, used: c.tick})
		return bm, nil
	}
	old := 0
	for i := range c.blocks {
		if c.blocks[i].used < c.blocks[old].used {
			old = i
		}
	}
	c.blocks[old] = cachedBitmap{b: b, bits: bm, used: c.tick}
	return bm, nil
}

type bitmapCache struct {
	mu     sync.Mutex
	blocks []cachedBitmap
	tick   uint64
}

type cachedBitmap struct {
	b    int64
	bits []byte
	used uint64
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	size := s.l.size
	if off < 0 {
		return 0, fmt.Errorf("vhdx: %s: read at negative offset %d", s.name, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > size-off {
		p, short = p[:size-off], true
	}
	for done := 0; done < len(p); {
		k, host, n, err := s.span(off + int64(done))
		if err != nil {
			return done, err
		}
		n = min(n, int64(len(p)-done))
		q := p[done : done+int(n)]
		switch k {
		case zeros:
			clear(q)
		case present:
			if err := readAt(s.l.r, s.l.fileSize, q, host); err != nil {
				return done, fmt.Errorf("vhdx: %s: reading at %#x: %w", s.name, host, err)
			}
		case parent:
			if err := s.readParent(q, off+int64(done)); err != nil {
				return done, err
			}
		}
		done += int(n)
	}
	if short {
		return len(p), io.EOF
	}
	return len(p), nil
}

// readParent reads from the parent; past its end, zeros.
func (s *Source) readParent(q []byte, off int64) error {
	psize := s.parent.Size()
	k := 0
	if off < psize {
		k = int(min(int64(len(q)), psize-off))
		if _, err := s.parent.ReadAt(q[:k], off); err != nil && err != io.EOF {
			return err
		}
	}
	clear(q[k:])
	return nil
}

// maxRegionBlocks bounds the blocks one Region call walks: a 64 TiB disk
// of holes takes a few calls.
const maxRegionBlocks = 1 << 16

// Region implements format.ZeroMapper: blocks in a zero state, and the
// holes of the file under present blocks, are zero; a differencing
// image's blocks in its parent are what the parent says.
func (s *Source) Region(start, length int64) (format.Region, error) {
	length = min(length, s.l.size-start)
	if start < 0 || length <= 0 {
		return format.Region{}, fmt.Errorf("vhdx: %s: region at %#x outside the disk (%d bytes)", s.name, start, s.l.size)
	}
	r := format.Region{Start: start}
	end := start + length
	for pos, walked := start, 0; pos < end && walked < maxRegionBlocks; walked++ {
		k, host, n, err := s.span(pos)
		if err != nil {
			return format.Region{}, err
		}
		n = min(n, end-pos)
		zero := k == zeros
		switch k {
		case present:
			zero, n = s.hostZero(host, n)
		case parent:
			if zero, n, err = s.parentZero(pos, n); err != nil {
				return format.Region{}, err
			}
		}
		if pos > start && zero != r.Zero {
			break
		}
		r.Zero = zero
		r.Length += n
		pos += n
	}
	return r, nil
}

// hostZero reports whether the file holds host..host+n as a hole (or
// ends before it), and for how much of n that holds.
func (s *Source) hostZero(host, n int64) (bool, int64) {
	if host >= s.l.fileSize {
		return true, n
	}
	if s.host == nil {
		return false, n
	}
	x, err := s.host.Region(host, min(n, s.l.fileSize-host))
	if err != nil || x.Length <= 0 {
		return false, n
	}
	if x.Zero && host+x.Length >= s.l.fileSize {
		return true, n // a hole to the end of the file, and past it
	}
	return x.Zero, min(x.Length, n)
}

// parentZero asks the parent about n bytes at off; past its end, zeros.
func (s *Source) parentZero(off, n int64) (bool, int64, error) {
	psize := s.parent.Size()
	if off >= psize {
		return true, n, nil
	}
	x, err := s.parent.Region(off, min(n, psize-off))
	if err != nil {
		return false, 0, err
	}
	return x.Zero, min(x.Length, n), nil
}

package vmdk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/zlib"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// compressLevel is the zlib level of compressed grains. QEMU compresses
// at zlib's default (6); level 3 of klauspost/compress is 4 to 6 % larger
// on binaries and source code, and 1.3 to 2 times as fast as its level 5
// (and twice as fast as that again as zlib's 6).
const compressLevel = 3

// StreamWriter writes a streamOptimized image (version 3) to an
// io.Writer, front to back, as VMware's tools write one for an OVA: the
// header (its grain directory offset GD_AT_END) and the descriptor, then
// each grain that holds data, zlib-compressed behind its marker, each
// grain table (behind its marker) once its grains are written, and at
// Close the grain directory, the footer (the header again, with the grain
// directory's offset) and the end-of-stream marker. Grains of zeros are
// left unallocated; a grain table that maps none is not written (its
// directory entry is 0). QEMU reads such an image through its footer.
//
// Data may arrive in any order and in pieces of any size; grains are
// written in the order they are completed, so the same writes give the
// same bytes, whatever Workers. A grain table is written once every byte
// of the 32 MiB it maps has been written or declared zero.
//
// Memory: the grains being compressed (a few per worker), one 2 KiB grain
// table per 32 MiB range still being written (one or two when data comes
// in order), and the grain directory, 4 bytes per 32 MiB range whose table
// maps data, in 4 KiB pages (256 KiB for a full 2 TiB disk).
//
// WriteAt and ZeroAt are safe for concurrent use (they are serialised);
// errors are sticky. Close completes the image; the writer never closes
// what it was given.
type StreamWriter struct {
	out   *countWriter
	size  int64 // virtual size: the delivered bytes rounded up to 512
	given int64 // bytes that will be delivered
	flags uint32

	mu      sync.Mutex
	err     error
	closed  bool
	partial map[int64]*[]byte    // grains assembled from pieces, by grain
	got     map[int64]int64      // bytes of each partial grain delivered
	live    map[int64]*liveTable // grain tables not yet written, by index
	gd      map[int64]*[gdPage]uint32

	jobs    chan *job
	ordered chan *job
	wg      sync.WaitGroup
	bufs    sync.Pool // *[]byte of grainBytes
	outs    sync.Pool // *bytes.Buffer
}

// liveTable is a grain table still being covered.
type liveTable struct {
	e     []uint32 // nil until a grain of its range is written
	cover int64    // bytes of its range written or declared zero
}

// job is a grain to compress and write, or a run of zeros to count, in
// the order they were given.
type job struct {
	grain int64   // grain index; -1: a run of zeros
	buf   *[]byte // the grain, zero-padded
	n     int64   // bytes of buf to compress (whole sectors)
	valid int64   // bytes delivered
	off   int64   // a run of zeros: its start and length
	out   *bytes.Buffer
	done  chan struct{}
}

// countWriter is a buffered writer that knows how much it has written.
type countWriter struct {
	w   *bufio.Writer
	pos int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.pos += int64(n)
	return n, err
}

// NewStreamWriter starts a streamOptimized image of a disk of size bytes
// (rounded up to whole 512-byte sectors, as QEMU sizes images) on w: it
// writes the header and the descriptor at once.
func NewStreamWriter(w io.Writer, size int64, o WriterOptions) (*StreamWriter, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("vmdk: disk size %d out of range (at most %d)", size, int64(MaxSize))
	}
	s := &StreamWriter{
		out: &countWriter{w: bufio.NewWriterSize(w, 1<<20)}, size: (size + sector - 1) &^ (sector - 1), given: size,
		flags:   flagNLDetect | flagCompress | flagMarker,
		partial: map[int64]*[]byte{}, got: map[int64]int64{}, live: map[int64]*liveTable{}, gd: map[int64]*[gdPage]uint32{},
	}
	if o.ZeroedGrain {
		s.flags |= flagZeroGrain
	}
	s.bufs.New = func() any { b := make([]byte, grainBytes); return &b }
	s.outs.New = func() any { return new(bytes.Buffer) }
	head := make([]byte, streamOverhead*sector)
	copy(head, sparseHeader(s.header(gdAtEnd)))
	desc := descriptorText(StreamOptimized, s.size, o)
	if len(desc) > descSectors*sector {
		return nil, fmt.Errorf("vmdk: a descriptor of %d bytes does not fit in %d sectors", len(desc), descSectors)
	}
	copy(head[sector:], desc)
	if _, err := s.out.Write(head); err != nil {
		return nil, fmt.Errorf("vmdk: writing the header: %w", err)
	}
	n := min(o.Workers, runtime.NumCPU())
	if n <= 0 {
		n = runtime.NumCPU()
	}
	s.jobs = make(chan *job, 2*n)
	s.ordered = make(chan *job, 4*n)
	for range n {
		s.wg.Go(s.compressor)
	}
	s.wg.Go(s.committer)
	return s, nil
}

// header returns the image's header, its grain directory at gd.
func (s *StreamWriter) header(gd uint64) *header {
	return &header{
		version: 3, flags: s.flags, capacity: uint64(s.size / sector), granularity: grainSectors,
		descOffset: 1, descSize: descSectors, gtes: gtEntries, gdOffset: gd, grainOffset: streamOverhead,
		compression: compressDeflate,
	}
}

// valid returns the delivered bytes of grain g.
func (s *StreamWriter) valid(g int64) int64 { return min(s.given-g*grainBytes, grainBytes) }

// rangeLen returns the delivered bytes grain table t maps.
func (s *StreamWriter) rangeLen(t int64) int64 {
	span := int64(gtEntries * grainBytes)
	return min(s.given, (t+1)*span) - t*span
}

func (s *StreamWriter) fail(err error) error {
	if s.err == nil {
		s.err = err
	}
	return s.err
}

// WriteAt writes p at disk offset off.
func (s *StreamWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := s.put(off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ZeroAt declares the n bytes at disk offset off zero.
func (s *StreamWriter) ZeroAt(off, n int64) error { return s.put(off, n, nil) }

func (s *StreamWriter) put(off, n int64, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return s.err
	case s.closed:
		return errors.New("vmdk: write after Close")
	case off < 0 || n < 0 || off+n > s.given:
		return fmt.Errorf("vmdk: write of %d bytes at %d outside the disk (%d bytes)", n, off, s.given)
	}
	// Whole grains of zeros are counted as one run: zStart..zEnd.
	zStart, zEnd := int64(-1), int64(-1)
	flushZeros := func() error {
		if zStart < 0 {
			return nil
		}
		j := &job{grain: -1, off: zStart, n: zEnd - zStart, done: closedChan}
		zStart = -1
		return s.enqueue(j, false)
	}
	pos := int64(0)
	for n > 0 {
		g := off / grainBytes
		inner := off - g*grainBytes
		k := min(n, grainBytes-inner)
		if p == nil && inner == 0 && len(s.partial) == 0 && n >= grainBytes {
			// A run of whole grains declared zero, counted at once.
			k = n / grainBytes * grainBytes
		}
		var piece []byte
		if p != nil {
			piece = p[pos : pos+k]
		}
		whole := inner == 0 && k >= s.valid(g) && s.partial[g] == nil
		var err error
		switch {
		case whole && (piece == nil || zero.IsZero(piece)):
			if zStart >= 0 && zEnd == off {
				zEnd += k
			} else if err = flushZeros(); err == nil {
				zStart, zEnd = off, off+k
			}
		case whole:
			if err = flushZeros(); err == nil {
				buf := s.bufs.Get().(*[]byte)
				copy(*buf, piece)
				err = s.submit(g, buf)
			}
		default:
			if err = flushZeros(); err == nil {
				err = s.putPiece(g, inner, k, piece)
			}
		}
		if err != nil {
			return s.fail(err)
		}
		off, n, pos = off+k, n-k, pos+k
	}
	if err := flushZeros(); err != nil {
		return s.fail(err)
	}
	return nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// putPiece adds part of grain g; the grain is submitted once whole.
func (s *StreamWriter) putPiece(g, inner, k int64, piece []byte) error {
	buf := s.partial[g]
	if buf == nil {
		buf = s.bufs.Get().(*[]byte)
		clear(*buf)
		s.partial[g] = buf
	}
	if piece != nil {
		copy((*buf)[inner:], piece)
	}
	s.got[g] += k
	switch {
	case s.got[g] > s.valid(g):
		return fmt.Errorf("vmdk: bytes of grain %d written twice", g)
	case s.got[g] < s.valid(g):
		return nil
	}
	delete(s.partial, g)
	delete(s.got, g)
	return s.submit(g, buf)
}

// submit queues a whole grain (its delivered bytes in buf): compressed and
// written, or counted as zeros.
func (s *StreamWriter) submit(g int64, buf *[]byte) error {
	valid := s.valid(g)
	if zero.IsZero((*buf)[:valid]) {
		s.bufs.Put(buf)
		return s.enqueue(&job{grain: -1, off: g * grainBytes, n: valid, done: closedChan}, false)
	}
	n := min(s.size-g*grainBytes, grainBytes) // whole sectors, zero-padded
	clear((*buf)[valid:n])
	return s.enqueue(&job{grain: g, buf: buf, n: n, valid: valid, done: make(chan struct{})}, true)
}

// enqueue hands j to the committer, and to the compressors if it is a
// grain. It releases s.mu while it waits for room: the committer takes it.
func (s *StreamWriter) enqueue(j *job, compress bool) error {
	s.mu.Unlock()
	if compress {
		s.jobs <- j
	}
	s.ordered <- j
	s.mu.Lock()
	return s.err
}

func (s *StreamWriter) compressor() {
	var zw *zlib.Writer
	for j := range s.jobs {
		out := s.outs.Get().(*bytes.Buffer)
		out.Reset()
		var m [12]byte
		out.Write(m[:])
		if zw == nil {
			zw, _ = zlib.NewWriterLevel(out, compressLevel)
		} else {
			zw.Reset(out)
		}
		zw.Write((*j.buf)[:j.n])
		zw.Close() // writing to a bytes.Buffer cannot fail
		b := out.Bytes()
		binary.LittleEndian.PutUint64(b, uint64(j.grain*grainSectors))
		binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-12))
		if pad := (sector - len(b)%sector) % sector; pad > 0 {
			out.Write(make([]byte, pad))
		}
		j.out = out
		close(j.done)
	}
}

// committer writes grains, and counts runs of zeros, in the order they
// were given.
func (s *StreamWriter) committer() {
	for j := range s.ordered {
		<-j.done
		s.mu.Lock()
		if s.err == nil {
			if err := s.commit(j); err != nil {
				s.fail(err)
			}
		}
		s.mu.Unlock()
		if j.buf != nil {
			s.bufs.Put(j.buf)
		}
		if j.out != nil {
			s.outs.Put(j.out)
		}
	}
}

func (s *StreamWriter) commit(j *job) error {
	if j.grain < 0 {
		return s.covered(j.off, j.n)
	}
	at := s.out.pos / sector
	if at+int64(j.out.Len())/sector > 1<<32-1 {
		return fmt.Errorf("vmdk: the image grows past 2 TiB, the most a grain table entry addresses")
	}
	if _, err := s.out.Write(j.out.Bytes()); err != nil {
		return fmt.Errorf("vmdk: writing a grain: %w", err)
	}
	t := s.table(j.grain / gtEntries)
	if t.e == nil {
		t.e = make([]uint32, gtEntries)
	}
	e := &t.e[j.grain%gtEntries]
	if *e != 0 {
		return fmt.Errorf("vmdk: grain %d written twice", j.grain)
	}
	*e = uint32(at)
	return s.covered(j.grain*grainBytes, j.valid)
}

// table returns the live grain table t.
func (s *StreamWriter) table(t int64) *liveTable {
	lt := s.live[t]
	if lt == nil {
		lt = &liveTable{}
		s.live[t] = lt
	}
	return lt
}

// covered counts n bytes at off as delivered, and writes each grain table
// whose range is whole.
func (s *StreamWriter) covered(off, n int64) error {
	span := int64(gtEntries * grainBytes)
	for n > 0 {
		t := off / span
		k := min(n, (t+1)*span-off)
		if s.live[t] == nil && k == s.rangeLen(t) {
			off, n = off+k, n-k // a whole range of zeros: no table
			continue
		}
		lt := s.table(t)
		lt.cover += k
		switch {
		case lt.cover > s.rangeLen(t):
			return fmt.Errorf("vmdk: bytes of grain table %d's range written twice", t)
		case lt.cover == s.rangeLen(t):
			if err := s.writeTable(t); err != nil {
				return err
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

// writeTable writes grain table t, if it maps any grain, behind its
// marker, and records it in the grain directory.
func (s *StreamWriter) writeTable(t int64) error {
	lt := s.live[t]
	delete(s.live, t)
	if lt == nil || lt.e == nil {
		return nil
	}
	b := make([]byte, sector+gtSectors*sector)
	copy(b, marker(markerGT, gtSectors))
	for i, e := range lt.e {
		binary.LittleEndian.PutUint32(b[sector+4*i:], e)
	}
	at := s.out.pos/sector + 1
	if _, err := s.out.Write(b); err != nil {
		return fmt.Errorf("vmdk: writing a grain table: %w", err)
	}
	page := s.gd[t/gdPage]
	if page == nil {
		page = new([gdPage]uint32)
		s.gd[t/gdPage] = page
	}
	page[t%gdPage] = uint32(at)
	return nil
}

// Abort stops the compressors; the image is left incomplete (no footer).
func (s *StreamWriter) Abort() {
	s.mu.Lock()
	if s.closed { // after Close: nothing to stop
		s.mu.Unlock()
		return
	}
	s.fail(errors.New("vmdk: write aborted"))
	s.closed = true
	s.mu.Unlock()
	s.stop()
}

func (s *StreamWriter) stop() {
	close(s.jobs)
	close(s.ordered)
	s.wg.Wait()
}

// Close writes what is pending, the grain tables not yet written, the
// grain directory, the footer and the end-of-stream marker, and flushes.
// Bytes never delivered read as zeros.
func (s *StreamWriter) Close() error {
	s.mu.Lock()
	if s.closed {
		defer s.mu.Unlock()
		return s.err
	}
	// Grains still in pieces are complete as they are.
	for _, g := range slices.Sorted(maps.Keys(s.partial)) {
		buf := s.partial[g]
		delete(s.partial, g)
		if s.err == nil {
			s.submit(g, buf)
		}
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if err := s.finish(); err != nil {
		return s.fail(err)
	}
	return nil
}

func (s *StreamWriter) finish() error {
	for _, t := range slices.Sorted(maps.Keys(s.live)) {
		if err := s.writeTable(t); err != nil {
			return err
		}
	}
	span := int64(gtEntries * grainSectors)
	entries := (s.size/sector + span - 1) / span
	gdSecs := (entries*4 + sector - 1) / sector
	if _, err := s.out.Write(marker(markerGD, uint64(gdSecs))); err != nil {
		return fmt.Errorf("vmdk: writing the grain directory: %w", err)
	}
	gdAt := s.out.pos / sector
	b := make([]byte, gdPage*4)
	for p := int64(0); p*gdPage < entries; p++ {
		n := min(gdPage, entries-p*gdPage)
		clear(b)
		if page := s.gd[p]; page != nil {
			for i := range n {
				binary.LittleEndian.PutUint32(b[4*i:], page[i])
			}
		}
		if _, err := s.out.Write(b[:n*4]); err != nil {
			return fmt.Errorf("vmdk: writing the grain directory: %w", err)
		}
	}
	if pad := (gdSecs*sector - entries*4); pad > 0 {
		s.out.Write(make([]byte, pad))
	}
	tail := slices.Concat(marker(markerFooter, 1), sparseHeader(s.header(uint64(gdAt))), marker(markerEOS, 0))
	if _, err := s.out.Write(tail); err != nil {
		return fmt.Errorf("vmdk: writing the footer: %w", err)
	}
	if err := s.out.w.Flush(); err != nil {
		return fmt.Errorf("vmdk: writing the footer: %w", err)
	}
	return nil
}

// Size returns the bytes written so far (all of the image, after Close).
func (s *StreamWriter) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.pos
}

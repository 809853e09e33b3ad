package compress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Restart points: reading at random into a zstd stream that has no seek
// table, such as every .vma.zst vzdump writes (zstd --threads=N writes one
// frame for the whole archive).
//
// A zstd frame is a chain of blocks, each at most 128 KiB decompressed.
// Decoding a block needs the decoder's state before it: the window (the
// last Window_Size bytes of output, which matches copy from), the entropy
// tables of earlier blocks (a block may say "repeat"), and the three
// repeat offsets. A restart point is a block where that state can be
// rebuilt from a little stored data:
//
//   - the block and the blocks after it until the next restart point (its
//     span) define their own tables before using them (no "treeless"
//     literals or "repeat" sequence tables left over from before it);
//   - they use no repeat offset the encoder set before it (zstd's
//     multithreaded encoder starts every job so: it invalidates the repeat
//     offsets and entropy tables, and takes only the job's overlap with the
//     previous one, a prefix of Window_Size/8 at most, as history);
//   - the history they copy from is the Dict bytes of output before it.
//
// The span is then decoded by an ordinary zstd decoder as a frame of its
// own: a frame header with the original window, the Dict bytes as raw
// blocks (which set the window and touch nothing else, so the repeat
// offsets stay at their initial values), and the span's blocks copied from
// the archive with the last one marked last. Whether a block is a restart
// point cannot be read off its header (repeat offsets are inside the
// sequences), so BuildRestarts proves each: it decodes the stream once as
// it is, decodes every span as a reader will, and keeps a point only if
// the two agree byte for byte. (A candidate is tried on its first MiB, and
// on until it has defined every table; one whose whole span then decodes
// otherwise is folded into the span before it.) It prefers points where
// Window_Size/8 bytes of history suffice (where a job started) and falls
// back to the whole window. vzdump's archives (zstd 1.5, level 3: a 2 MiB window, jobs of
// 8 MiB) get a point every Every bytes with 256 KiB of history each: an
// index of under 1 % of the archive with the default 32 MiB.
const (
	zstdFrameMagic   = 0xFD2FB528
	maxBlockBytes    = 128 << 10 // Block_Maximum_Size: a block's decompressed bytes at most
	restartChunk     = 1 << 20   // RestartReader's unit of decoding and caching
	restartCache     = 32 << 20  // RestartReader's cache of decoded chunks
	restartCursors   = 4         // live decoders RestartReader keeps for reads that go on
	restartStripes   = 64        // locks over the spans
	restartTestBlock = 4         // blocks decoded past those needed
	restartTest      = 1 << 20   // bytes a candidate's test decodes
	restartSearch    = 8 << 20   // bytes searched for a point with a small history (a job at level 3)
	restartMaxSearch = 32 << 20  // bytes searched past the target before giving up
	buildCache       = 64        // chunks of restartChunk BuildRestarts keeps of the stream
	maxSearchBlocks  = 1 << 20   // blocks BuildRestarts holds at most (empty blocks take 3 bytes)

	// DefaultRestartEvery is BuildRestarts' distance between restart points.
	DefaultRestartEvery = 32 << 20
	// MaxRestartWindow is the largest zstd window BuildRestarts indexes
	// and RestartReader decodes with (zstd -19 uses 8 MiB, --long=27 128
	// MiB).
	MaxRestartWindow = 128 << 20
	// MaxRestartSpan is the most decompressed bytes between two restart
	// points that RestartReader accepts.
	MaxRestartSpan = 1 << 30
)

// Restart is one restart point and its span of blocks.
type Restart struct {
	C    int64 // compressed offset of the span's first block header
	U    int64 // decompressed offset of the span's first byte
	Last int64 // compressed offset of the span's last block header
	End  int64 // compressed offset just past the span's last block
	WD   byte  // window descriptor the span is decoded under
	Dict int64 // bytes of output before U the span is decoded with
}

// Restarts are the restart points of a zstd stream, in order; together
// their spans hold all its decompressed bytes.
type Restarts struct {
	Size   int64 // decompressed bytes
	Points []Restart
}

// RestartOptions are BuildRestarts' options.
type RestartOptions struct {
	// Every is the decompressed bytes between restart points (at least 1
	// MiB; 0 for DefaultRestartEvery).
	Every int64
	// Concurrency of the decoder that reads the stream as it is (0 for 2).
	Concurrency int
	// Stream, if set, is given the decompressed stream in order as it is
	// read (the whole of it, once BuildRestarts succeeds); an error it
	// returns stops BuildRestarts.
	Stream io.Writer
}

// windowOf returns the window size a window descriptor declares.
func windowOf(wd byte) int64 {
	base := int64(1) << (10 + wd>>3)
	return base + base/8*int64(wd&7)
}

// descriptorFor returns the smallest window descriptor declaring at least
// w bytes.
func descriptorFor(w int64) byte {
	for wd := 0; wd < 256; wd++ {
		if windowOf(byte(wd)) >= w {
			return byte(wd)
		}
	}
	return 255
}

// Validate checks the points against a stream of size compressed bytes:
// in order, within it, their spans in no overlap, each at most
// MaxRestartSpan decompressed bytes and their histories within their
// windows.
func (x *Restarts) Validate(size int64) error {
	if len(x.Points) == 0 {
		if x.Size != 0 {
			return fmt.Errorf("restart points: none for %d bytes", x.Size)
		}
		return nil
	}
	for i, p := range x.Points {
		end := x.Size
		if i+1 < len(x.Points) {
			end = x.Points[i+1].U
		}
		prevEnd := int64(0)
		if i > 0 {
			prevEnd = x.Points[i-1].End
		}
		w := windowOf(p.WD)
		switch {
		case i == 0 && p.U != 0:
			return fmt.Errorf("restart point 0: at decompressed offset %d, not 0", p.U)
		case p.C < prevEnd || p.C > p.Last || p.End > size || p.End < 3 || p.Last > p.End-3:
			return fmt.Errorf("restart point %d: blocks %d..%d (last at %d) out of order or outside the %d-byte stream", i, p.C, p.End, p.Last, size)
		case end <= p.U || end-p.U > MaxRestartSpan:
			return fmt.Errorf("restart point %d: a span of %d bytes", i, end-p.U)
		case end-p.U > (p.End-p.C)/3*maxBlockBytes+maxBlockBytes:
			return fmt.Errorf("restart point %d: %d bytes from %d compressed", i, end-p.U, p.End-p.C)
		case w > MaxRestartWindow:
			return fmt.Errorf("restart point %d: a window of %d MiB (at most %d)", i, w>>20, MaxRestartWindow>>20)
		case p.Dict < 0 || p.Dict > w || p.Dict > p.U:
			return fmt.Errorf("restart point %d: %d bytes of history", i, p.Dict)
		}
	}
	return nil
}

// A frame as the scanner found it.
type zframe struct {
	wd       byte  // window descriptor for its spans
	window   int64 // its window
	checksum bool
}

// zblock is a block as the scanner found it.
type zblock struct {
	off, end int64 // header offset; just past its content
	most     int64 // its decompressed bytes at most
	last     bool  // its frame's last block
	cand     bool  // it may start a span: it uses no tables from before it
	defines  uint8 // the tables it defines (tableHuffman, …)
	repeats  uint8 // the tables it takes from blocks before it
	frame    *zframe
}

// zscanner walks a zstd stream's frames and blocks front to back.
type zscanner struct {
	br    *bufio.Reader
	pos   int64
	frame *zframe // nil between frames
	buf   []byte
}

func (s *zscanner) errorf(at int64, format string, args ...any) error {
	return &Error{Format: Zstd, Offset: at, Err: fmt.Errorf(format, args...)}
}

func (s *zscanner) read(n int) ([]byte, error) {
	if cap(s.buf) < n {
		s.buf = make([]byte, n)
	}
	b := s.buf[:n]
	if _, err := io.ReadFull(s.br, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, s.errorf(s.pos, "%w", err)
	}
	s.pos += int64(n)
	return b, nil
}

// next returns the next block, io.EOF after the last frame.
func (s *zscanner) next() (zblock, error) {
	for s.frame == nil {
		if _, err := s.br.Peek(1); err == io.EOF {
			return zblock{}, io.EOF
		}
		at := s.pos
		h, err := s.read(4)
		if err != nil {
			return zblock{}, err
		}
		magic := binary.LittleEndian.Uint32(h)
		if magic&0xFFFFFFF0 == 0x184D2A50 { // a skippable frame
			h, err := s.read(4)
			if err != nil {
				return zblock{}, err
			}
			n := int64(binary.LittleEndian.Uint32(h))
			if k, err := s.br.Discard(int(n)); err != nil {
				s.pos += int64(k)
				return zblock{}, s.errorf(s.pos, "skippable frame at %d: %w", at, io.ErrUnexpectedEOF)
			}
			s.pos += n
			continue
		}
		if magic != zstdFrameMagic {
			return zblock{}, s.errorf(at, "not a zstd frame (magic %#08x)", magic)
		}
		h, err = s.read(1)
		if err != nil {
			return zblock{}, err
		}
		fhd := h[0]
		if fhd&0x08 != 0 {
			return zblock{}, s.errorf(at, "frame header: reserved bit set")
		}
		single := fhd&0x20 != 0
		f := &zframe{checksum: fhd&0x04 != 0}
		if !single {
			h, err := s.read(1)
			if err != nil {
				return zblock{}, err
			}
			f.wd, f.window = h[0], windowOf(h[0])
		}
		if did := []int{0, 1, 2, 4}[fhd&3]; did > 0 {
			h, err := s.read(did)
			if err != nil {
				return zblock{}, err
			}
			var id uint32
			for i := did - 1; i >= 0; i-- {
				id = id<<8 | uint32(h[i])
			}
			if id != 0 {
				return zblock{}, s.errorf(at, "frame made with dictionary %d: not read at random", id)
			}
		}
		fcs := []int{0, 2, 4, 8}[fhd>>6]
		if single && fcs == 0 {
			fcs = 1
		}
		if fcs > 0 {
			h, err := s.read(fcs)
			if err != nil {
				return zblock{}, err
			}
			var v uint64
			for i := fcs - 1; i >= 0; i-- {
				v = v<<8 | uint64(h[i])
			}
			if fcs == 2 {
				v += 256
			}
			if single {
				if v > MaxRestartWindow {
					v = MaxRestartWindow + 1
				}
				f.window = max(int64(v), 1<<10)
				f.wd = descriptorFor(f.window)
			}
		}
		if f.window > MaxRestartWindow {
			return zblock{}, s.errorf(at, "frame window of %d MiB: more than the %d MiB read at random", f.window>>20, MaxRestartWindow>>20)
		}
		s.frame = f
	}
	b := zblock{off: s.pos, frame: s.frame}
	h, err := s.read(3)
	if err != nil {
		return zblock{}, err
	}
	v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
	b.last = v&1 != 0
	typ, size := (v>>1)&3, int(v>>3)
	maxSize := int(min(s.frame.window, maxBlockBytes))
	switch typ {
	case 0: // raw
		if size > maxSize {
			return zblock{}, s.errorf(b.off, "raw block of %d bytes", size)
		}
		b.most = int64(size)
		if _, err := s.read(size); err != nil {
			return zblock{}, err
		}
		b.cand = true
	case 1: // RLE
		if size > maxBlockBytes {
			return zblock{}, s.errorf(b.off, "RLE block of %d bytes", size)
		}
		b.most = int64(size)
		if _, err := s.read(1); err != nil {
			return zblock{}, err
		}
		b.cand = true
	case 2:
		if size > maxSize || size == 0 {
			return zblock{}, s.errorf(b.off, "compressed block of %d bytes", size)
		}
		body, err := s.read(size)
		if err != nil {
			return zblock{}, err
		}
		b.most = int64(min(s.frame.window, maxBlockBytes))
		b.defines, b.repeats, err = tables(body)
		b.cand = b.repeats == 0
		if err != nil {
			return zblock{}, s.errorf(b.off, "compressed block: %v", err)
		}
	default:
		return zblock{}, s.errorf(b.off, "block of reserved type 3")
	}
	b.end = s.pos
	if b.last {
		if s.frame.checksum {
			if _, err := s.read(4); err != nil {
				return zblock{}, err
			}
		}
		s.frame = nil
	}
	return b, nil
}

// Entropy tables a block defines or takes from before it ("repeat").
const (
	tableHuffman = 1 << iota // literals
	tableLL
	tableOF
	tableML
	allTables = tableHuffman | tableLL | tableOF | tableML
)

// tables returns the entropy tables a compressed block's body defines and
// those it takes from an earlier block (its literals "treeless", a
// sequence table "repeat"; RFC 8878 3.1.1.3).
func tables(body []byte) (defines, repeats uint8, err error) {
	short := errors.New("its sections run past its end")
	lt, sf := body[0]&3, (body[0]>>2)&3
	var hl, cl int // header and content length of the literals section
	if lt < 2 {
		var regen int
		switch sf {
		case 0, 2:
			hl, regen = 1, int(body[0]>>3)
		case 1:
			if len(body) < 2 {
				return 0, 0, short
			}
			hl, regen = 2, int(body[0]>>4)|int(body[1])<<4
		case 3:
			if len(body) < 3 {
				return 0, 0, short
			}
			hl, regen = 3, int(body[0]>>4)|int(body[1])<<4|int(body[2])<<12
		}
		cl = regen
		if lt == 1 {
			cl = 1
		}
	} else {
		hl = []int{3, 3, 4, 5}[sf]
		if len(body) < hl {
			return 0, 0, short
		}
		var v uint64
		for i := hl - 1; i >= 0; i-- {
			v = v<<8 | uint64(body[i])
		}
		bits := []uint{10, 10, 14, 18}[sf]
		cl = int(v>>(4+bits)) & (1<<bits - 1)
	}
	if hl+cl > len(body) {
		return 0, 0, short
	}
	switch lt {
	case 2:
		defines |= tableHuffman
	case 3:
		repeats |= tableHuffman
	}
	seq := body[hl+cl:]
	if len(seq) == 0 {
		return 0, 0, short
	}
	var at int
	switch b := seq[0]; {
	case b == 0:
		return defines, repeats, nil // no sequences, no tables
	case b < 128:
		at = 1
	case b < 255:
		at = 2
	default:
		at = 3
	}
	if len(seq) <= at {
		return 0, 0, short
	}
	m := seq[at]
	for i, t := range []uint8{tableLL, tableOF, tableML} {
		if (m>>(6-2*i))&3 == 3 {
			repeats |= t
		} else {
			defines |= t
		}
	}
	return defines, repeats, nil
}

// spanSource is a span's frame: the header, the history as raw blocks,
// and the span's blocks with the last one marked last, read from the
// archive 1 MiB at a time. pos is the compressed offset up to which the
// decoder has taken the blocks.
type spanSource struct {
	head []byte
	r    io.ReaderAt
	pos  int64 // next compressed offset handed out
	last int64 // where the last block's header is
	end  int64
	buf  []byte // compressed bytes from bufAt
	at   int64
}

func newSpanSource(r io.ReaderAt, p Restart, dict []byte) *spanSource {
	head := make([]byte, 0, 6+len(dict)+len(dict)/maxBlockBytes*3+3)
	head = binary.LittleEndian.AppendUint32(head, zstdFrameMagic)
	head = append(head, 0, p.WD) // no checksum, no content size, no dictionary
	step := int(min(windowOf(p.WD), maxBlockBytes))
	for len(dict) > 0 {
		n := min(len(dict), step)
		v := uint32(n) << 3 // a raw block, not the last
		head = append(head, byte(v), byte(v>>8), byte(v>>16))
		head = append(head, dict[:n]...)
		dict = dict[n:]
	}
	return &spanSource{head: head, r: r, pos: p.C, last: p.Last, end: p.End, at: p.C}
}

func (s *spanSource) Read(b []byte) (int, error) {
	if len(s.head) > 0 {
		n := copy(b, s.head)
		s.head = s.head[n:]
		return n, nil
	}
	if s.pos >= s.end {
		return 0, io.EOF
	}
	if s.pos >= s.at+int64(len(s.buf)) {
		if s.buf == nil {
			s.buf = make([]byte, 0, 1<<20)
		}
		s.at, s.buf = s.pos, s.buf[:min(int64(cap(s.buf)), s.end-s.pos)]
		n, err := s.r.ReadAt(s.buf, s.at)
		if n < len(s.buf) {
			s.buf = s.buf[:n]
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if s.last >= s.at && s.last < s.at+int64(n) {
			s.buf[s.last-s.at] |= 1
		}
	}
	n := copy(b, s.buf[s.pos-s.at:])
	s.pos += int64(n)
	return n, nil
}

// newSpanDecoder returns a decoder of one span. It decodes in the calling
// goroutine, a block at a time, reading no further ahead than the block
// it decodes (which builder.decode relies on).
func newSpanDecoder(src io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(src, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(MaxRestartWindow), zstd.WithDecoderMaxMemory(1<<62))
}

// builder holds BuildRestarts' state.
type builder struct {
	ctx    context.Context
	r      io.ReaderAt
	truth  io.Reader
	tb     []byte // the stream's decompressed bytes from base on
	base   int64
	eof    bool
	sc     *zscanner
	bl     []zblock // blocks from the current point's on
	us     []int64  // their decompressed offsets, as far as decoded
	done   bool     // the scanner is at the end
	dec    *zstd.Decoder
	stream io.Writer // RestartOptions.Stream
}

// BuildRestarts reads the zstd stream r of size bytes front to back and
// returns its restart points, one about every o.Every decompressed bytes
// where the stream has one, each proven by decoding its span as
// RestartReader will and comparing it with the stream decoded as it is.
// It calls emit with each point and its history (valid only during the
// call), in order. Memory is bounded by o.Every, the window, the search
// and a cache of the stream's last 64 MiB (some 150 MiB with the
// defaults), not by the stream.
func BuildRestarts(ctx context.Context, r io.ReaderAt, size int64, o RestartOptions, emit func(Restart, []byte) error) (*Restarts, error) {
	every := o.Every
	if every == 0 {
		every = DefaultRestartEvery
	}
	if every < 1<<20 || every > MaxRestartSpan/4 {
		return nil, fmt.Errorf("restart points every %d bytes: want 1 MiB to %d MiB", every, MaxRestartSpan>>22)
	}
	conc := o.Concurrency
	if conc <= 0 {
		conc = 2
	}
	// The stream is read by the scanner, the decoder of it as it is and
	// the decoders of spans, all within the same stretch: a cache of its
	// last chunks lets them read it once (a remote object, once over the
	// network).
	r = &chunkCache{r: r, size: size, chunks: newBlockCache[int64](buildCache*restartChunk, 0)}
	truth, err := zstd.NewReader(bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<20), zstd.WithDecoderConcurrency(conc),
		zstd.WithDecoderMaxWindow(MaxRestartWindow), zstd.WithDecoderMaxMemory(1<<62))
	if err != nil {
		return nil, err
	}
	defer truth.Close()
	b := &builder{ctx: ctx, r: r, truth: truth, stream: o.Stream,
		sc: &zscanner{br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<20)}}
	defer func() {
		if b.dec != nil {
			b.dec.Close()
		}
	}()
	x := &Restarts{}
	u := int64(0)
	// A point is emitted once the next one is proven: if the next one's
	// span does not decode as the stream, it is no point, and the span
	// before it goes on through its blocks (prev, and its blocks, kept).
	var (
		prev       *Restart
		prevDict   []byte
		prevBlocks []zblock
	)
	flush := func() error {
		if prev == nil {
			return nil
		}
		if err := emit(*prev, prevDict); err != nil {
			return err
		}
		x.Points = append(x.Points, *prev)
		prev = nil
		return nil
	}
	for {
		if err := b.fill(1); err != nil {
			return nil, err
		}
		if len(b.bl) == 0 {
			break // the end of the stream
		}
		// A frame starts: its first block is a point with no history.
		f := b.bl[0].frame
		window := windowOf(f.wd)
		p := Restart{C: b.bl[0].off, U: u, WD: f.wd}
		after := 0 // p's span ends past this block
		for {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			next, dict, err := b.search(&p, every, after)
			if errors.Is(err, errNotPoint) && prev != nil {
				after = len(prevBlocks)
				b.bl = append(prevBlocks, b.bl...)
				p, prev, prevBlocks = *prev, nil, nil
				continue
			}
			if err != nil {
				return nil, err
			}
			if err := flush(); err != nil {
				return nil, err
			}
			p.Last, p.End = b.bl[next-1].off, b.bl[next-1].end
			nu := b.us[next]
			if nu > p.U { // a span of no bytes (an empty frame) is no point
				q := p
				prev, prevDict = &q, append(prevDict[:0], b.tb[p.U-p.Dict-b.base:p.U-b.base]...)
				prevBlocks = append([]zblock(nil), b.bl[:next]...)
			}
			u = nu
			last := b.bl[next-1].last
			b.bl = append([]zblock(nil), b.bl[next:]...)
			if last {
				break
			}
			from := nu
			if prev != nil {
				from = prev.U
			}
			b.trim(from - window)
			p, after = Restart{C: b.bl[0].off, U: nu, WD: f.wd, Dict: dict}, 0
		}
		if err := flush(); err != nil {
			return nil, err
		}
		prevBlocks = nil
	}
	// The stream as it is must end where the spans do.
	if err := b.ensure(u + 1); err != nil {
		return nil, err
	}
	if !b.eof || b.base+int64(len(b.tb)) != u {
		return nil, &Error{Format: Zstd, Offset: size, Err: fmt.Errorf("restart points: the spans hold %d bytes, the stream more", u)}
	}
	x.Size = u
	if err := x.Validate(size); err != nil { // a span folded past MaxRestartSpan
		return nil, &Error{Format: Zstd, Offset: -1, Err: err}
	}
	return x, nil
}

// chunkCache reads r through a cache of its last buildCache chunks. Its
// readers run in parallel (the stream's decoder reads in goroutines of its
// own).
type chunkCache struct {
	mu     sync.Mutex
	r      io.ReaderAt
	size   int64
	chunks *blockCache[int64]
}

func (c *chunkCache) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("zstd: negative offset")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= c.size {
			return n, io.EOF
		}
		k := at / restartChunk
		b, ok := c.chunks.get(k)
		if !ok {
			b = make([]byte, min(restartChunk, c.size-k*restartChunk))
			if m, err := c.r.ReadAt(b, k*restartChunk); m < len(b) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			c.chunks.put(k, b)
		}
		n += copy(p[n:], b[at-k*restartChunk:])
	}
	return n, nil
}

// restartSmallDict is the history tried first: a job's overlap in zstd's
// multithreaded encoder at levels up to 15 (Window_Size/8 with a 2 MiB
// window).
const restartSmallDict = 256 << 10

// blocksFor reads blocks and returns how many of bl, past after, can hold
// goal decompressed bytes at most (all to its frame's end if fewer), plus
// restartTestBlock.
func (b *builder) blocksFor(goal int64, after int) (int, error) {
	n, sum := 0, int64(0)
	for {
		if n == len(b.bl) {
			if err := b.fill(n + 1); err != nil {
				return 0, err
			}
			if n == len(b.bl) {
				return n, nil // the frame's end
			}
		}
		if n > after {
			sum += b.bl[n].most
		}
		n++
		if sum >= goal && n > after+1 {
			if err := b.fill(n + restartTestBlock); err != nil {
				return 0, err
			}
			return min(n+restartTestBlock, len(b.bl)), nil
		}
		if n > maxSearchBlocks {
			return n, nil
		}
	}
}

// fill reads blocks until bl holds n or its frame's last.
func (b *builder) fill(n int) error {
	for len(b.bl) < n && !b.done && (len(b.bl) == 0 || !b.bl[len(b.bl)-1].last) {
		blk, err := b.sc.next()
		if err == io.EOF {
			b.done = true
			break
		}
		if err != nil {
			return err
		}
		b.bl = append(b.bl, blk)
	}
	return nil
}

// ensure reads the stream as it is until tb holds its bytes up to n (or
// the stream ends).
func (b *builder) ensure(n int64) error {
	for b.base+int64(len(b.tb)) < n && !b.eof {
		if len(b.tb) == cap(b.tb) {
			b.tb = append(b.tb, make([]byte, max(1<<20, len(b.tb)))...)[:len(b.tb)]
		}
		k, err := b.truth.Read(b.tb[len(b.tb):cap(b.tb)])
		if b.stream != nil && k > 0 {
			if _, err := b.stream.Write(b.tb[len(b.tb) : len(b.tb)+k]); err != nil {
				return &Error{Format: Zstd, Offset: -1, Err: fmt.Errorf("the decompressed stream's reader: %w", err)}
			}
		}
		b.tb = b.tb[:len(b.tb)+k]
		if err == io.EOF {
			b.eof = true
		} else if err != nil {
			return &Error{Format: Zstd, Offset: -1, Err: err}
		}
	}
	return nil
}

// trim drops tb's bytes before from.
func (b *builder) trim(from int64) {
	if from <= b.base {
		return
	}
	n := copy(b.tb, b.tb[from-b.base:])
	b.tb = b.tb[:n]
	b.base = from
}

// errNotPoint is BuildRestarts' inner error for a point whose span does
// not decode as the stream.
var errNotPoint = errors.New("not a restart point")

// errDiffers stops a decode at the first byte that differs from the
// stream's.
var errDiffers = errors.New("differs")

// spanWriter takes a span decoder's output a block at a time, compares it
// with the stream's and notes where each block ends.
type spanWriter struct {
	b     *builder
	src   *spanSource
	at    int64 // decompressed offset of the next byte
	from  int64 // where the span's own bytes begin (before: its history)
	marks [][2]int64
}

func (w *spanWriter) Write(p []byte) (int, error) {
	end := w.at + int64(len(p))
	if end > w.from {
		if err := w.b.ensure(end); err != nil {
			return 0, err
		}
		lo := max(w.at, w.from)
		if w.b.base+int64(len(w.b.tb)) < end || !bytes.Equal(p[lo-w.at:], w.b.tb[lo-w.b.base:end-w.b.base]) {
			return 0, errDiffers
		}
	}
	w.at = end
	w.marks = append(w.marks, [2]int64{w.src.pos, end})
	return len(p), nil
}

// decode decodes blocks [0, j) of bl from point p, with p.Dict bytes of
// history, and reports whether they give the stream's bytes. If marks,
// it sets us[k] for every k up to j to block k's decompressed offset.
func (b *builder) decode(p Restart, j int, marks bool) (bool, error) {
	q := p
	q.C, q.Last, q.End = b.bl[0].off, b.bl[j-1].off, b.bl[j-1].end
	src := newSpanSource(b.r, q, b.tb[p.U-p.Dict-b.base:p.U-b.base])
	if b.dec == nil {
		d, err := newSpanDecoder(src)
		if err != nil {
			return false, err
		}
		b.dec = d
	} else if err := b.dec.Reset(src); err != nil {
		return false, err
	}
	w := &spanWriter{b: b, src: src, at: p.U - p.Dict, from: p.U}
	_, err := b.dec.WriteTo(w)
	if err != nil {
		var ze *Error
		if errors.As(err, &ze) {
			return false, err // the stream as it is failed
		}
		return false, nil // a decoder error or a difference: not a point
	}
	if marks {
		b.us = b.us[:0]
		m := 0
		u := p.U
		for k := 0; k <= j; k++ {
			at := b.bl[j-1].end
			if k < j {
				at = b.bl[k].off
			}
			for m < len(w.marks) && w.marks[m][0] <= at {
				u = w.marks[m][1]
				m++
			}
			b.us = append(b.us, u)
		}
	}
	return true, nil
}

// search proves point p's span and finds where it ends: at the first
// candidate block every bytes on or further that is a restart point with
// restartSmallDict bytes of history (searched over restartSearch bytes),
// else at the first with the whole window (searched up to
// restartMaxSearch bytes further), else at the frame's end. It returns the
// index in bl where the span ends (us holding the offsets up to there)
// and the history the next point needs. p.Dict grows to the whole window
// if its span needs it.
func (b *builder) search(p *Restart, every int64, after int) (int, int64, error) {
	window := windowOf(p.WD)
	small := min(window, restartSmallDict)
	target := p.U + every
	// The blocks decoded: as many as can hold every + restartSearch bytes
	// (past after), by each block's most, so that the stream held in tb
	// is bounded whatever the blocks hold.
	goal := every + restartSearch + restartTest
	tested := after // candidates up to here failed, or are not to be taken
	for {
		if err := b.ctx.Err(); err != nil {
			return 0, 0, err
		}
		n, err := b.blocksFor(goal, after)
		if err != nil {
			return 0, 0, err
		}
		complete := b.bl[len(b.bl)-1].last
		ok, err := b.decode(*p, n, true)
		if err == nil && !ok && p.Dict < min(window, p.U) {
			p.Dict = min(window, p.U)
			ok, err = b.decode(*p, n, true)
		}
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			return 0, 0, &Error{Format: Zstd, Offset: p.C, Err: fmt.Errorf(
				"the blocks from compressed offset %d decode otherwise than the stream: %w (write it seekable instead)", p.C, errNotPoint)}
		}
		whole := complete && n == len(b.bl) // the frame ends at bl[n-1]
		reached := b.us[n]
		if after > 0 && after < n {
			target = max(target, b.us[after])
		}
		if whole && (reached <= target || n <= after+1) {
			return n, 0, nil // the frame ends within the span
		}
		if reached >= target+restartSearch || whole {
			if tested == after {
				lastU := int64(-1) // a candidate where the last one was (empty blocks) is the same
				for c := after + 1; c < n && b.us[c] < target+restartSearch; c++ {
					if b.us[c] < target || !b.bl[c].cand || b.us[c] < small || b.us[c] == lastU {
						continue
					}
					if err := b.ctx.Err(); err != nil {
						return 0, 0, err
					}
					lastU = b.us[c]
					if ok, err := candidateTest(b, c, n, small); err != nil || ok {
						return c, small, err
					}
				}
			}
			for c := max(1, tested+1); c < n; c++ {
				tested = c
				if b.us[c] < target || !b.bl[c].cand || b.us[c] == b.us[c-1] && b.bl[c-1].cand {
					continue
				}
				if err := b.ctx.Err(); err != nil {
					return 0, 0, err
				}
				d := min(window, b.us[c])
				if ok, err := candidateTest(b, c, n, d); err != nil || ok {
					return c, d, err
				}
			}
			if whole {
				return n, 0, nil // no point before the frame's end
			}
			if reached > target+restartMaxSearch {
				return 0, 0, &Error{Format: Zstd, Offset: p.C, Err: fmt.Errorf(
					"no restart point found in the %d MiB after compressed offset %d (write it seekable instead)", (reached-p.U)>>20, p.C)}
			}
		}
		goal *= 2
		if n > maxSearchBlocks {
			return 0, 0, &Error{Format: Zstd, Offset: p.C, Err: fmt.Errorf(
				"no restart point found in the %d blocks after compressed offset %d (write it seekable instead)", len(b.bl), p.C)}
		}
	}
}

// candidateTest is builder.test; the internal tests replace it with one
// that takes every candidate, to see BuildRestarts through points that
// fail.
var candidateTest = (*builder).test

// test decodes the blocks of bl from c on (before n) as a point with
// dict bytes of history, and reports whether they give the stream's bytes.
// It decodes restartTest bytes and on until every entropy table has been
// defined since c (up to 8 times that), and fails at once a block that
// takes a table defined before c: a stretch of raw blocks (incompressible
// data, zeros) passes any test, and what follows it may still use the
// state from before.
func (b *builder) test(c, n int, dict int64) (bool, error) {
	u := b.us[c]
	defined := uint8(0)
	t := c
	for t < n && (b.us[t] < u+restartTest || defined != allTables && b.us[t] < u+8*restartTest) {
		if b.bl[t].repeats&^defined != 0 {
			return false, nil
		}
		defined |= b.bl[t].defines
		t++
	}
	saved, savedUs := b.bl, b.us
	b.bl = b.bl[c:t]
	defer func() { b.bl, b.us = saved, savedUs }()
	return b.decode(Restart{U: u, WD: b.bl[0].frame.wd, Dict: dict}, t-c, false)
}

// RestartReader reads a zstd stream at random through its restart points:
// a read decodes the span that holds it from its point, in chunks of 1 MiB
// kept in a cache of 32 MiB; a read that goes on where an earlier one
// ended continues that decoder (a few are kept). Reads may run in
// parallel; reads in one span wait for each other.
type RestartReader struct {
	r       io.ReaderAt
	x       *Restarts
	dict    func(i int) ([]byte, error)
	locks   [restartStripes]sync.Mutex
	mu      sync.Mutex
	cache   *blockCache[[2]int] // by span and chunk
	cursors []*cursor
	idle    []*zstd.Decoder // decoders between spans, reused: a decoder's window is allocated once
	keep    int             // cursors kept, and idle decoders
	closed  bool            // decoders parked after Close are closed
}

// cursor is a decoder of one span, at chunk next.
type cursor struct {
	span, next int
	dec        *zstd.Decoder
}

// NewRestartReader returns a reader of the zstd stream r through its
// restart points x (checked with x.Validate against r's size); dict
// returns point i's history, x.Points[i].Dict bytes.
func NewRestartReader(r io.ReaderAt, x *Restarts, dict func(i int) ([]byte, error)) *RestartReader {
	window := int64(1 << 20)
	for _, p := range x.Points {
		window = max(window, windowOf(p.WD))
	}
	keep := int(max(1, min(restartCursors, (64<<20)/window)))
	return &RestartReader{r: r, x: x, dict: dict, cache: newBlockCache[[2]int](restartCache, 0), keep: keep}
}

// Size returns the decompressed size.
func (s *RestartReader) Size() int64 { return s.x.Size }

// Close releases the decoders.
func (s *RestartReader) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cursors {
		c.dec.Close()
	}
	for _, d := range s.idle {
		d.Close()
	}
	s.cursors, s.idle, s.closed = nil, nil, true
	return nil
}

// ReadAt implements io.ReaderAt over the decompressed stream.
func (s *RestartReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("zstd: negative offset")
	}
	pts := s.x.Points
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= s.x.Size {
			return n, io.EOF
		}
		i := sort.Search(len(pts), func(i int) bool { return pts[i].U > at }) - 1
		k := int((at - pts[i].U) / restartChunk)
		b, err := s.chunk(i, k)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[at-pts[i].U-int64(k)*restartChunk:])
	}
	return n, nil
}

// spanEnd returns the decompressed offset where span i ends.
func (s *RestartReader) spanEnd(i int) int64 {
	if i+1 < len(s.x.Points) {
		return s.x.Points[i+1].U
	}
	return s.x.Size
}

func (s *RestartReader) cached(i, k int) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache.get([2]int{i, k})
}

// chunk returns chunk k of span i: cached, or decoded.
func (s *RestartReader) chunk(i, k int) ([]byte, error) {
	if b, ok := s.cached(i, k); ok {
		return b, nil
	}
	l := &s.locks[i%restartStripes]
	l.Lock()
	defer l.Unlock()
	if b, ok := s.cached(i, k); ok {
		return b, nil
	}
	p := s.x.Points[i]
	c := s.cursor(i, k)
	if c == nil {
		dict, err := s.dict(i)
		if err != nil {
			return nil, fmt.Errorf("zstd: restart point %d: %w", i, err)
		}
		if int64(len(dict)) != p.Dict {
			return nil, fmt.Errorf("zstd: restart point %d: %d bytes of history, the index says %d", i, len(dict), p.Dict)
		}
		dec, err := s.decoder(newSpanSource(s.r, p, dict))
		if err != nil {
			return nil, err
		}
		c = &cursor{span: i, dec: dec}
		if _, err := io.CopyN(io.Discard, dec, p.Dict); err != nil {
			dec.Close()
			return nil, s.spanError(i, err)
		}
	}
	end := s.spanEnd(i)
	var out []byte
	for c.next <= k {
		idx := c.next
		from := p.U + int64(idx)*restartChunk
		b := make([]byte, min(restartChunk, end-from))
		if _, err := io.ReadFull(c.dec, b); err != nil {
			c.dec.Close()
			return nil, s.spanError(i, err)
		}
		c.next++
		if from+int64(len(b)) == end { // the span must end here
			var one [1]byte
			if n, err := c.dec.Read(one[:]); n > 0 || err != io.EOF {
				c.dec.Close()
				return nil, s.spanError(i, errors.New("more bytes than the index says"))
			}
			s.release(c.dec)
			c = nil
		}
		s.put(i, idx, b)
		out = b
		if c == nil {
			break
		}
	}
	if c != nil {
		s.park(c)
	}
	return out, nil
}

func (s *RestartReader) spanError(i int, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = errors.New("fewer bytes than the index says")
	}
	p := s.x.Points[i]
	return &Error{Format: Zstd, Offset: p.C, Err: fmt.Errorf("restart point %d (decompressed offset %d): %w", i, p.U, err)}
}

// decoder returns an idle decoder reset to src, or a new one.
func (s *RestartReader) decoder(src io.Reader) (*zstd.Decoder, error) {
	s.mu.Lock()
	var d *zstd.Decoder
	if n := len(s.idle); n > 0 {
		d, s.idle = s.idle[n-1], s.idle[:n-1]
	}
	s.mu.Unlock()
	if d == nil {
		return newSpanDecoder(src)
	}
	if err := d.Reset(src); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// release keeps d for another span, or closes it.
func (s *RestartReader) release(d *zstd.Decoder) {
	s.mu.Lock()
	s.releaseLocked(d)
	s.mu.Unlock()
}

func (s *RestartReader) releaseLocked(d *zstd.Decoder) {
	if s.closed || len(s.idle) >= s.keep {
		d.Close()
		return
	}
	s.idle = append(s.idle, d)
}

// cursor takes a parked decoder of span i at chunk k or before, if any.
func (s *RestartReader) cursor(i, k int) *cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := -1
	for j, c := range s.cursors {
		if c.span == i && c.next <= k && (best < 0 || c.next > s.cursors[best].next) {
			best = j
		}
	}
	if best < 0 {
		return nil
	}
	c := s.cursors[best]
	s.cursors = append(s.cursors[:best], s.cursors[best+1:]...)
	return c
}

// park keeps c for a read that goes on, dropping the oldest beyond keep.
func (s *RestartReader) park(c *cursor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.dec.Close()
		return
	}
	s.cursors = append(s.cursors, c)
	if len(s.cursors) > s.keep {
		old := s.cursors[0].dec
		s.cursors = s.cursors[1:]
		s.releaseLocked(old)
	}
}

// put caches chunk k of span i.
func (s *RestartReader) put(i, k int, b []byte) {
	s.mu.Lock()
	s.cache.put([2]int{i, k}, b)
	s.mu.Unlock()
}

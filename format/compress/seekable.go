package compress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/semaphore"
)

// The zstd seekable format (zstd's contrib/seekable_format): independent
// zstd frames, then a skippable frame holding a seek table (the
// compressed and decompressed size of every frame) and a footer. Any zstd
// decompressor reads it as one stream (skippable frames are skipped), so
// Proxmox restores a seekable .vma.zst unchanged; a reader that knows the
// table decompresses only the frames it needs.
const (
	seekTableMagic    = 0x184D2A5E // skippable frame, nibble E
	seekableMagic     = 0x8F92EAB1
	seekFooterSize    = 9
	seekChecksumFlag  = 1 << 7
	seekReservedBits  = 0x7c
	maxSeekableFrames = 1 << 22 // 4 M frames: archives of several TiB
	maxFrameSize      = 1 << 30 // the format's limit on a frame's content
	seekWriteFrame    = 4 << 20 // SeekableWriter's largest frame: half of MaxSeekFrame
)

// SeekableWriter writes the zstd seekable format: every Write is one frame
// (so a writer that writes an archive's extent headers and data apart
// gets frames a reader can decompress one by one), or several of at most
// 4 MiB if it is larger (an archive header with many configs), compressed
// in parallel and written in order; Close writes the seek table. It does not close the
// underlying writer.
type SeekableWriter struct {
	w      io.Writer
	enc    *zstd.Encoder
	sizes  []uint32 // compressed, decompressed, per frame
	queue  chan *frameJob
	done   chan struct{}
	mu     sync.Mutex
	err    error
	closed bool
	slots  chan struct{}
}

type frameJob struct {
	src, dst []byte
	ready    chan struct{}
}

// NewSeekableWriter returns a SeekableWriter at the zstd level (1-22, 0
// for 3).
func NewSeekableWriter(w io.Writer, level int) (*SeekableWriter, error) {
	if level == 0 {
		level = 3
	}
	if level < 1 || level > 22 {
		return nil, fmt.Errorf("zstd level %d: want 1 to 22", level)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	n := runtime.NumCPU()
	s := &SeekableWriter{w: w, enc: enc, queue: make(chan *frameJob, 2*n), done: make(chan struct{}), slots: make(chan struct{}, 2*n)}
	go s.writeLoop()
	return s, nil
}

// Write compresses p as one frame (p may be reused once Write returns).
func (s *SeekableWriter) Write(p []byte) (int, error) {
	if err := s.failed(); err != nil {
		return 0, err
	}
	if s.closed {
		return 0, errors.New("zstd: write after Close")
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := len(p)
	for len(p) > seekWriteFrame { // an extent's data is at most 3.7 MiB
		if _, err := s.Write(p[:seekWriteFrame]); err != nil {
			return 0, err
		}
		p = p[seekWriteFrame:]
	}
	s.slots <- struct{}{} // bounds the frames in flight
	j := &frameJob{src: append([]byte(nil), p...), ready: make(chan struct{})}
	go func() {
		j.dst = s.enc.EncodeAll(j.src, make([]byte, 0, len(j.src)/2+64))
		close(j.ready)
	}()
	s.queue <- j
	return n, nil
}

// writeLoop writes the frames in order as they are compressed.
func (s *SeekableWriter) writeLoop() {
	defer close(s.done)
	for j := range s.queue {
		<-j.ready
		if s.failed() == nil {
			if _, err := s.w.Write(j.dst); err != nil {
				s.fail(err)
			} else {
				s.sizes = append(s.sizes, uint32(len(j.dst)), uint32(len(j.src)))
			}
		}
		<-s.slots
	}
}

func (s *SeekableWriter) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *SeekableWriter) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Close writes the remaining frames and the seek table.
func (s *SeekableWriter) Close() error {
	if s.closed {
		return s.failed()
	}
	s.closed = true
	close(s.queue)
	<-s.done
	if err := s.failed(); err != nil {
		return err
	}
	frames := len(s.sizes) / 2
	if frames > maxSeekableFrames {
		return fmt.Errorf("zstd: %d frames, more than the %d a seek table holds here", frames, maxSeekableFrames)
	}
	t := binary.LittleEndian.AppendUint32(nil, seekTableMagic)
	t = binary.LittleEndian.AppendUint32(t, uint32(8*frames+seekFooterSize))
	for _, v := range s.sizes {
		t = binary.LittleEndian.AppendUint32(t, v)
	}
	t = binary.LittleEndian.AppendUint32(t, uint32(frames))
	t = append(t, 0) // descriptor: no checksums (every frame carries its own)
	t = binary.LittleEndian.AppendUint32(t, seekableMagic)
	_, err := s.w.Write(t)
	return err
}

// Seekable reads a zstd seekable file at random: ReadAt decompresses the
// frames it needs, keeping recently used ones. It is safe for concurrent
// use (the io.ReaderAt contract).
//
// Its memory is bounded by constants, whatever the file declares: frames
// of at most MaxSeekFrame bytes are read at random (OpenSeekable refuses
// larger ones with an error wrapping ErrNotSeekable, so that the file is
// read as a stream instead), decoded frames kept take at most 32 MiB,
// frames being decoded (compressed and decompressed) at most 40 MiB in
// all however many ReadAt calls run in parallel, and the seek table 16
// bytes a frame (at most 4 Mi frames).
type Seekable struct {
	r    io.ReaderAt
	comp []int64 // start of frame i in the file; comp[n] is the table
	dec  []int64 // start of frame i's content; dec[n] is the size
	d    *zstd.Decoder
	// budget holds the bytes of frames being decoded, from the read of
	// their compressed bytes until every ReadAt waiting for them has
	// copied what it needs.
	budget *semaphore.Weighted

	mu    sync.Mutex
	cache *blockCache[int] // decoded frames
	calls map[int]*frameCall
}

// frameCall is one decode of a frame, shared by the ReadAt calls that
// need the frame meanwhile.
type frameCall struct {
	done   chan struct{}
	b      []byte
	err    error
	users  int   // ReadAt calls yet to copy from b (under Seekable.mu)
	weight int64 // bytes of budget held until users is 0
}

// MaxSeekFrame is the most a frame may hold for Seekable to read it at
// random. SeekableWriter writes frames of at most 4 MiB, half of it.
//
// Larger frames are refused rather than decoded in pieces: a piece in the
// middle of a zstd frame can only be reached by decoding the frame from
// its start, so a read at random into a frame of a GiB would cost up to a
// GiB of decoding, for every cold 4 KiB read. Read as a stream (vmaconv
// decompresses such a file once into its cache) the file costs one pass,
// and reads at random cost a pread.
const MaxSeekFrame = 8 << 20

const (
	// seekCacheBytes bounds the decoded frames Seekable keeps.
	seekCacheBytes = 32 << 20
	// seekDecodeBytes bounds the frames being decoded: compressed and
	// decompressed bytes, and the decoder's overshoot past a frame that
	// holds more than its entry says.
	seekDecodeBytes = 40 << 20
	// seekEntryCost is what a cached frame costs besides its bytes.
	seekEntryCost = 128
	// seekTableChunk is how much of the seek table is read at a time.
	seekTableChunk = 64 << 10
)

// maxCompressed is the most compressed bytes a frame of d bytes may take
// to be read at random: zstd's worst case (d bytes stored raw, in blocks
// of up to 128 KiB with 3 bytes of header each, a frame header and a
// checksum) with room to spare.
func maxCompressed(d int64) int64 { return d + d>>7 + 1024 }

// frameWeight is the budget a decode of a frame of c compressed and d
// decompressed bytes holds: both, and as much again as d with a block
// (what the decoder may allocate before it notices the frame holds more
// than d).
func frameWeight(c, d int64) int64 { return c + 2*d + 128<<10 }

// ErrNotSeekable means a zstd file has no seek table, or one whose frames
// are too large to read at random (see MaxSeekFrame): read it as a stream.
var ErrNotSeekable = errors.New("zstd: no seek table")

// notSeekable is a seek table that is sound but not used: it names the
// reason, and is ErrNotSeekable to errors.Is.
type notSeekable struct{ msg string }

func (e *notSeekable) Error() string        { return e.msg }
func (e *notSeekable) Is(target error) bool { return target == ErrNotSeekable }

// OpenSeekable reads the seek table at the end of the zstd file r of size
// bytes. It returns ErrNotSeekable if there is none, an error wrapping it
// if a frame is too large to read at random, and an error naming the
// problem if the table is inconsistent with the file.
func OpenSeekable(r io.ReaderAt, size int64) (*Seekable, error) {
	if size < seekFooterSize+8 {
		return nil, ErrNotSeekable
	}
	var foot [seekFooterSize]byte
	if _, err := r.ReadAt(foot[:], size-seekFooterSize); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(foot[5:]) != seekableMagic {
		return nil, ErrNotSeekable
	}
	frames := int64(binary.LittleEndian.Uint32(foot[:]))
	desc := foot[4]
	bad := func(format string, args ...any) error {
		return &Error{Format: Zstd, Offset: size - seekFooterSize, Err: fmt.Errorf("seek table: "+format, args...)}
	}
	if desc&seekReservedBits != 0 {
		return nil, bad("reserved descriptor bits set (%#x)", desc)
	}
	if frames > maxSeekableFrames {
		return nil, bad("%d frames (at most %d here)", frames, maxSeekableFrames)
	}
	entry := int64(8)
	if desc&seekChecksumFlag != 0 {
		entry = 12
	}
	tableStart := size - seekFooterSize - frames*entry - 8
	if tableStart < 0 {
		return nil, bad("%d frames do not fit in the file", frames)
	}
	var head [8]byte
	if _, err := r.ReadAt(head[:], tableStart); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(head[:]) != seekTableMagic || int64(binary.LittleEndian.Uint32(head[4:])) != frames*entry+seekFooterSize {
		return nil, bad("skippable frame header does not match the footer")
	}
	s := &Seekable{r: r, comp: make([]int64, frames+1), dec: make([]int64, frames+1),
		budget: semaphore.NewWeighted(seekDecodeBytes), cache: newBlockCache[int](seekCacheBytes, seekEntryCost), calls: map[int]*frameCall{}}
	var large error // the first frame too large to read at random
	// The table is read in pieces: it is not held whole besides comp and dec.
	buf := make([]byte, min(frames*entry, seekTableChunk/entry*entry))
	for i := int64(0); i < frames; {
		chunk := buf[:min(int64(len(buf)), (frames-i)*entry)]
		if _, err := r.ReadAt(chunk, tableStart+8+i*entry); err != nil {
			return nil, err
		}
		for e := chunk; len(e) > 0; e, i = e[entry:], i+1 {
			c, d := int64(binary.LittleEndian.Uint32(e)), int64(binary.LittleEndian.Uint32(e[4:]))
			if c == 0 || d > maxFrameSize {
				return nil, bad("frame %d: %d compressed bytes for %d", i, c, d)
			}
			if large == nil && (d > MaxSeekFrame || c > maxCompressed(d)) {
				large = &Error{Format: Zstd, Offset: size - seekFooterSize, Err: &notSeekable{fmt.Sprintf(
					"seek table: frame %d holds %d bytes in %d: more than the %d MiB read at random, so read as a stream", i, d, c, MaxSeekFrame>>20)}}
			}
			s.comp[i+1], s.dec[i+1] = s.comp[i]+c, s.dec[i]+d
		}
	}
	if s.comp[frames] != tableStart {
		return nil, bad("frames take %d bytes, the file has %d before the table", s.comp[frames], tableStart)
	}
	if large != nil {
		return nil, large
	}
	var err error
	s.d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(min(runtime.GOMAXPROCS(0), 4)),
		zstd.WithDecoderMaxMemory(MaxSeekFrame), zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxWindow(128<<20))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Size returns the decompressed size.
func (s *Seekable) Size() int64 { return s.dec[len(s.dec)-1] }

// Frames returns the number of frames.
func (s *Seekable) Frames() int { return len(s.dec) - 1 }

// Close releases the decoder.
func (s *Seekable) Close() error {
	s.d.Close()
	return nil
}

// ReadAt implements io.ReaderAt over the decompressed content.
func (s *Seekable) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("zstd: negative offset")
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= s.Size() {
			return n, io.EOF
		}
		// The first frame that ends after at (empty frames end before).
		i := sort.Search(len(s.dec)-1, func(i int) bool { return s.dec[i+1] > at })
		if i >= len(s.dec)-1 || at < s.dec[i] || at >= s.dec[i+1] {
			return n, fmt.Errorf("zstd: no frame found for offset %d (frame %d of %d)", at, i, len(s.dec)-1)
		}
		k, err := s.readFrame(i, p[n:], at-s.dec[i])
		if err != nil {
			return n, err
		}
		if k == 0 {
			return n, fmt.Errorf("zstd: no progress at offset %d (frame %d)", at, i)
		}
		n += k
	}
	return n, nil
}

// readFrame copies frame i's content from offset from into p: from the
// cache, from a decode another ReadAt has started, or from its own.
func (s *Seekable) readFrame(i int, p []byte, from int64) (int, error) {
	s.mu.Lock()
	if b, ok := s.cache.get(i); ok {
		// Copied under the lock: a frame evicted from the cache is
		// no longer referenced once the lock is released.
		k := copy(p, b[from:])
		s.mu.Unlock()
		return k, nil
	}
	c, ok := s.calls[i]
	if ok {
		c.users++
		s.mu.Unlock()
		<-c.done
		s.mu.Lock()
	} else {
		c = &frameCall{done: make(chan struct{}), users: 1}
		s.calls[i] = c
		s.mu.Unlock()
		c.b, c.err = s.decode(i, c)
		s.mu.Lock()
		delete(s.calls, i)
		if c.err == nil {
			s.cache.put(i, c.b)
		}
		close(c.done)
	}
	k := 0
	if c.err == nil {
		k = copy(p, c.b[from:])
	}
	if c.users--; c.users == 0 && c.weight > 0 {
		s.budget.Release(c.weight)
	}
	s.mu.Unlock()
	return k, c.err
}

// decode reads and decompresses frame i, holding its weight of the budget
// in c.
func (s *Seekable) decode(i int, c *frameCall) ([]byte, error) {
	comp, want := s.comp[i+1]-s.comp[i], s.dec[i+1]-s.dec[i]
	w := frameWeight(comp, want)
	if w > seekDecodeBytes { // OpenSeekable refused such frames
		return nil, fmt.Errorf("zstd: frame %d (%d bytes in %d) is too large to read at random", i, want, comp)
	}
	if err := s.budget.Acquire(context.Background(), w); err != nil {
		return nil, err
	}
	c.weight = w
	src := make([]byte, comp)
	if _, err := s.r.ReadAt(src, s.comp[i]); err != nil {
		return nil, fmt.Errorf("zstd: reading frame %d at compressed offset %d: %w", i, s.comp[i], err)
	}
	b, err := s.d.DecodeAll(src, make([]byte, 0, want))
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded):
		err = fmt.Errorf("frame %d holds more than the %d bytes the seek table says", i, want)
	case err == nil && int64(len(b)) != want:
		err = fmt.Errorf("frame %d holds %d bytes, the seek table says %d", i, len(b), want)
	}
	if err != nil {
		return nil, fmt.Errorf("zstd: frame %d at compressed offset %d: %w", i, s.comp[i], err)
	}
	return b, nil
}

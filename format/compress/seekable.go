package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
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
)

// SeekableWriter writes the zstd seekable format: every Write is one frame
// (so a writer that writes an archive's extent headers and data apart
// gets frames a reader can decompress one by one), compressed in parallel
// and written in order; Close writes the seek table. It does not close the
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
	for len(p) > maxFrameSize { // never from the archive writer
		if _, err := s.Write(p[:maxFrameSize]); err != nil {
			return 0, err
		}
		p = p[maxFrameSize:]
	}
	s.slots <- struct{}{} // bounds the frames in flight
	j := &frameJob{src: append([]byte(nil), p...), ready: make(chan struct{})}
	go func() {
		j.dst = s.enc.EncodeAll(j.src, make([]byte, 0, len(j.src)/2+64))
		close(j.ready)
	}()
	s.queue <- j
	return len(p), nil
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
// use.
type Seekable struct {
	r    io.ReaderAt
	comp []int64 // start of frame i in the file; comp[n] is the table
	dec  []int64 // start of frame i's content; dec[n] is the size
	d    *zstd.Decoder

	mu    sync.Mutex
	cache map[int][]byte
	order []int
	bytes int
}

// seekCacheBytes bounds the decompressed frames Seekable keeps.
const seekCacheBytes = 32 << 20

// ErrNotSeekable means a zstd file has no seek table.
var ErrNotSeekable = errors.New("zstd: no seek table")

// OpenSeekable reads the seek table at the end of the zstd file r of size
// bytes. It returns ErrNotSeekable if there is none, and an error naming
// the problem if the table is inconsistent with the file.
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
	table := make([]byte, frames*entry+8)
	if _, err := r.ReadAt(table, tableStart); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(table) != seekTableMagic || int64(binary.LittleEndian.Uint32(table[4:])) != frames*entry+seekFooterSize {
		return nil, bad("skippable frame header does not match the footer")
	}
	s := &Seekable{r: r, comp: make([]int64, frames+1), dec: make([]int64, frames+1), cache: map[int][]byte{}}
	for i := range frames {
		e := table[8+i*entry:]
		c, d := int64(binary.LittleEndian.Uint32(e)), int64(binary.LittleEndian.Uint32(e[4:]))
		if c == 0 || d > maxFrameSize {
			return nil, bad("frame %d: %d compressed bytes for %d", i, c, d)
		}
		s.comp[i+1], s.dec[i+1] = s.comp[i]+c, s.dec[i]+d
	}
	if s.comp[frames] != tableStart {
		return nil, bad("frames take %d bytes, the file has %d before the table", s.comp[frames], tableStart)
	}
	var err error
	s.d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxFrameSize), zstd.WithDecoderMaxWindow(128<<20))
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
		i := sort.Search(len(s.dec)-1, func(i int) bool { return s.dec[i+1] > at })
		b, err := s.frame(i)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[at-s.dec[i]:])
	}
	return n, nil
}

// frame returns frame i decompressed.
func (s *Seekable) frame(i int) ([]byte, error) {
	s.mu.Lock()
	if b, ok := s.cache[i]; ok {
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	src := make([]byte, s.comp[i+1]-s.comp[i])
	if _, err := s.r.ReadAt(src, s.comp[i]); err != nil {
		return nil, fmt.Errorf("zstd: reading frame %d at compressed offset %d: %w", i, s.comp[i], err)
	}
	want := s.dec[i+1] - s.dec[i]
	b, err := s.d.DecodeAll(src, make([]byte, 0, want))
	if err == nil && int64(len(b)) != want {
		err = fmt.Errorf("frame %d holds %d bytes, the seek table says %d", i, len(b), want)
	}
	if err != nil {
		return nil, fmt.Errorf("zstd: frame %d at compressed offset %d: %w", i, s.comp[i], err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cache[i]; !ok {
		s.cache[i] = b
		s.order = append(s.order, i)
		s.bytes += len(b)
		for s.bytes > seekCacheBytes && len(s.order) > 1 {
			old := s.order[0]
			s.order = s.order[1:]
			s.bytes -= len(s.cache[old])
			delete(s.cache, old)
		}
	}
	return b, nil
}

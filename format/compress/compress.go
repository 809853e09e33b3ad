// Package compress reads and writes the compression layers vzdump puts
// around VMA archives: zstd (.vma.zst), gzip (.vma.gz) and lzop (.vma.lzo).
// Layers are detected by their magic bytes, never by file name.
//
// Decompression runs in its own goroutine, ahead of the reader, so that
// parsing and writing overlap with it. Errors name the layer and the offset
// in the compressed stream.
package compress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Names of the supported layers.
const (
	Zstd = "zstd"
	Gzip = "gzip"
	Lzop = "lzop"
)

var magics = []struct {
	name  string
	magic []byte
}{
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Gzip, []byte{0x1f, 0x8b}},
	{Lzop, lzopMagic[:]},
	{"bzip2", []byte("BZh")},
}

// Detect returns the compression that head (the first bytes of a stream,
// at least 9 if the stream has them) starts with, or "".
func Detect(head []byte) string {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.name
		}
	}
	return ""
}

// Error is a failure of a decompression layer.
type Error struct {
	Format string // "zstd", "gzip", "lzop"
	Offset int64  // bytes of compressed input consumed when it failed
	Err    error
}

// Error implements error: "zstd: unexpected EOF (at compressed offset N)".
func (e *Error) Error() string {
	msg := strings.TrimPrefix(e.Err.Error(), e.Format+": ") // "gzip: gzip: …" otherwise
	if e.Late() {
		msg = "checksum mismatch at the end of the stream: what it decompressed before may be damaged anywhere"
	}
	return fmt.Sprintf("%s: %s (at compressed offset %d)", e.Format, msg, e.Offset)
}

// Late reports whether the layer found the damage only by a checksum over
// all it had delivered (gzip's CRC, zstd's content checksum): the damage
// is then somewhere in the data already decompressed, not at Offset.
func (e *Error) Late() bool {
	return errors.Is(e.Err, gzip.ErrChecksum) || errors.Is(e.Err, zstd.ErrCRCMismatch)
}

// Unwrap returns the decoder's error.
func (e *Error) Unwrap() error { return e.Err }

// ErrUnsupported is returned for a recognised but unsupported compression.
var ErrUnsupported = errors.New("unsupported compression")

// DefaultMaxWindow is the largest zstd window NewReader accepts unless
// told otherwise: 128 MiB, the zstd tool's own limit (windowLog 27).
const DefaultMaxWindow = 128 << 20

// ReaderOptions configure NewReader; the zero value means the defaults.
type ReaderOptions struct {
	// MaxWindow bounds the zstd window, and so the decoder's memory
	// (default DefaultMaxWindow). A stream that needs more fails with a
	// *WindowError.
	MaxWindow int64
}

// WindowError is returned (inside an *Error) for a zstd stream whose
// window exceeds ReaderOptions.MaxWindow. It is a format.MemoryLimited.
type WindowError struct {
	Need  int64 // the window the stream declares; 0 if not known
	Limit int64
}

// MemoryNeeded implements format.MemoryLimited.
func (e *WindowError) MemoryNeeded() (need, limit int64) { return e.Need, e.Limit }

func (e *WindowError) Error() string {
	if e.Need > 0 {
		return fmt.Sprintf("the stream needs a %d MiB window, more than the limit of %d MiB", (e.Need+1<<20-1)>>20, e.Limit>>20)
	}
	return fmt.Sprintf("the stream needs a window larger than the limit of %d MiB", e.Limit>>20)
}

// NewReader looks at the start of r and returns a reader of its
// decompressed content and the compression's name, or, if r is not
// compressed, a reader of r itself and "". Close stops the decompressing
// goroutine; it does not close r.
func NewReader(r io.Reader, opts ...ReaderOptions) (io.ReadCloser, string, error) {
	var o ReaderOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.MaxWindow <= 0 {
		o.MaxWindow = DefaultMaxWindow
	}
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(32)
	name := Detect(head)
	cr := &countingReader{r: br, br: br}
	var dec io.Reader
	var closeDec func()
	switch name {
	case "":
		return io.NopCloser(br), "", nil
	case Zstd:
		d, err := zstd.NewReader(cr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(uint64(max(o.MaxWindow, zstd.MinWindowSize))))
		if err != nil {
			return nil, name, &Error{name, 0, err}
		}
		dec, closeDec = &zstdReader{d: d, limit: o.MaxWindow, need: zstdWindow(head)}, d.Close
	case Gzip:
		z, err := gzip.NewReader(cr)
		if err != nil {
			return nil, name, &Error{name, cr.n.Load(), err}
		}
		z.Multistream(false)
		dec, closeDec = &gzipMembers{z: z, cr: cr}, func() { z.Close() }
	case Lzop:
		l, err := newLzopReader(cr)
		if err != nil {
			return nil, name, &Error{name, cr.n.Load(), err}
		}
		dec, closeDec = l, func() {}
	default:
		return nil, name, fmt.Errorf("%w: %s (decompress it first)", ErrUnsupported, name)
	}
	return newReadahead(dec, name, cr, closeDec), name, nil
}

// zstdReader turns the decoder's window error into a *WindowError.
type zstdReader struct {
	d     *zstd.Decoder
	limit int64
	need  int64
}

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) {
		need := z.need
		if need <= z.limit {
			need = 0 // a later frame: not known
		}
		err = &WindowError{Need: need, Limit: z.limit}
	}
	return n, err
}

// zstdWindow returns the window the zstd frame starting head declares
// (RFC 8878 3.1.1.1), or 0.
func zstdWindow(head []byte) int64 {
	if len(head) < 6 {
		return 0
	}
	fhd := head[4]
	if fhd&0x20 == 0 { // a window descriptor follows
		return windowOf(head[5])
	}
	// Single segment: the window is the content size.
	pos := 5 + []int{0, 1, 2, 4}[fhd&3]
	size := []int{1, 2, 4, 8}[fhd>>6]
	if len(head) < pos+size {
		return 0
	}
	var v int64
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | int64(head[pos+i])
	}
	if size == 2 {
		v += 256
	}
	return v
}

// gzipMembers reads every member of a gzip stream, as gzip does, and
// accepts zero bytes after the last one (tape padding, which gzip -t
// accepts too); other bytes after it are an error.
type gzipMembers struct {
	z   *gzip.Reader
	cr  *countingReader
	err error
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for g.err == nil {
		n, err := g.z.Read(p)
		if err != io.EOF {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
		// End of a member: another, padding, or garbage?
		head, _ := g.cr.br.Peek(2)
		switch {
		case len(head) == 0:
			g.err = io.EOF
		case len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b:
			if err := g.z.Reset(g.cr); err != nil {
				return 0, err
			}
			g.z.Multistream(false)
		default:
			g.err = g.skipZeros()
		}
	}
	return 0, g.err
}

// skipZeros reads the rest of the stream, which must be zero bytes.
func (g *gzipMembers) skipZeros() error {
	buf := make([]byte, 64<<10)
	for {
		n, err := g.cr.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return errors.New("trailing garbage after the last gzip member")
			}
		}
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return err
		}
	}
}

type countingReader struct {
	r  io.Reader
	br *bufio.Reader
	n  atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// ReadByte makes countingReader a flate.Reader, so that the gzip decoder
// reads no byte past the end of a member.
func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.br.ReadByte()
	if err == nil {
		c.n.Add(1)
	}
	return b, err
}

// readahead runs a decompressor in its own goroutine, a few buffers ahead
// of the consumer.
type readahead struct {
	cr     *countingReader
	full   chan *chunk
	free   chan *chunk
	done   chan struct{}
	cur    *chunk
	err    error
	closed atomic.Bool
}

type chunk struct {
	b   []byte
	n   int
	pos int
	err error
}

const (
	readaheadChunk = 1 << 20
	readaheadDepth = 4
)

func newReadahead(dec io.Reader, name string, cr *countingReader, closeDec func()) *readahead {
	ra := &readahead{cr: cr, full: make(chan *chunk, readaheadDepth), free: make(chan *chunk, readaheadDepth), done: make(chan struct{})}
	for range readaheadDepth {
		ra.free <- &chunk{b: make([]byte, readaheadChunk)}
	}
	go func() {
		defer close(ra.full)
		defer closeDec()
		for {
			var c *chunk
			select {
			case c = <-ra.free:
			case <-ra.done:
				return
			}
			c.n, c.pos, c.err = 0, 0, nil
			for c.n < len(c.b) && c.err == nil {
				var n int
				n, c.err = dec.Read(c.b[c.n:])
				c.n += n
			}
			// io.EOF is the clean end; anything else, io.ErrUnexpectedEOF
			// of a truncated stream included, is the layer's error.
			if c.err != nil && c.err != io.EOF {
				c.err = &Error{name, cr.n.Load(), c.err}
			}
			select {
			case ra.full <- c:
			case <-ra.done:
				return
			}
			if c.err != nil {
				return
			}
		}
	}()
	return ra
}

func (ra *readahead) Read(p []byte) (int, error) {
	for ra.cur == nil || ra.cur.pos == ra.cur.n {
		if ra.cur != nil {
			if ra.cur.err != nil {
				ra.err = ra.cur.err
				ra.cur = nil
			} else {
				ra.free <- ra.cur
				ra.cur = nil
			}
		}
		if ra.err != nil {
			return 0, ra.err
		}
		c, ok := <-ra.full
		if !ok {
			return 0, io.EOF
		}
		ra.cur = c
	}
	n := copy(p, ra.cur.b[ra.cur.pos:ra.cur.n])
	ra.cur.pos += n
	return n, nil
}

// Consumed returns the bytes of compressed input read so far (for
// progress against a compressed file's size).
func (ra *readahead) Consumed() int64 { return ra.cr.n.Load() }

// Close stops the decompressing goroutine.
func (ra *readahead) Close() error {
	if ra.closed.CompareAndSwap(false, true) {
		close(ra.done)
	}
	return nil
}

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

// NewReader looks at the start of r and returns a reader of its
// decompressed content and the compression's name, or, if r is not
// compressed, a reader of r itself and "". Close stops the decompressing
// goroutine; it does not close r.
func NewReader(r io.Reader) (io.ReadCloser, string, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(16)
	name := Detect(head)
	cr := &countingReader{r: br}
	var dec io.Reader
	var closeDec func()
	switch name {
	case "":
		return io.NopCloser(br), "", nil
	case Zstd:
		d, err := zstd.NewReader(cr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, name, &Error{name, 0, err}
		}
		dec, closeDec = d, d.Close
	case Gzip:
		z, err := gzip.NewReader(cr)
		if err != nil {
			return nil, name, &Error{name, cr.n.Load(), err}
		}
		dec, closeDec = z, func() { z.Close() }
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

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// readahead runs a decompressor in its own goroutine, a few buffers ahead
// of the consumer.
type readahead struct {
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
	ra := &readahead{full: make(chan *chunk, readaheadDepth), free: make(chan *chunk, readaheadDepth), done: make(chan struct{})}
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

// Close stops the decompressing goroutine.
func (ra *readahead) Close() error {
	if ra.closed.CompareAndSwap(false, true) {
		close(ra.done)
	}
	return nil
}

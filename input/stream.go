package input

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/remote"
)

// openStream opens r as a stream of fm (the first stream format if none
// is named), through a decompressor if it is compressed. name is r's name
// in messages; file, if not nil, is closed with the input (and on
// failure); size is the file's size, or -1.
func (op *opener) openStream(fm format.Format, r io.Reader, name string, file *os.File, size int64) (*Input, error) {
	fail := func(err error) (*Input, error) {
		if file != nil {
			file.Close()
		}
		return nil, err
	}
	if fm.Name == "" {
		var err error
		if fm, err = streamFormat(op.reg); err != nil {
			return fail(err)
		}
	}
	r, comp := sniff(r)
	st, consumed, stop, err := op.streamOf(fm, r, name)
	if err != nil {
		return fail(err)
	}
	in := &Input{ref: op.ref, format: fm, comp: comp(), size: size, stream: st, consumed: consumed,
		devices: st.Devices(), configs: st.Configs()}
	in.closers = append(in.closers, func() { st.Close() }, stop)
	if file != nil {
		in.closers = append(in.closers, func() { file.Close() })
	}
	return in, nil
}

// streamOf reads r as a stream of fm, through a decompression layer if r
// starts with the magic of zstd, gzip or lzop. stop ends the decompressing
// goroutine; it does not close r. consumed counts the bytes of r read: the
// stream's own count for a plain input, the compressed bytes the
// decompressor consumed for a compressed one.
func (op *opener) streamOf(fm format.Format, r io.Reader, name string) (st format.Stream, consumed format.Consumed, stop func(), err error) {
	// A plain file or remote object is read directly, so that the
	// stream can seek over data it is not asked for.
	if rr, ok := r.(*remote.Reader); ok && compress.Detect(rr.Object().Head()) == "" {
		st, err := fm.OpenStream(rr, op.openOptions())
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return st, counter(st), func() {}, nil
	}
	if f, ok := r.(*os.File); ok {
		if head, err := format.ReadHead(f); err == nil && compress.Detect(head) == "" {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				st, err := fm.OpenStream(f, op.openOptions())
				if err != nil {
					return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
				}
				return st, counter(st), func() {}, nil
			}
		}
	}
	dr, comp, err := compress.NewReader(r, compress.ReaderOptions{MaxWindow: op.o.MaxWindow})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	st, err = fm.OpenStream(dr, op.openOptions())
	if err != nil {
		dr.Close()
		if comp != "" && errors.Is(err, format.ErrUnknownFormat) {
			return nil, nil, nil, fmt.Errorf("%s: %s-compressed, but not a VMA archive inside: %w", name, comp, err)
		}
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	consumed = counter(st)
	if c, ok := dr.(format.Consumed); ok && comp != "" {
		consumed = c
	}
	return st, consumed, func() { dr.Close() }, nil
}

// counter returns the stream's count of bytes read, if it keeps one.
func counter(st format.Stream) format.Consumed {
	c, _ := st.(format.Consumed)
	return c
}

// sniff returns what to read a stream from, r or a reader through it, and
// a function that tells its compression layer (by magic, as streamOf
// does) once it has been opened. A regular file is read as it is (it may
// be read directly, seeking), and its head read at offset 0; anything else
// goes through a reader that keeps the first bytes read.
func sniff(r io.Reader) (io.Reader, func() string) {
	if rr, ok := r.(*remote.Reader); ok {
		return rr, func() string { return compress.Detect(rr.Object().Head()) }
	}
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			head, _ := format.ReadHead(f)
			return f, func() string { return compress.Detect(head) }
		}
	}
	s := &sniffer{r: r}
	return s, func() string { return compress.Detect(s.head) }
}

// sniffer keeps the first bytes read through it.
type sniffer struct {
	r    io.Reader
	head []byte
}

func (s *sniffer) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if k := min(n, 16-len(s.head)); k > 0 {
		s.head = append(s.head, p[:k]...)
	}
	return n, err
}

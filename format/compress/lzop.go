package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/adler32"
	"hash/crc32"
	"io"

	lzo "github.com/anchore/go-lzo"
)

// The lzop container (lzop 1.x, as `vzdump --compress lzo` writes it):
// a header, then blocks of (uncompressed length, compressed length,
// checksums, data) until a zero uncompressed length.
var lzopMagic = [9]byte{0x89, 'L', 'Z', 'O', 0, '\r', '\n', 0x1a, '\n'}

const (
	lzopAdler32D   = 0x00000001
	lzopAdler32C   = 0x00000002
	lzopExtraField = 0x00000040
	lzopCRC32D     = 0x00000100
	lzopCRC32C     = 0x00000200
	lzopMultipart  = 0x00000400
	lzopFilter     = 0x00000800
	lzopHeaderCRC  = 0x00001000

	lzopMaxBlock = 64 << 20 // lzop's own limit
)

var errLzop = errors.New("corrupt lzop data")

type lzopReader struct {
	r     io.Reader
	flags uint32
	src   []byte
	dst   []byte
	out   []byte // decompressed bytes not yet returned
	err   error
}

func newLzopReader(r io.Reader) (*lzopReader, error) {
	l := &lzopReader{r: r}
	if err := l.readHeader(); err != nil {
		return nil, err
	}
	return l, nil
}

// readHeader parses and checks the file header.
func (l *lzopReader) readHeader() error {
	var magic [9]byte
	if _, err := io.ReadFull(l.r, magic[:]); err != nil || magic != lzopMagic {
		return fmt.Errorf("%w: bad magic", errLzop)
	}
	// Everything from the version to the end of the name is checksummed.
	var hdr []byte
	read := func(n int) ([]byte, error) {
		b := make([]byte, n)
		if _, err := io.ReadFull(l.r, b); err != nil {
			return nil, fmt.Errorf("%w: truncated header", errLzop)
		}
		hdr = append(hdr, b...)
		return b, nil
	}
	be := binary.BigEndian
	b, err := read(4)
	if err != nil {
		return err
	}
	version := be.Uint16(b)
	if version < 0x0900 {
		return fmt.Errorf("%w: version %#x is too old", ErrUnsupported, version)
	}
	if version >= 0x0940 {
		if _, err := read(2); err != nil { // version needed to extract
			return err
		}
	}
	if b, err = read(1); err != nil {
		return err
	}
	if method := b[0]; method < 1 || method > 3 { // the LZO1X variants
		return fmt.Errorf("%w: lzop method %d", ErrUnsupported, method)
	}
	if version >= 0x0940 {
		if _, err := read(1); err != nil { // level
			return err
		}
	}
	if b, err = read(4); err != nil {
		return err
	}
	l.flags = be.Uint32(b)
	if l.flags&(lzopMultipart) != 0 {
		return fmt.Errorf("%w: multipart lzop files", ErrUnsupported)
	}
	if l.flags&lzopFilter != 0 {
		return fmt.Errorf("%w: lzop filters", ErrUnsupported)
	}
	n := 8 // mode, mtime low
	if version >= 0x0940 {
		n += 4 // mtime high
	}
	if _, err := read(n); err != nil {
		return err
	}
	if b, err = read(1); err != nil {
		return err
	}
	if _, err := read(int(b[0])); err != nil { // file name
		return err
	}
	var sumHash hash.Hash32 = adler32.New()
	if l.flags&lzopHeaderCRC != 0 {
		sumHash = crc32.NewIEEE()
	}
	sumHash.Write(hdr)
	var want [4]byte
	if _, err := io.ReadFull(l.r, want[:]); err != nil {
		return fmt.Errorf("%w: truncated header", errLzop)
	}
	if got := sumHash.Sum32(); got != be.Uint32(want[:]) {
		return fmt.Errorf("%w: header checksum %08x, computed %08x", errLzop, be.Uint32(want[:]), got)
	}
	if l.flags&lzopExtraField != 0 {
		var lenb [4]byte
		if _, err := io.ReadFull(l.r, lenb[:]); err != nil {
			return fmt.Errorf("%w: truncated header", errLzop)
		}
		extra := int64(be.Uint32(lenb[:])) + 4 // data and its checksum
		if _, err := io.CopyN(io.Discard, l.r, extra); err != nil {
			return fmt.Errorf("%w: truncated header", errLzop)
		}
	}
	return nil
}

func (l *lzopReader) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		l.err = l.nextBlock()
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

// nextBlock decompresses one block into l.out, checking the checksums the
// header announced. It returns io.EOF after the end marker.
func (l *lzopReader) nextBlock() error {
	be := binary.BigEndian
	var b [4]byte
	readU32 := func() (uint32, error) {
		if _, err := io.ReadFull(l.r, b[:]); err != nil {
			return 0, io.ErrUnexpectedEOF // truncated: no end marker
		}
		return be.Uint32(b[:]), nil
	}
	dlen, err := readU32()
	if err != nil {
		return err
	}
	if dlen == 0 {
		return io.EOF
	}
	clen, err := readU32()
	if err != nil {
		return err
	}
	if dlen > lzopMaxBlock || clen > dlen || clen == 0 {
		return fmt.Errorf("%w: block of %d bytes compressed to %d", errLzop, dlen, clen)
	}
	var dAdler, dCRC, cAdler, cCRC uint32
	if l.flags&lzopAdler32D != 0 {
		if dAdler, err = readU32(); err != nil {
			return err
		}
	}
	if l.flags&lzopCRC32D != 0 {
		if dCRC, err = readU32(); err != nil {
			return err
		}
	}
	if clen < dlen {
		if l.flags&lzopAdler32C != 0 {
			if cAdler, err = readU32(); err != nil {
				return err
			}
		}
		if l.flags&lzopCRC32C != 0 {
			if cCRC, err = readU32(); err != nil {
				return err
			}
		}
	}
	if cap(l.src) < int(clen) {
		l.src = make([]byte, clen)
	}
	src := l.src[:clen]
	if _, err := io.ReadFull(l.r, src); err != nil {
		return io.ErrUnexpectedEOF
	}
	var out []byte
	if clen == dlen { // stored
		out = src
	} else {
		if l.flags&lzopAdler32C != 0 && adler32.Checksum(src) != cAdler {
			return fmt.Errorf("%w: compressed block checksum mismatch", errLzop)
		}
		if l.flags&lzopCRC32C != 0 && crc32.ChecksumIEEE(src) != cCRC {
			return fmt.Errorf("%w: compressed block checksum mismatch", errLzop)
		}
		if cap(l.dst) < int(dlen) {
			l.dst = make([]byte, dlen)
		}
		out = l.dst[:dlen]
		n, err := decompressLZO(src, out)
		if err != nil {
			return fmt.Errorf("%w: %v", errLzop, err)
		}
		if n != int(dlen) {
			return fmt.Errorf("%w: block decompressed to %d bytes, header says %d", errLzop, n, dlen)
		}
	}
	if l.flags&lzopAdler32D != 0 && adler32.Checksum(out) != dAdler {
		return fmt.Errorf("%w: block checksum mismatch (adler32)", errLzop)
	}
	if l.flags&lzopCRC32D != 0 && crc32.ChecksumIEEE(out) != dCRC {
		return fmt.Errorf("%w: block checksum mismatch (crc32)", errLzop)
	}
	l.out = out
	return nil
}

// decompressLZO wraps the LZO1X decoder, turning a panic on hostile input
// into an error.
func decompressLZO(src, dst []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("lzo decoder failed: %v", r)
		}
	}()
	return lzo.Decompress(src, dst)
}

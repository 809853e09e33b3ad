package ova

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// The tar container of an OVA: ustar headers in 512-byte blocks, as
// DSP0243 requires and ovftool and open-vmdk's ova-compose write them.
// Written by hand (a member's header is written before its size is known
// and completed after); read with archive/tar, which checks every header.

// blockSize is the tar record size.
const blockSize = 512

// maxOctalSize is the largest size an 11-digit octal size field holds;
// larger members get GNU tar's base-256 size field (and GNU's magic), as
// GNU tar writes them.
const maxOctalSize = 1<<33 - 1

// tarHeader returns the header of a regular file member: name (at most
// 100 bytes), mode 0644, owner 0/0, size and mtime; ustar, or GNU for a
// size over maxOctalSize.
func tarHeader(name string, size int64, mtime time.Time) []byte {
	h := make([]byte, blockSize)
	copy(h[0:100], name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	putSize(h, size)
	copy(h[136:148], fmt.Sprintf("%011o\x00", max(mtime.Unix(), 0)&(1<<33-1)))
	h[156] = '0'
	copy(h[329:337], "0000000\x00")
	copy(h[337:345], "0000000\x00")
	setChecksum(h)
	return h
}

// putSize writes size into a header (magic included: ustar, or GNU for a
// base-256 size); the checksum is then stale.
func putSize(h []byte, size int64) {
	if size <= maxOctalSize {
		copy(h[124:136], fmt.Sprintf("%011o\x00", size))
		copy(h[257:265], "ustar\x0000")
		return
	}
	f := h[124:136]
	clear(f)
	f[0] = 0x80
	for i, v := len(f)-1, uint64(size); i > 0; i, v = i-1, v>>8 {
		f[i] = byte(v)
	}
	copy(h[257:265], "ustar  \x00")
}

// setChecksum computes a header's checksum (its bytes, the checksum
// field counted as spaces) into the field: six octal digits, NUL, space.
func setChecksum(h []byte) {
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// validChecksum reports whether a header's checksum field matches it
// (unsigned, as POSIX has it).
func validChecksum(h []byte) bool {
	want, ok := parseOctal(h[148:156])
	if !ok {
		return false
	}
	sum := int64(0)
	for i, c := range h {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	return sum == want
}

// parseOctal reads an octal number field (leading spaces, digits, then
// NUL or spaces).
func parseOctal(b []byte) (int64, bool) {
	s := strings.Trim(string(b), " \x00")
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 8, 64)
	return n, err == nil && n >= 0
}

// A member is a file of a tar archive.
type member struct {
	Name   string // its name as the archive gives it
	Clean  string // cleaned (see cleanMember), or "" for a name that leaves the archive
	Type   byte   // tar typeflag
	Link   string // a link's target
	Header int64  // offset of its (first) header
	Offset int64  // offset of its data
	Size   int64  // bytes of data
	MTime  time.Time
}

// maxMembers bounds the members of an OVA read: a descriptor, a
// manifest, a certificate and the files they name.
const maxMembers = 4096

// ErrTooManyMembers is wrapped by listMembers' error for an archive of
// more than maxMembers members.
var errTooManyMembers = errors.New("more members than an OVA holds")

// cleanMember returns a member's name as the OVF's references name it:
// without a leading "./", cleaned; "" if the name is absolute, leaves the
// archive (".."), or is empty.
func cleanMember(name string) string {
	n := strings.TrimPrefix(name, "./")
	if n == "" || strings.HasPrefix(n, "/") || strings.ContainsRune(n, '\\') {
		return ""
	}
	n = path.Clean(n)
	if !fs.ValidPath(n) || n == "." {
		return ""
	}
	return n
}

// positioned is an io.ReadSeeker over a section that knows its position,
// so that a member's data offset is where the tar reader stopped.
type positioned struct {
	r   *io.SectionReader
	pos int64
}

func (p *positioned) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *positioned) Seek(off int64, whence int) (int64, error) {
	n, err := p.r.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

// listMembers reads the tar headers of the size bytes of r (seeking over
// the data): every member with its place, in order. Each member's data
// must lie within the file. It stops at the end-of-archive blocks, or at
// the end of the file.
func listMembers(r io.ReaderAt, size int64) ([]member, error) {
	p := &positioned{r: io.NewSectionReader(r, 0, size)}
	tr := tar.NewReader(p)
	var out []member
	for {
		start := p.pos
		h, err := tr.Next()
		if err == io.EOF {
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: an empty tar archive", ErrCorrupt)
			}
			return out, nil
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) && len(out) > 0 {
				last := out[len(out)-1]
				return nil, &FormatError{Member: last.Name, Offset: last.Header, Err: ErrCorrupt,
					Msg: fmt.Sprintf("its data (%d bytes at byte offset %d) runs past the end of the file", last.Size, last.Offset)}
			}
			return nil, &FormatError{Offset: start, Err: ErrCorrupt, Msg: "tar header: " + err.Error()}
		}
		if len(out) == maxMembers {
			return nil, &FormatError{Offset: start, Err: ErrCorrupt, Msg: fmt.Sprintf("%v (%d)", errTooManyMembers, maxMembers)}
		}
		m := member{Name: h.Name, Clean: cleanMember(h.Name), Type: h.Typeflag, Link: h.Linkname,
			Header: start, Offset: p.pos, Size: h.Size, MTime: h.ModTime}
		if h.Size < 0 || m.Offset > size || h.Size > size-m.Offset {
			return nil, &FormatError{Member: h.Name, Offset: start, Err: ErrCorrupt,
				Msg: fmt.Sprintf("its data (%d bytes at byte offset %d) runs past the end of the %d-byte file", h.Size, m.Offset, size)}
		}
		out = append(out, m)
	}
}

// regular reports whether a member is a regular file (its data the
// file's bytes, not a sparse map).
func (m member) regular() bool {
	return m.Type == tar.TypeReg || m.Type == 0 // 0: old tars' regular file (tar.TypeRegA, deprecated)
}

// kind describes a member that is not a regular file, for messages.
func (m member) kind() string {
	switch m.Type {
	case tar.TypeSymlink:
		return "a symbolic link (to " + cleanName(m.Link) + ")"
	case tar.TypeLink:
		return "a hard link (to " + cleanName(m.Link) + ")"
	case tar.TypeDir:
		return "a directory"
	case tar.TypeGNUSparse:
		return "a sparse file"
	}
	return fmt.Sprintf("not a regular file (type %q)", m.Type)
}

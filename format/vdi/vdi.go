package vdi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
)

// Format is the VDI driver, for a format.Registry.
var Format = format.Format{
	Name:  Name,
	Probe: probe,
	Open: func(f *os.File, o format.OpenOptions) (format.Image, error) {
		s, err := Open(f, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	OpenAt: func(r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
		s, err := OpenAt(r, size, "", o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	Extensions: []string{".vdi"},
	Create:     Create,
	Options:    options,
	InfoAt:     info,
}

// probe reports whether head is a VDI header, as QEMU's vdi_probe
// decides: a whole header with the signature.
func probe(head []byte) bool {
	return len(head) >= headerSize && binary.LittleEndian.Uint32(head[offSignature:]) == Signature
}

// Source is an open VDI image. It is safe for concurrent use.
//
// Memory: at most 4 MiB of its block map (the whole map of a disk up to
// 1 TiB; the largest image QEMU takes has a map of 2 GiB), and, while Open
// checks the map, a page of it and one bit per MiB of the file.
type Source struct {
	ra       io.ReaderAt
	closer   io.Closer // the file, or nil (OpenAt)
	name     string
	h        *header
	size     int64 // virtual size, as QEMU reads it
	fileSize int64
	m        *blockMap
	host     *raw.Source // the file's holes; nil if not a regular file
}

// Open opens f as a VDI image; the Source's Close closes f, and so does a
// failing Open. Regular files and block devices are read.
func Open(f *os.File, o format.OpenOptions) (*Source, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("vdi: size of %s: %w", f.Name(), err)
		}
	}
	s, err := OpenAt(f, size, f.Name(), o)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.closer = f
	if fi.Mode().IsRegular() {
		s.host = raw.Map(f, size)
	}
	return s, nil
}

// OpenAt opens the size bytes of r as a VDI image (name, if not empty,
// names it in errors). The Source's Close does not close r.
func OpenAt(r io.ReaderAt, size int64, name string, _ format.OpenOptions) (*Source, error) {
	wrap := func(err error) error {
		if name == "" {
			return err
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	h, err := readHeader(r, size)
	if err != nil {
		return nil, wrap(err)
	}
	s := &Source{ra: r, name: name, h: h, size: h.size(), fileSize: size,
		m: &blockMap{ra: r, off: h.offBmap, n: h.blocks}}
	if err := s.m.check(h, s.size, size); err != nil {
		return nil, wrap(err)
	}
	return s, nil
}

// Size returns the virtual size: the header's disk size rounded up to
// whole 512-byte sectors, as QEMU reads it.
func (s *Source) Size() int64 { return s.size }

// Close closes the file (not a reader given to OpenAt).
func (s *Source) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// span describes the run of blocks that starts at virtual offset off
// (within the disk), up to the end of its page of the block map: blocks
// that are all unallocated (or discarded), or all allocated to
// consecutive data blocks, the first at host offset host. n is the run's
// bytes from off, within the disk.
func (s *Source) span(off int64) (alloc bool, host, n int64, err error) {
	b := off / BlockSize
	p, err := s.m.page(b / pageEntries)
	if err != nil {
		return false, 0, 0, err
	}
	first := b % pageEntries
	e := p[first]
	j := first + 1
	if e >= discarded {
		for j < int64(len(p)) && p[j] >= discarded {
			j++
		}
	} else {
		for j < int64(len(p)) && p[j] == e+uint32(j-first) {
			j++
		}
		host = s.h.offData + int64(e)*BlockSize + off%BlockSize
	}
	n = min((b-first+j)*BlockSize, s.size) - off
	return e < discarded, host, n, nil
}

// ReadAt implements io.ReaderAt: unallocated and discarded blocks read as
// zeros, runs of consecutive data blocks with one read.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vdi: read at negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > s.size-off {
		p, short = p[:s.size-off], true
	}
	for pos := 0; pos < len(p); {
		at := off + int64(pos)
		alloc, host, n, err := s.span(at)
		if err != nil {
			return 0, err
		}
		piece := p[pos : pos+int(min(n, int64(len(p)-pos)))]
		if !alloc {
			clear(piece)
		} else if k, err := s.ra.ReadAt(piece, host); k < len(piece) {
			if err == nil || errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("%w: %s: data for virtual offset %#x at %#x runs past the end of the file", ErrCorrupt, s.name, at, host)
			}
			return 0, fmt.Errorf("vdi: %s: reading at %#x: %w", s.name, host, err)
		}
		pos += len(piece)
	}
	if short {
		return len(p), io.EOF
	}
	return len(p), nil
}

// maxDataRegion bounds the data one Region call walks: the caller only
// needs to know it is data, and asks again.
const maxDataRegion = 1 << 30

// Region implements format.ZeroMapper: unallocated and discarded blocks,
// and data the file holds as holes (the blocks of a static image never
// written), are zero and need not be read.
func (s *Source) Region(start, length int64) (format.Region, error) {
	length = min(length, s.size-start)
	if start < 0 || length <= 0 {
		return format.Region{}, fmt.Errorf("vdi: %s: region at %#x outside the disk (%d bytes)", s.name, start, s.size)
	}
	end := start + length
	var zero bool
	pos := start
	for pos < end {
		alloc, host, n, err := s.span(pos)
		if err != nil {
			return format.Region{}, err
		}
		n = min(n, end-pos)
		z := !alloc
		if alloc && s.host != nil {
			x, err := s.host.Region(host, n)
			if err == nil && x.Length > 0 {
				z, n = x.Zero, min(n, x.Length)
			}
		}
		if pos == start {
			zero = z
		} else if z != zero || !zero && pos-start >= maxDataRegion {
			break
		}
		pos += n
	}
	return format.Region{Start: start, Length: pos - start, Zero: zero}, nil
}

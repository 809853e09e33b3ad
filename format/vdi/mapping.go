package vdi

import (
	"fmt"

	"github.com/vmaconv/vmaconv/format"
)

// Mapping implements format.Mapper as QEMU's vdi driver and block layer
// answer qemu-img map: unallocated and discarded blocks are present and
// zero, with no offset; allocated blocks are data at their offset in the
// file; in a static image (whose blocks QEMU asks the file about), data
// the file holds as holes is zero too.
func (s *Source) Mapping(start, length int64) (format.Mapping, error) {
	length = min(length, s.size-start)
	if start < 0 || length <= 0 {
		return format.Mapping{}, fmt.Errorf("vdi: %s: mapping at %#x outside the disk (%d bytes)", s.name, start, s.size)
	}
	alloc, host, n, err := s.span(start)
	if err != nil {
		return format.Mapping{}, err
	}
	m := format.Mapping{Start: start, Length: min(n, length), Present: true, Offset: -1}
	if !alloc {
		m.Zero = true
		return m, nil
	}
	m.Data, m.Offset = true, host
	if s.h.imageType == typeStatic {
		m.Zero, m.Length = s.hostZero(host, m.Length)
	}
	return m, nil
}

// hostZero reports whether the file holds host..host+n as a hole (or
// ends before it), and for how much of n that holds, as QEMU asks the
// file under a static image's blocks.
func (s *Source) hostZero(host, n int64) (bool, int64) {
	if host >= s.fileSize {
		return true, n
	}
	if s.host == nil {
		return false, n
	}
	x, err := s.host.Mapping(host, min(n, s.fileSize-host))
	if err != nil || x.Length <= 0 {
		return false, n
	}
	if x.Zero && host+x.Length >= s.fileSize {
		return true, n // a hole to the end of the file, and past it
	}
	return x.Zero, min(x.Length, n)
}

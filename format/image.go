package format

import (
	"io"
	"time"
)

// Image is an opened input file: one disk (a raw or qcow2 image), or an
// archive of several disks and the config files that go with them. Its
// disks' Sources stay valid until Close, which closes the file.
type Image interface {
	io.Closer
	// Disks returns the image's disks, in order. A plain image has one,
	// without a name.
	Disks() []Disk
	// Configs returns the files stored with the disks (archives only).
	Configs() []Config
}

// Disk is one disk of an Image. Its Source is closed with the Image, not
// on its own.
type Disk struct {
	Name   string // device name in an archive; "" for a plain image
	Source Source
}

// Checker is implemented by sources that can tell, before they are read,
// that reading them would fail (an archive's vmstate stream that declares
// much more than it stores), so that a caller refuses before creating any
// output.
type Checker interface {
	Check() error
}

// Stored is implemented by sources that know how many bytes of their
// file they take (an archive device's stored blocks), which is less than
// Size where they leave ranges out: what a file system shows of a file as
// its blocks (st_blocks).
type Stored interface {
	Stored() int64
}

// Created is implemented by images and streams that know when their file
// was made (an archive's ctime).
type Created interface {
	Created() time.Time
}

// SingleDisk returns an Image of one unnamed disk, src; its Close closes
// src.
func SingleDisk(src Source) Image { return single{src} }

type single struct{ src Source }

func (s single) Disks() []Disk     { return []Disk{{Source: s.src}} }
func (s single) Configs() []Config { return nil }
func (s single) Close() error      { return s.src.Close() }

// Pad returns src seen as size bytes, size >= src.Size(): the bytes past
// its end read as zeros (and are reported as a zero region). QEMU presents
// a raw file as a disk of whole 512-byte sectors; Pad(src, (n+511)&^511)
// does the same.
func Pad(src Source, size int64) Source {
	if size <= src.Size() {
		return src
	}
	return &padded{src: src, size: size}
}

type padded struct {
	src  Source
	size int64
}

func (p *padded) Size() int64  { return p.size }
func (p *padded) Close() error { return p.src.Close() }

func (p *padded) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	end := p.src.Size()
	n := 0
	if off < end {
		k := int(min(int64(len(b)), end-off))
		m, err := p.src.ReadAt(b[:k], off)
		if m < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return m, err
		}
		n = k
	}
	want := int(min(int64(len(b)), p.size-off))
	clear(b[n:want])
	if want < len(b) {
		return want, io.EOF
	}
	return want, nil
}

// Region implements ZeroMapper: the source's map, then zeros.
func (p *padded) Region(start, length int64) (Region, error) {
	length = min(length, p.size-start)
	end := p.src.Size()
	if start >= end {
		return Region{Start: start, Length: length, Zero: true}, nil
	}
	if x, ok := p.src.(ZeroMapper); ok {
		return x.Region(start, min(length, end-start))
	}
	return Region{Start: start, Length: min(length, end-start)}, nil
}

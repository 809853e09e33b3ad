package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
)

var registry = all.Registry()

// source is an opened SRC: a random-access disk image, or one device (or,
// with no device named, all devices) of a VMA archive read as a stream.
type source struct {
	ref    format.Ref
	format string
	img    format.Source // images
	ar     *vma.Reader   // archives
	dev    *vma.Device   // the selected device of an archive, if any
	size   int64         // archive file size, -1 if unknown
	closer io.Closer
}

func (s *source) Close() error {
	if s.img != nil {
		return s.img.Close()
	}
	return s.closer.Close()
}

// name is how the source is called in messages.
func (s *source) name() string {
	if s.ref.Path == "-" {
		return "<stdin>"
	}
	return s.ref.Path
}

type sourceOpts struct {
	format       string // -f: forced format
	allowBacking bool
	wantDevice   bool // an archive must resolve to one device
}

// openSource opens ref. Formats are probed by magic bytes unless forced;
// what no driver claims is raw, with a note, so that a raw image is never
// taken for something else once -f raw is given.
func openSource(e *env, ref format.Ref, o sourceOpts) (s *source, err error) {
	var f *os.File
	if ref.Path == "-" {
		if o.format != "" && o.format != vma.Name {
			return nil, usageError{fmt.Errorf("standard input can only be a VMA archive (random access is needed for %s)", o.format)}
		}
		ar, stop, _, err := openArchiveStream(e.stdin, "<stdin>")
		if err != nil {
			return nil, err
		}
		s := &source{ref: ref, format: vma.Name, ar: ar, size: -1, closer: closerFunc(stop)}
		if err := s.selectDevice(o.wantDevice); err != nil {
			stop()
			return nil, err
		}
		return s, nil
	}
	f, err = os.Open(ref.Path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is a directory", ref.Path)
		}
		return nil, err
	}
	var fm format.Format
	if o.format != "" {
		if fm, err = registry.Lookup(o.format); err != nil {
			f.Close()
			return nil, usageError{err}
		}
	} else {
		head, err := format.ReadHead(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", ref.Path, err)
		}
		fm, err = registry.Detect(head)
		if comp := compress.Detect(head); comp != "" {
			fm, err = all.VMA, nil // vzdump compresses archives only
		}
		if errors.Is(err, format.ErrUnknownFormat) {
			fm = raw.Format
			// Said once the source is open, so a failure stays one line.
			defer func() {
				if s != nil {
					e.note("%s: no known format found, reading it as raw (pass -f raw to say so)", ref.Path)
				}
			}()
		}
	}
	s = &source{ref: ref, format: fm.Name, size: -1}
	if fi.Mode().IsRegular() {
		s.size = fi.Size()
	}
	if fm.Name == vma.Name {
		ar, stop, comp, err := openArchiveStream(f, ref.Path)
		if err != nil {
			f.Close()
			s = nil
			return nil, err
		}
		if comp != "" {
			s.size = -1 // progress counts archive bytes, not compressed ones
		}
		s.ar = ar
		s.closer = closerFunc(func() { stop(); f.Close() })
		if err := s.selectDevice(o.wantDevice); err != nil {
			s.closer.Close()
			s = nil
			return nil, err
		}
		return s, nil
	}
	if ref.Device != "" {
		f.Close()
		s = nil
		return nil, fmt.Errorf("%s is a %s image, not an archive: ':%s' selects a device of a VMA archive", ref.Path, fm.Name, ref.Device)
	}
	img, err := fm.Open(f, format.OpenOptions{Forced: o.format != "", AllowBacking: o.allowBacking || o.format == fm.Name})
	if err != nil {
		s = nil
		return nil, err
	}
	s.img = img
	return s, nil
}

// selectDevice resolves ref.Device against the archive: a named device, or
// the only disk when none is named (if one is wanted).
func (s *source) selectDevice(want bool) error {
	h := s.ar.Header()
	var names []string
	for _, d := range h.Devices {
		names = append(names, d.Name)
	}
	list := "it has none"
	if len(names) > 0 {
		list = "devices: " + strings.Join(names, ", ")
	}
	if s.ref.Device != "" {
		d, ok := h.Device(s.ref.Device)
		if !ok {
			return fmt.Errorf("%s: no device %q in the archive (%s)", s.name(), s.ref.Device, list)
		}
		s.dev = &d
		return nil
	}
	if !want {
		return nil
	}
	if len(h.Devices) != 1 {
		return fmt.Errorf("%s: name one device as %s:DEVICE (%s)", s.name(), s.ref.Path, list)
	}
	s.dev = &h.Devices[0]
	return nil
}

// closerFunc adapts a function to io.Closer.
type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

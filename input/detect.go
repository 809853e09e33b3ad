package input

import (
	"errors"
	"fmt"
	"os"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
)

// fallback is the format of what no format claims.
const fallback = "raw"

// ForeignError is Open's error for an image of a format vmaconv recognises
// but does not read (format.Foreigns), which is never taken for raw.
type ForeignError struct {
	Path    string
	Foreign format.Foreign
}

func (e *ForeignError) Error() string {
	return fmt.Sprintf("%s: a %s image, which vmaconv does not read: convert it first (qemu-img convert -f %s -O qcow2 %s disk.qcow2), or pass -f raw to take its bytes as they are", e.Path, e.Foreign.Name, e.Foreign.QEMU, e.Path)
}

// Probe finds the format of the open file f as Open does, without opening
// it: the format whose Probe claims its first bytes, else, for a regular
// file, the one whose ProbeTail claims its last 512; for a compressed file
// (vzdump compresses archives only), the format read as a stream; for an
// image of a format vmaconv does not read, a *ForeignError; otherwise raw,
// with fallback set. comp is the compression found, or "".
func Probe(reg *format.Registry, f *os.File) (fm format.Format, comp string, fallback bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return fm, "", false, err
	}
	head, err := format.ReadHead(f)
	if err != nil {
		return fm, "", false, fmt.Errorf("%s: %w", f.Name(), err)
	}
	fm, fallback, err = detect(reg, f.Name(), f, fi, head)
	return fm, compress.Detect(head), fallback, err
}

// detect is Probe of the file f at path, with its first bytes head.
func detect(reg *format.Registry, path string, f *os.File, fi os.FileInfo, head []byte) (format.Format, bool, error) {
	if compress.Detect(head) != "" {
		fm, err := streamFormat(reg)
		return fm, false, err
	}
	fm, err := reg.Detect(head)
	if !errors.Is(err, format.ErrUnknownFormat) {
		return fm, false, err
	}
	var tail []byte
	if fi.Mode().IsRegular() && fi.Size() >= 512 {
		tail = make([]byte, 512)
		if _, err := f.ReadAt(tail, fi.Size()-512); err != nil {
			tail = nil
		}
	}
	// A format whose signature is a footer (a fixed VHD), only ever of a
	// file: a stream has no end to look at.
	if tail != nil {
		if fm, err := reg.DetectTail(tail, fi.Size()); err == nil {
			return fm, false, nil
		}
	}
	if ff, ok := format.DetectForeign(head, tail); ok {
		return format.Format{}, false, &ForeignError{Path: path, Foreign: ff}
	}
	fm, err = reg.Lookup(fallback)
	return fm, true, err
}

// streamFormat returns the format a stream whose format is not named is
// read as: the first, by name, of those that can be read as a stream.
func streamFormat(reg *format.Registry) (format.Format, error) {
	for _, name := range reg.Names() {
		if fm, err := reg.Lookup(name); err == nil && fm.OpenStream != nil {
			return fm, nil
		}
	}
	return format.Format{}, errors.New("no format can be read as a stream")
}

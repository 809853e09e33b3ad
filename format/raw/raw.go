package raw

import (
	"fmt"
	"io"
	"os"

	"github.com/vmaconv/vmaconv/format"
)

// Format is the raw driver, for a format.Registry.
var Format = format.Format{
	Name: Name,
	Open: func(f *os.File, _ format.OpenOptions) (format.Source, error) { return Open(f) },
}

// Source is a raw image file. It is safe for concurrent use.
type Source struct {
	f    *os.File
	size int64
}

// Open returns f as a Source; the Source's Close closes f, and so does a
// failing Open. Regular files and block devices are supported.
func Open(f *os.File) (*Source, error) {
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw: size of %s: %w", f.Name(), err)
	}
	return &Source{f: f, size: size}, nil
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// Size returns the image size in bytes.
func (s *Source) Size() int64 { return s.size }

// Close closes the file.
func (s *Source) Close() error { return s.f.Close() }

// Extent implements format.Extenter: it returns the hole or data run that
// starts at start, clipped to length bytes.
func (s *Source) Extent(start, length int64) (format.Extent, error) {
	length = min(length, s.size-start)
	if length <= 0 {
		return format.Extent{}, fmt.Errorf("raw: extent at %d beyond the end (%d)", start, s.size)
	}
	n, zero, err := holeAt(s.f, start, s.size)
	if err != nil {
		return format.Extent{}, fmt.Errorf("raw: %s: %w", s.f.Name(), err)
	}
	return format.Extent{Start: start, Length: min(n, length), Zero: zero}, nil
}

package raw

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// Format is the raw driver, for a format.Registry. It is never probed:
// raw is what an input is when no other format claims it, and the output
// format when no other extension matches.
var Format = format.Format{
	Name: Name,
	Open: func(f *os.File, _ format.OpenOptions) (format.Image, error) {
		s, err := Open(f)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	OpenAt: func(r io.ReaderAt, size int64, _ format.OpenOptions) (format.Image, error) {
		return format.SingleDisk(At(r, size)), nil
	},
	Extensions: []string{".raw", ".img"},
	Create:     Create,
	InfoAt:     info,
}

// At returns the size bytes of r as a raw image, for a view that is not a
// file (a remote object): it has no holes to ask about, and its Close does
// not close r.
func At(r io.ReaderAt, size int64) format.Source { return &view{io.NewSectionReader(r, 0, size)} }

type view struct{ *io.SectionReader }

func (v *view) Close() error { return nil }

// info describes a raw image as qemu-img info does: its size, rounded up
// to whole 512-byte sectors as QEMU sizes it, and what the file takes on
// disk.
func info(_ io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	return format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: (size + 511) &^ 511, Show: format.ShowSize},
		st.DiskSize(),
		{Key: "dirty-flag", Value: false, Show: format.ShowHidden},
	}, nil
}

// Source is a raw image file. It is safe for concurrent use.
//
// Its Region asks the file system where the holes are (SEEK_DATA and
// SEEK_HOLE), and only as often as it pays: every answer is a run that is
// remembered, so that no later question falls inside it; a file whose
// allocated blocks cover its size is not asked at all; and if the answers
// come slowly (tmpfs walks its pages for every SEEK_HOLE) and cover little,
// the rest of the file is read instead.
type Source struct {
	f        *os.File
	size     int64
	holes    atomic.Bool // ask about holes
	borrowed bool        // f belongs to somebody else (Map)

	mu      sync.Mutex
	runs    [8]run // recent answers
	next    int
	spent   time.Duration // in lseek
	covered int64         // bytes the answers covered
}

type run struct {
	start, end int64
	zero       bool
}

// Slow-answer fallback: once the hole queries have taken slowQueryTime
// and covered less than slowQueryRate bytes per second of it, reading is
// faster than asking.
const (
	slowQueryTime = 100 * time.Millisecond
	slowQueryRate = 2 << 30
)

// Open returns f as a Source; the Source's Close closes f, and so does a
// failing Open. Regular files and block devices are supported.
func Open(f *os.File) (*Source, error) {
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw: size of %s: %w", f.Name(), err)
	}
	s := &Source{f: f, size: size}
	s.holes.Store(!fullyAllocated(f, size))
	return s, nil
}

// Map returns f's hole map as a Source that does not own f (its Close does
// nothing), for drivers whose images keep data in a file that may have
// holes: a qcow2 image's preallocated clusters read as zeros where the
// file has a hole, and the map says where without reading them.
func Map(f *os.File, size int64) *Source {
	s := &Source{f: f, size: size, borrowed: true}
	s.holes.Store(!fullyAllocated(f, size))
	return s
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// Size returns the image size in bytes.
func (s *Source) Size() int64 { return s.size }

// Close closes the file (not one given to Map).
func (s *Source) Close() error {
	if s.borrowed {
		return nil
	}
	return s.f.Close()
}

// Region implements format.ZeroMapper: it returns the hole or data run that
// starts at start, clipped to length bytes.
func (s *Source) Region(start, length int64) (format.Region, error) {
	length = min(length, s.size-start)
	if length <= 0 || start < 0 {
		return format.Region{}, fmt.Errorf("raw: extent at %d beyond the end (%d)", start, s.size)
	}
	if !s.holes.Load() {
		return format.Region{Start: start, Length: length}, nil
	}
	s.mu.Lock()
	for _, r := range s.runs {
		if r.start <= start && start < r.end {
			s.mu.Unlock()
			return format.Region{Start: start, Length: min(r.end-start, length), Zero: r.zero}, nil
		}
	}
	s.mu.Unlock()
	t := time.Now()
	n, zero, err := holeAt(s.f, start, s.size)
	if err != nil {
		return format.Region{}, fmt.Errorf("raw: %s: %w", s.f.Name(), err)
	}
	took := time.Since(t)
	s.mu.Lock()
	s.runs[s.next] = run{start, start + n, zero}
	s.next = (s.next + 1) % len(s.runs)
	s.spent += took
	s.covered += n
	if s.spent > slowQueryTime && float64(s.covered)/s.spent.Seconds() < slowQueryRate {
		s.holes.Store(false)
	}
	s.mu.Unlock()
	return format.Region{Start: start, Length: min(n, length), Zero: zero}, nil
}

package raw

import (
	"bufio"
	"fmt"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// Create starts a raw image of one disk at d: a new sparse file (zero
// 4 KiB blocks become holes), the existing file or block device d.Path
// written in place (zeros included), or a stream. Raw declares no
// options.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a raw image holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a raw image holds no config files (-c)")
	}
	size := disks[0].Size
	if d.Stream != nil {
		return &streamSink{w: bufio.NewWriterSize(d.Stream, 1<<20), size: size}, nil
	}
	f, err := outfile.Create(d)
	if err != nil {
		return nil, err
	}
	if d.InPlace {
		n, err := f.Size()
		if err == nil && n < size {
			err = fmt.Errorf("%s holds %d bytes, the disk needs %d", d.Path, n, size)
		}
		if err != nil {
			f.Abort()
			return nil, err
		}
		return &inPlaceSink{f: f}, nil
	}
	if err := f.Truncate(size); err != nil { // a sparse file of the disk's size
		f.Abort()
		return nil, err
	}
	return &fileSink{f: f}, nil
}

// fileSink writes a new sparse file: only blocks that are not zero.
type fileSink struct{ f *outfile.File }

func (s *fileSink) Disk(int) format.DiskWriter { return s }
func (s *fileSink) Commit() error              { return s.f.Commit() }
func (s *fileSink) Abort() error               { return s.f.Abort() }
func (s *fileSink) OrderIndependent()          {}
func (s *fileSink) ZeroAt(off, n int64) error  { return nil }

// WriteAt writes the runs of p's non-zero 4 KiB blocks (aligned on the
// file's block grid), each with one write.
func (s *fileSink) WriteAt(p []byte, off int64) (int, error) {
	if err := zero.WriteNonZero(s.f, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// inPlaceSink writes everything, zeros included, into an existing target.
type inPlaceSink struct{ f *outfile.File }

func (s *inPlaceSink) Disk(int) format.DiskWriter { return s }
func (s *inPlaceSink) Commit() error              { return s.f.Commit() }
func (s *inPlaceSink) Abort() error               { return s.f.Abort() }
func (s *inPlaceSink) OrderIndependent()          {}

func (s *inPlaceSink) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }

// ZeroAt zeroes the range: by punching a hole where the file system can
// (a regular file stays sparse), else by writing zeros.
func (s *inPlaceSink) ZeroAt(off, n int64) error {
	if punchHole(s.f.File(), off, n) {
		return nil
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := s.f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

var zeros = make([]byte, 1<<20)

// streamSink writes the disk's bytes in order to a stream.
type streamSink struct {
	w    *bufio.Writer
	size int64
	pos  int64
	err  error
	done bool
}

func (s *streamSink) Disk(int) format.DiskWriter { return s }
func (s *streamSink) Sequential()                {}

func (s *streamSink) WriteAt(p []byte, off int64) (int, error) {
	if err := s.check(off); err != nil {
		return 0, err
	}
	n, err := s.w.Write(p)
	s.pos += int64(n)
	s.err = err
	return n, err
}

func (s *streamSink) ZeroAt(off, n int64) error {
	if err := s.check(off); err != nil {
		return err
	}
	for n > 0 && s.err == nil {
		k := min(n, int64(len(zeros)))
		_, s.err = s.w.Write(zeros[:k])
		s.pos += k
		n -= k
	}
	return s.err
}

func (s *streamSink) check(off int64) error {
	if s.err == nil && off != s.pos {
		s.err = fmt.Errorf("raw: stream written out of order: at byte %d, expected %d", off, s.pos)
	}
	return s.err
}

// Commit flushes the stream; it fails if the disk was not written whole.
func (s *streamSink) Commit() error {
	if s.done {
		return s.err
	}
	s.done = true
	if s.err == nil && s.pos != s.size {
		s.err = fmt.Errorf("raw: stream ends at byte %d of %d", s.pos, s.size)
	}
	if s.err == nil {
		s.err = s.w.Flush()
	}
	return s.err
}

// Abort stops writing; what was written to the stream stays written.
func (s *streamSink) Abort() error {
	s.done = true
	return nil
}

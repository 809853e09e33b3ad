package vdi

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/outfile"
)

// options are the options Create takes: qemu-img's (static), and the
// image UUID, which qemu-img always makes random.
var options = []format.Option{
	{Name: "static", Type: format.OptBool, Default: "off",
		Help: "VDI static (pre-allocated) image: every block in place, the file as large as the disk (blocks of zeros stay holes)"},
	{Name: "uuid", Type: format.OptString, Default: "random",
		Help: "Image UUID, as VirtualBox shows it, for reproducible images (the last-modification UUID is then derived from it)",
		Check: func(v any) error {
			_, err := parseUUID(v.(string))
			return err
		}},
}

// parseUUID parses an image UUID; the nil UUID is refused (VirtualBox
// refuses an image that has it).
func parseUUID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err == nil && id == uuid.Nil {
		err = fmt.Errorf("the nil UUID is not an image's")
	}
	return id, err
}

// Create starts a new VDI image of one disk at d (see Writer): dynamic,
// or static with -o static=on. A static image can be written to a stream
// (its header and block map come first, then the disk in order); a
// dynamic one cannot.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a VDI image holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a VDI image holds no config files (-c)")
	case d.InPlace:
		return nil, format.Unsupported("-n writes raw output in place; a VDI image is always new")
	case disks[0].Size > MaxSize:
		return nil, format.Unsupported("a disk of %d bytes is larger than a VDI image holds (%d bytes, QEMU's limit)", disks[0].Size, int64(MaxSize))
	}
	wo := WriterOptions{Static: o.Options.Bool("static")}
	if s := o.Options.String("uuid"); s != "" {
		id, err := parseUUID(s)
		if err != nil {
			return nil, format.Unsupported("uuid %q: %v", s, err)
		}
		wo.UUID = id
	}
	if d.Stream != nil {
		if !wo.Static {
			return nil, format.Unsupported("a dynamic VDI image cannot be written to a pipe (its block map, at the start, depends on the data); write a file, or a static image (-o static=on)")
		}
		w, err := NewStreamWriter(d.Stream, disks[0].Size, wo)
		if err != nil {
			return nil, err
		}
		return &streamSink{w}, nil
	}
	f, err := outfile.Create(d)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(outFile{f}, disks[0].Size, wo)
	if err != nil {
		f.Abort()
		return nil, err
	}
	return &sink{f: f, w: w}, nil
}

// outFile is an output file as a Writer writes it.
type outFile struct{ *outfile.File }

func (o outFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.File.File().ReadAt(p, off)
	return n, o.Err("reading", err)
}

type sink struct {
	f *outfile.File
	w *Writer
}

// Disk returns the writer; a static image's may be written in parallel.
func (s *sink) Disk(int) format.DiskWriter {
	if s.w.static {
		return staticDisk{s.w}
	}
	return s.w
}

// staticDisk is a static image's Writer, whose writes go to fixed places.
type staticDisk struct{ *Writer }

func (staticDisk) OrderIndependent() {}

// Commit completes the image and commits the file.
func (s *sink) Commit() error {
	if err := s.w.Close(); err != nil {
		s.f.Abort()
		return fmt.Errorf("%s: %w", s.f.Path(), err)
	}
	return s.f.Commit()
}

// Abort stops writing and removes the file.
func (s *sink) Abort() error {
	s.w.Abort()
	return s.f.Abort()
}

// streamSink writes a static image to a stream.
type streamSink struct{ w *StreamWriter }

func (s *streamSink) Disk(int) format.DiskWriter { return s.w }
func (s *streamSink) Commit() error              { return s.w.Close() }

// Abort stops writing; what was written to the stream stays written.
func (s *streamSink) Abort() error {
	s.w.done = true
	return nil
}

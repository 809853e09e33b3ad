package qcow2

import (
	"fmt"

	"github.com/vmaconv/vmaconv/format"
)

// Create starts a new qcow2 image of one disk at d (see Writer). A
// stream is refused: the image's metadata is written last, at offsets
// before its data.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a qcow2 image holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a qcow2 image holds no config files (-c)")
	case o.UUID != [16]byte{} || !o.CTime.IsZero():
		return nil, format.Unsupported("--uuid and --ctime apply to archives")
	case d.Stream != nil:
		return nil, format.Unsupported("qcow2 cannot be written to a pipe (its tables are written after the data, at the start of the file); write a file")
	case d.InPlace:
		return nil, format.Unsupported("-n writes raw output in place; a qcow2 image is always new")
	case o.Seekable:
		return nil, format.Unsupported("--seekable applies to zstd-compressed archives")
	}
	comp := o.Compress
	if comp == "none" {
		comp = ""
	}
	if comp != "" && comp != Zlib && comp != Zstd {
		return nil, format.Unsupported("--compress %s: qcow2 clusters take zlib or zstd", comp)
	}
	wo := WriterOptions{ClusterSize: o.ClusterSize, Compress: comp, Level: o.Level, Workers: o.Workers}
	// Check the options before a file exists.
	if _, err := checkOptions(&wo); err != nil {
		return nil, format.Unsupported("%v", err)
	}
	f, err := format.CreateOutput(d)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(f, disks[0].Size, wo)
	if err != nil {
		f.Abort()
		return nil, err
	}
	return &sink{f: f, w: w}, nil
}

type sink struct {
	f *format.OutputFile
	w *Writer
}

func (s *sink) Disk(int) format.DiskWriter { return s.w }

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

package qcow2

import (
	"fmt"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/outfile"
)

// options are the options Create takes (qemu-img's names where qemu
// has them).
var options = []format.Option{
	{Name: "cluster_size", Type: format.OptSize, Default: "65536",
		Help: "Cluster size, a power of two from 512 bytes to 2M"},
	{Name: "compress", Type: format.OptEnum, Values: []string{Zlib, Zstd, "none"}, Default: "none",
		Help: "Compress clusters with this codec, as qemu-img convert -c with -o compression_type does"},
	{Name: "compression_type", Type: format.OptEnum, Values: []string{Zlib, Zstd}, Default: "zlib, or compress's",
		Help: "Compression method the image records for compressed clusters; given alone it compresses nothing, as with qemu-img"},
	{Name: "level", Type: format.OptInt,
		Help: "zstd compression level, 1 to 22 (default 3); zlib clusters have one level"},
}

// Create starts a new qcow2 image of one disk at d (see Writer). A
// stream is refused: the image's metadata is written last, at offsets
// before its data.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a qcow2 image holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a qcow2 image holds no config files (-c)")
	case d.Stream != nil:
		return nil, format.Unsupported("qcow2 cannot be written to a pipe (its tables are written after the data, at the start of the file); write a file")
	case d.InPlace:
		return nil, format.Unsupported("-n writes raw output in place; a qcow2 image is always new")
	}
	comp := o.Options.String("compress")
	if comp == "none" {
		comp = ""
	}
	wo := WriterOptions{
		ClusterSize: int(min(o.Options.Int("cluster_size"), 1<<40)), Compress: comp,
		CompressionType: o.Options.String("compression_type"),
		Level:           int(o.Options.Int("level")), Workers: o.Workers,
	}
	// Check the options before a file exists.
	if _, err := checkOptions(&wo); err != nil {
		return nil, format.Unsupported("%v", err)
	}
	f, err := outfile.Create(d)
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
	f *outfile.File
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

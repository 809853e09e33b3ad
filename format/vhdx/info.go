package vhdx

import (
	"io"

	"github.com/vmaconv/vmaconv/format"
)

// Info is what a VHDX file's headers and metadata say of it.
type Info struct {
	Size           int64 // virtual size: whole logical sectors
	BlockSize      int64 // qemu-img's cluster_size
	Fixed          bool  // LeaveBlockAllocated: a fixed image
	Differencing   bool  // HasParent
	Parent         string
	LogicalSector  int64
	PhysicalSector int64
	// LogEntries is the number of log entries to replay: QEMU refuses to
	// open such an image read-only; vmaconv replays them in memory.
	LogEntries int
	Creator    string // the file identifier's creator field
}

// ReadInfo reads an image's headers and metadata, checked as Open checks
// them (the log replayed in memory), without its BAT or its parent.
func ReadInfo(r io.ReaderAt, size int64) (*Info, error) {
	l, err := parse(r, size)
	if err != nil {
		return nil, err
	}
	in := &Info{
		Size: l.size, BlockSize: l.blockSize, Fixed: l.fixed && !l.hasParent, Differencing: l.hasParent,
		LogicalSector: l.logical, PhysicalSector: l.physical, LogEntries: l.replayed, Creator: l.creator,
	}
	if l.hasParent {
		in.Parent = l.locator.firstPath()
	}
	return in, nil
}

// info describes the size bytes of r, an image, as qemu-img info does
// (which has no format-specific data for VHDX), from its headers and
// metadata.
func info(r io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	in, err := ReadInfo(r, size)
	if err != nil {
		return nil, err
	}
	fs := format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: in.Size, Show: format.ShowSize},
		st.DiskSize(),
		{Key: "cluster-size", Label: "cluster_size", Value: in.BlockSize},
	}
	if in.Differencing {
		fs = append(fs, format.Field{Key: "backing-filename", Label: "backing file", Value: in.Parent, Show: format.ShowName})
	}
	if in.LogEntries > 0 {
		fs = append(fs, format.Field{Label: "log", Value: "entries to replay (read replayed in memory; qemu-img refuses it: " + wayOut + ")"})
	}
	return append(fs, format.Field{Key: "dirty-flag", Value: in.LogEntries > 0, Show: format.ShowHidden}), nil
}

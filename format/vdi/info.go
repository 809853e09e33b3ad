package vdi

import (
	"io"

	"github.com/vmaconv/vmaconv/format"
)

// info describes the size bytes of r, an image, as qemu-img info does,
// from its header, checked as Open checks it (the block map is not read).
func info(r io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	h, err := readHeader(r, size)
	if err != nil {
		return nil, err
	}
	return format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: h.size(), Show: format.ShowSize},
		st.DiskSize(),
		{Key: "cluster-size", Label: "cluster_size", Value: int64(BlockSize)},
		{Key: "dirty-flag", Value: false, Show: format.ShowHidden},
	}, nil
}

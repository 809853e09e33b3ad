package vdi

import (
	"io"
	"os"

	"github.com/vmaconv/vmaconv/format"
)

// info describes an image as qemu-img info does, from its header, checked
// as Open checks it (the block map is not read).
func info(f *os.File, st format.FileStat) (format.Info, error) {
	size := st.Size
	if size < 0 { // a block device
		var err error
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	h, err := readHeader(f, size)
	if err != nil {
		return nil, err
	}
	return format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: h.size(), Show: format.ShowSize},
		{Key: "actual-size", Label: "disk size", Value: st.Allocated, Show: format.ShowDiskSize},
		{Key: "cluster-size", Label: "cluster_size", Value: int64(BlockSize)},
		{Key: "dirty-flag", Value: false, Show: format.ShowHidden},
	}, nil
}

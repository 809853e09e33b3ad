package vpc

import (
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
)

// info describes a VHD as qemu-img info -f vpc does, from its footer and
// header, without reading its BAT or opening a parent: its virtual size,
// and the block size of a dynamic or differencing disk as its cluster
// size (qemu-img has no format-specific data for vpc). A differencing
// disk's parent, which qemu-img does not read, is shown as its backing
// file, as the child names it. r is the image, size bytes long.
func info(r io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	foot, err := readFooter(r, size)
	if err != nil {
		return nil, err
	}
	vsize := foot.diskSize()
	if vsize > MaxSize {
		return nil, fmt.Errorf("%w: virtual size %d bytes (%s): a VHD holds at most 2040 GiB", ErrCorrupt, vsize, sizeSource(foot))
	}
	fs := format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: vsize, Show: format.ShowSize},
		st.DiskSize(),
	}
	if foot.diskType != TypeFixed {
		h, err := readHeader(r, size, foot)
		if err != nil {
			return nil, err
		}
		fs = append(fs, format.Field{Key: "cluster-size", Label: "cluster_size", Value: int64(h.blockSize)})
		if foot.diskType == TypeDifferencing {
			names, err := parentNames(&image{r: r, fileSize: size, foot: foot, head: h})
			if err != nil {
				return nil, err
			}
			if len(names) > 0 {
				fs = append(fs, format.Field{Key: "backing-filename", Label: "backing file", Value: names[0], Show: format.ShowName})
			}
		}
	}
	return append(fs, format.Field{Key: "dirty-flag", Value: false, Show: format.ShowHidden}), nil
}

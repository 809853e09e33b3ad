package vmdk

import (
	"fmt"
	"io"
	"os"
	"reflect"

	"github.com/vmaconv/vmaconv/format"
)

// extentInfo is what info shows of one extent (QEMU's VmdkExtentInfo).
type extentInfo struct {
	file       string
	typ        string // "" for an image's own sparse extent
	size       int64  // bytes
	grain      int64  // bytes; 0 for flat and ZERO extents
	compressed bool
}

// info describes the size bytes of r, an image, as qemu-img info does
// (vmdk_get_specific_info, vmdk_co_get_info): its header and descriptor,
// and the headers of the extent files its descriptor names, those of its
// directory only, without following a parent. An extent file outside the
// directory, or beside a remote object (which has no directory to read),
// is described from the descriptor's line.
func info(r io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	var ab about
	var exts []extentInfo
	var magic [4]byte
	r.ReadAt(magic[:], 0)
	h, err := readHeader(r, size)
	switch {
	case magic != Magic && magic != MagicCOWD, err == nil && h.capacity == 0 && h.descOffset != 0:
		off := int64(0)
		if h != nil {
			off = h.descAt()
		}
		text, err := readText(r, size, off, maxDescriptor)
		if err != nil {
			return nil, err
		}
		d, err := parseDescriptor(text)
		if err != nil {
			return nil, err
		}
		if err := d.checkCreateType(); err != nil {
			return nil, err
		}
		ab = about{createType: d.createType, cid: d.cid, parentCID: d.parentCID, parentHint: d.parentHint}
		if !d.hasParent {
			ab.parentCID = 0xffffffff
		}
		for _, l := range d.extents {
			x, alloc := describeExtent(st, l)
			exts, st.Allocated = append(exts, x), st.Allocated+alloc // the extents' files too
		}
	case err != nil:
		return nil, err
	default:
		if ab, err = sparseAbout(r, size, h); err != nil {
			return nil, err
		}
		exts = []extentInfo{{file: st.Name, size: int64(h.capacity) * sector, grain: int64(h.granularity) * sector, compressed: h.compressed()}}
	}
	total := int64(0)
	for _, x := range exts {
		total += x.size
	}
	in := format.Info{
		{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "file format", Value: Name},
		{Key: "virtual-size", Label: "virtual size", Value: total, Show: format.ShowSize},
		st.DiskSize(),
	}
	// QEMU has block driver info (a cluster size, the dirty flag) only for
	// extents all of a kind (vmdk_co_get_info).
	same := len(exts) > 0
	for _, x := range exts {
		same = same && (x.grain > 0) == (exts[0].grain > 0) && x.compressed == exts[0].compressed &&
			(x.grain == 0 || x.grain == exts[0].grain)
	}
	if same && exts[0].grain > 0 {
		in = append(in, format.Field{Key: "cluster-size", Label: "cluster_size", Value: exts[0].grain})
	}
	if ab.parentHint != "" {
		// The parent's path as QEMU resolves it: beside the image.
		full := displayName(st.Name, ab.parentHint)
		shown := format.Field{Label: "backing file", Value: ab.parentHint, Show: format.ShowName}
		if full != ab.parentHint {
			shown = format.Field{Label: "backing file", Value: fmt.Sprintf("%s (actual path: %s)",
				format.Field{Value: ab.parentHint, Show: format.ShowName}.Text(), format.Field{Value: full, Show: format.ShowName}.Text())}
		}
		in = append(in,
			format.Field{Key: "backing-filename", Value: ab.parentHint, Show: format.ShowHidden},
			format.Field{Key: "full-backing-filename", Value: full, Show: format.ShowHidden},
			shown,
			format.Field{Key: "backing-filename-format", Label: "backing file format", Value: Name})
	}
	var rows []format.Info
	var text format.Info
	for i, x := range exts {
		row := format.Info{}
		if x.compressed {
			row = append(row, format.Field{Key: "compressed", Label: "compressed", Value: true})
		}
		row = append(row,
			format.Field{Key: "virtual-size", Label: "virtual size", Value: x.size},
			format.Field{Key: "filename", Label: "filename", Value: x.file, Show: format.ShowName})
		if x.grain > 0 {
			row = append(row, format.Field{Key: "cluster-size", Label: "cluster size", Value: x.grain})
		}
		row = append(row, format.Field{Key: "format", Label: "format", Value: x.typ})
		rows = append(rows, row)
		text = append(text, format.Field{Label: fmt.Sprintf("[%d]", i), Value: row})
	}
	data := format.Info{
		{Key: "cid", Label: "cid", Value: int64(ab.cid)},
		{Key: "parent-cid", Label: "parent cid", Value: int64(ab.parentCID)},
		{Key: "create-type", Label: "create type", Value: ab.createType},
		{Key: "extents", Value: rows, Show: format.ShowHidden},
		{Label: "extents", Value: text},
	}
	if same {
		in = append(in, format.Field{Key: "dirty-flag", Value: false, Show: format.ShowHidden})
	}
	return append(in,
		format.Field{Key: "format-specific", Label: "Format specific information", Value: format.Info{
			{Key: "type", Value: Name, Show: format.ShowHidden},
			{Key: "data", Value: data},
		}},
	), nil
}

// describeExtent describes an extent the descriptor st names, and
// returns the bytes its file takes: from its header where its file is in
// the descriptor's directory, from the line alone otherwise (a remote
// descriptor's extents included: they are not read).
func describeExtent(st format.FileStat, l extentLine) (extentInfo, int64) {
	desc := st.Name
	x := extentInfo{file: displayName(desc, l.file), typ: l.typ, size: l.sectors * sector}
	if l.typ == "ZERO" {
		x.file = ""
		return x, 0
	}
	if st.Remote {
		return x, 0
	}
	op := &opener{} // no consent: files outside the directory are not opened
	path, err := op.resolve(desc, l.file, ErrExtentFile, false)
	if err != nil {
		return x, 0
	}
	f, fi, size, err := op.openFile(path, l.file, ErrExtentFile)
	if err != nil {
		op.closeAll()
		return x, 0
	}
	defer op.closeAll()
	if l.typ == "SPARSE" || l.typ == "VMFSSPARSE" {
		if h, err := readHeader(f, size); err == nil && (h.capacity != 0 || h.descOffset == 0) {
			x.size, x.grain, x.compressed = int64(h.capacity)*sector, int64(h.granularity)*sector, h.compressed()
		}
	}
	return x, allocatedBytes(fi)
}

// allocatedBytes returns what a file takes on disk (st_blocks), or its
// size where the system does not say.
func allocatedBytes(fi os.FileInfo) int64 {
	v := reflect.ValueOf(fi.Sys())
	if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
		if b := v.Elem().FieldByName("Blocks"); b.IsValid() && b.CanInt() {
			return b.Int() * 512
		}
	}
	return fi.Size()
}

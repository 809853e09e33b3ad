package vma

import (
	"fmt"
	"io"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// fileInfo describes the size bytes of ra, an uncompressed archive, from
// its header (for Format.InfoAt); its extents are not read.
func fileInfo(ra io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	r, err := NewReader(io.NewSectionReader(ra, 0, size))
	if err != nil {
		return nil, err
	}
	return r.Info(st), nil
}

// Info describes the archive from its header, for info: qemu-img info's
// keys where it has them (filename, format, actual-size: the file's size
// if it has one, cluster-size), the archive's own otherwise.
// It implements format.Informer.
func (r *Reader) Info(st format.FileStat) format.Info {
	h := r.hdr
	in := format.Info{
		{Key: "filename", Label: "file", Value: st.Name},
		{Key: "format", Value: Name, Show: format.ShowHidden},
		{Key: "version", Value: Version, Show: format.ShowHidden},
		{Label: "format", Value: fmt.Sprintf("%s (version %d)", Name, Version)},
	}
	if st.Size >= 0 {
		in = append(in, format.Field{Key: "actual-size", Value: st.Size, Show: format.ShowHidden})
	}
	configs, devices := []format.Info{}, []format.Info{}
	for _, c := range h.Configs {
		configs = append(configs, format.Info{
			{Key: "name", Value: c.Name, Show: format.ShowName},
			{Key: "size", Value: len(c.Data), Show: format.ShowBytes},
		})
	}
	for _, d := range h.Devices {
		kind := "virtual size"
		if d.IsVMState() {
			kind = "vmstate"
		}
		dev := format.Info{
			{Key: "id", Value: d.ID},
			{Key: "name", Value: d.Name, Show: format.ShowName},
			{Key: "virtual-size", Label: kind, Value: d.Size, Show: format.ShowSize},
		}
		if d.IsVMState() {
			dev = append(dev, format.Field{Key: "vmstate", Value: true, Show: format.ShowHidden})
		}
		devices = append(devices, dev)
	}
	return append(in,
		format.Field{Key: "uuid", Label: "uuid", Value: h.UUID.String()},
		format.Field{Key: "ctime", Label: "ctime", Value: ctimeString(h.CTime)},
		format.Field{Key: "header-size", Label: "header size", Value: h.Size},
		format.Field{Key: "cluster-size", Value: ClusterSize, Show: format.ShowHidden},
		format.Field{Key: "configs", Label: "configs", Value: configs},
		format.Field{Key: "devices", Label: "devices", Value: devices},
	)
}

// ctimeString formats an archive's creation time as RFC 3339, or, for a
// time outside years 1 to 9999 (a damaged or hostile header), as its Unix
// seconds.
func ctimeString(t time.Time) string {
	if t.Year() < 1 || t.Year() > 9999 {
		return fmt.Sprintf("%d (Unix seconds, out of range)", t.Unix())
	}
	return t.Format(time.RFC3339)
}

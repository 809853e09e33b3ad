package input

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmaconv/vmaconv/format"
)

// Describe returns what info shows of the file at path ("-": standard
// input), of the format o.Format names or that Open would find. Opening
// is all it does: a file read at random is described by its format
// (format.Format.InfoAt, or Info), from its header, without opening its
// disks or a backing file, so that an image other commands refuse can
// still be described; a remote object (s3://, http(s)://) read at random
// likewise, with ranged GETs (describeRemote); an input read as a stream
// (standard input, a compressed file, a file of a format named that reads
// as a stream) by its stream (format.Informer). Errors for a format that
// is not registered or that cannot describe its files match
// format.ErrUnsupportedOption.
func Describe(ctx context.Context, reg *format.Registry, path string, o Options) (format.Info, error) {
	if path == "-" {
		return describeStream(ctx, reg, path, o)
	}
	if IsRemote(path) {
		return describeRemote(ctx, reg, path, o)
	}
	if o.Format != "" {
		if fm, err := reg.Lookup(o.Format); err == nil && fm.OpenStream != nil {
			return describeStream(ctx, reg, path, o)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, missingArchive(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	var fm format.Format
	switch {
	case o.Format != "":
		if fm, err = reg.Lookup(o.Format); err != nil {
			return nil, format.Unsupported("%v", err)
		}
	case fi.Mode().IsRegular():
		d, comp, _, err := Probe(reg, f)
		var fe *ForeignError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s: a %s image, which vmaconv does not read (qemu-img info -f %s reads it)", path, fe.Foreign.Name, fe.Foreign.QEMU)
		}
		if err != nil {
			return nil, err
		}
		if comp != "" {
			o.Format = d.Name
			return describeStream(ctx, reg, path, o)
		}
		fm = d
	default:
		if fm, err = reg.Lookup(fallback); err != nil {
			return nil, err
		}
	}
	if fm.InfoAt == nil && fm.Info == nil {
		return nil, format.Unsupported("-f %s: info cannot describe %s files", fm.Name, fm.Name)
	}
	st := format.FileStat{Name: path, Size: -1, Allocated: allocated(fi)}
	if fi.Mode().IsRegular() {
		st.Size = fi.Size()
	}
	var in format.Info
	if fm.InfoAt != nil {
		size := st.Size
		if size < 0 { // a block device: its size is where it ends
			size, err = f.Seek(0, io.SeekEnd)
		}
		if err == nil {
			in, err = fm.InfoAt(f, size, st)
		}
	} else {
		in, err = fm.Info(f, st)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return in, nil
}

// describeRemote describes a remote object for info: an archive (or a
// format read as a stream) by its stream, from its header; an image as a
// local file is described, by its format's InfoAt, reading what it needs
// with ranged GETs. What only a local file has is not shown: the bytes it
// takes on disk (the object's size is shown instead, as its "object
// size": format.FileStat.DiskSize), and files beside it (a VMDK
// descriptor's extents are described from its lines, a bare OVF's
// manifest is not read). An image of a format without InfoAt, or on a
// server that takes no range requests, is described by what opening it
// gives (its format and virtual size), or why it cannot be opened.
func describeRemote(ctx context.Context, reg *format.Registry, path string, o Options) (format.Info, error) {
	op := &opener{ctx: ctx, reg: reg, ref: format.Ref{Path: path}, o: o}
	ob, err := op.openObject()
	if err != nil {
		return nil, err
	}
	defer ob.Close()
	fm, err := op.formatOf(ob)
	if err != nil {
		var fe *ForeignError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s: a %s image, which vmaconv does not read (qemu-img info -f %s reads it)", ob.Name(), fe.Foreign.Name, fe.Foreign.QEMU)
		}
		return nil, err
	}
	if fm.OpenStream != nil {
		o.Format = fm.Name
		return describeStream(ctx, reg, path, o)
	}
	st := format.FileStat{Name: ob.Name(), Size: ob.Size(), Allocated: ob.Size(), Remote: true}
	if fm.InfoAt != nil && ob.RandomAccess() {
		in, err := fm.InfoAt(ob, ob.Size(), st)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ob.Name(), err)
		}
		return in, nil
	}
	o.RandomAccess, o.Format = true, fm.Name
	in, err := Open(ctx, reg, format.Ref{Path: path}, o)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	vsize := int64(0)
	if len(in.Devices()) > 0 {
		vsize = (in.Devices()[0].Size + 511) &^ 511
	}
	return format.Info{
		{Key: "filename", Label: "image", Value: in.Name(), Show: format.ShowName},
		{Key: "format", Label: "file format", Value: fm.Name},
		{Key: "virtual-size", Label: "virtual size", Value: vsize, Show: format.ShowSize},
		st.DiskSize(),
	}, nil
}

// describeStream describes the input at path read as a stream, of the
// format o names, or the first that reads as a stream.
func describeStream(ctx context.Context, reg *format.Registry, path string, o Options) (format.Info, error) {
	name, size := "<stdin>", int64(-1)
	if path != "-" && !IsRemote(path) {
		fi, err := os.Stat(path)
		if err == nil && fi.IsDir() {
			return nil, fmt.Errorf("%s: is a directory, not an archive", path)
		}
		name = path
		if err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	if o.Format == "" {
		fm, err := streamFormat(reg)
		if err != nil {
			return nil, err
		}
		o.Format = fm.Name
	}
	o.Stream, o.RandomAccess = true, false
	in, err := Open(ctx, reg, format.Ref{Path: path}, o)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	if IsRemote(path) {
		name, size = in.Name(), in.Size()
	}
	inf, ok := in.Stream().(format.Informer)
	if !ok {
		return nil, fmt.Errorf("%s: a %s stream that cannot describe itself", name, in.Format().Name)
	}
	return inf.Info(format.FileStat{Name: name, Size: size}), nil
}

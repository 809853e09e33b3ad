package vmdk

import (
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/outfile"
)

// options are the options Create takes, with qemu-img's names, values
// and defaults (qemu-img create -f vmdk -o help).
var options = []format.Option{
	{Name: "subformat", Type: format.OptEnum, Values: []string{MonolithicSparse, StreamOptimized}, Default: MonolithicSparse,
		Help: "VMDK flat extent format: monolithicSparse, or streamOptimized (compressed, for OVAs and pipes)"},
	{Name: "adapter_type", Type: format.OptEnum, Values: adapterTypes, Default: defaultAdapter,
		Help: "Virtual adapter type (ddb.adapterType); the geometry has 16 heads for ide, 255 for the others"},
	{Name: "hwversion", Type: format.OptString, Default: defaultHWVersion,
		Help: "VMDK hardware version (ddb.virtualHWVersion)", Check: checkValue},
	{Name: "toolsversion", Type: format.OptString, Default: defaultToolsVersion,
		Help: "VMware guest tools version (ddb.toolsVersion)", Check: checkValue},
	{Name: "compat6", Type: format.OptBool, Default: "off",
		Help: "VMDK version 6 image: hardware version 6"},
	{Name: "zeroed_grain", Type: format.OptBool, Default: "off",
		Help: "Enable efficient zero writes using the zeroed-grain GTE feature (sets the header's flag)"},
}

func checkValue(v any) error { return descValue(v.(string)) }

// Create starts a new VMDK image of one disk at d: monolithicSparse (a
// file), or streamOptimized (a file, or a stream: its disk writer is then
// format.Sequential).
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	v := o.Options
	sub := v.String("subformat")
	if sub == "" {
		sub = MonolithicSparse
	}
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a VMDK image holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a VMDK image holds no config files (-c)")
	case d.InPlace:
		return nil, format.Unsupported("-n writes raw output in place; a VMDK image is always new")
	case d.Stream != nil && sub != StreamOptimized:
		return nil, format.Unsupported("a %s VMDK cannot be written to a pipe (its tables come before its data); write a file, or pass -o subformat=streamOptimized", sub)
	case v.Bool("compat6") && v.Has("hwversion"):
		return nil, format.Unsupported("compat6 cannot be enabled with hwversion set")
	case disks[0].Size > MaxSize:
		return nil, format.Unsupported("a VMDK disk holds at most %d bytes, not %d", int64(MaxSize), disks[0].Size)
	}
	name := d.Name
	if name == "" {
		name = d.Path
	}
	wo := WriterOptions{AdapterType: v.String("adapter_type"), HWVersion: v.String("hwversion"),
		ToolsVersion: v.String("toolsversion"), ZeroedGrain: v.Bool("zeroed_grain"), FileName: name, Workers: o.Workers}
	if v.Bool("compat6") {
		wo.HWVersion = "6"
	}
	if err := wo.check(); err != nil {
		return nil, format.Unsupported("%v", err)
	}
	size := disks[0].Size
	if d.Stream != nil {
		w, err := NewStreamWriter(d.Stream, size, wo)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return &streamSink{w: w, name: name}, nil
	}
	f, err := outfile.Create(d)
	if err != nil {
		return nil, err
	}
	s := &fileSink{f: f}
	if sub == StreamOptimized {
		s.sw, err = NewStreamWriter(f, size, wo)
		s.dw = s.sw
	} else {
		s.spw, err = NewSparseWriter(f, size, wo)
		s.dw = s.spw
	}
	if err != nil {
		f.Abort()
		return nil, err
	}
	return s, nil
}

// fileSink writes an image to a new file.
type fileSink struct {
	f   *outfile.File
	dw  format.DiskWriter
	sw  *StreamWriter
	spw *SparseWriter
}

func (s *fileSink) Disk(int) format.DiskWriter { return s.dw }

// Commit completes the image and commits the file.
func (s *fileSink) Commit() error {
	var err error
	if s.sw != nil {
		err = s.sw.Close()
	} else {
		err = s.spw.Close()
	}
	if err != nil {
		s.f.Abort()
		return fmt.Errorf("%s: %w", s.f.Path(), err)
	}
	return s.f.Commit()
}

// Abort stops writing and removes the file.
func (s *fileSink) Abort() error {
	if s.sw != nil {
		s.sw.Abort()
	} else {
		s.spw.Abort()
	}
	return s.f.Abort()
}

// streamSink writes a streamOptimized image to a stream.
type streamSink struct {
	w    *StreamWriter
	name string
	done bool
	err  error
}

func (s *streamSink) Disk(int) format.DiskWriter { return sequential{s.w} }

// sequential is the stream's disk writer: the pipeline writes it in
// order, as a stream must be.
type sequential struct{ *StreamWriter }

func (sequential) Sequential() {}

// Commit writes the grain directory, the footer and the end-of-stream
// marker.
func (s *streamSink) Commit() error {
	if !s.done {
		s.done = true
		if err := s.w.Close(); err != nil {
			s.err = fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return s.err
}

// Abort stops writing; what was written stays incomplete (no footer).
func (s *streamSink) Abort() error {
	if !s.done {
		s.done = true
		s.w.Abort()
	}
	return nil
}

var _ io.Writer = (*countWriter)(nil)

package vpc

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/outfile"
)

// Subformats (qemu-img's subformat option).
const (
	Dynamic = "dynamic"
	Fixed   = "fixed"
)

// options are the options Create takes: qemu-img's (subformat,
// force_size), azure, and the fields qemu-img fills in from the clock and
// at random.
var options = []format.Option{
	{Name: "subformat", Type: format.OptEnum, Values: []string{Dynamic, Fixed}, Default: Dynamic,
		Help: "Type of virtual hard disk: dynamic (blocks of 2 MiB, zero blocks left out) or fixed (the disk, then a footer; written to a pipe too)"},
	{Name: "force_size", Type: format.OptBool, Default: "off",
		Help: "Keep the disk's size exactly (in whole sectors) instead of rounding it up to a CHS geometry, as qemu-img does; Virtual PC reads such a disk short"},
	{Name: "azure", Type: format.OptBool, Default: "off",
		Help: "Write what Azure takes: a fixed disk whose size is rounded up to a whole MiB and kept so (force_size)"},
	{Name: "uuid", Type: format.OptString, Default: "random",
		Help: "The disk's UUID, for reproducible images",
		Check: func(v any) error {
			_, err := uuid.Parse(v.(string))
			return err
		}},
	{Name: "ctime", Type: format.OptString, Default: "now",
		Help: "Creation time, Unix seconds or RFC 3339 (2024-06-10T06:13:20Z), for reproducible images",
		Check: func(v any) error {
			_, err := parseTime(v.(string))
			return err
		}},
}

// targets are the platforms Create writes for.
var targets = []format.Target{
	{Name: "azure", Help: "a fixed VHD whose size is a whole number of MiB, as Azure takes it", Options: "azure"},
}

// parseTime reads the ctime option: Unix seconds or RFC 3339, within
// what a footer records.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if n, nerr := strconv.ParseInt(s, 10, 64); nerr == nil {
		t, err = time.Unix(n, 0), nil
	}
	if err != nil {
		return time.Time{}, errors.New("want Unix seconds or RFC 3339 (2024-06-10T06:13:20Z)")
	}
	if _, err := timestamp(t); err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// writerOptions turns the checked options into WriterOptions, refusing
// combinations that contradict azure.
func writerOptions(v format.Values) (WriterOptions, error) {
	o := WriterOptions{Fixed: v.String("subformat") == Fixed, ForceSize: v.Bool("force_size")}
	if v.Bool("azure") {
		switch {
		case v.Has("subformat") && !o.Fixed:
			return o, format.Unsupported("%s: Azure takes fixed VHDs only, not %s=%s", v.GivenAs("azure"), v.GivenAs("subformat"), Dynamic)
		case v.Has("force_size") && !o.ForceSize:
			return o, format.Unsupported("%s: Azure takes the size as recorded (force_size), not %s=off", v.GivenAs("azure"), v.GivenAs("force_size"))
		}
		o.Fixed, o.ForceSize = true, true
	}
	if s := v.String("uuid"); s != "" {
		o.UUID = uuid.MustParse(s) // checked by the option
	}
	if s := v.String("ctime"); s != "" {
		o.Time, _ = parseTime(s) // checked by the option
	}
	return o, nil
}

// requested is the size Create asks of the Writer for a device of size
// bytes: with azure, rounded up to a whole MiB.
func requested(size int64, v format.Values) int64 {
	if v.Bool("azure") && size <= MaxSize {
		return (size + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return size
}

// diskSize is Format.DiskSize: the virtual size Create gives a device of
// size bytes.
func diskSize(size int64, v format.Values) int64 {
	o, err := writerOptions(v)
	if err != nil {
		return size
	}
	n, _, _, _, err := roundedSize(requested(size, v), o.ForceSize)
	if err != nil {
		return size
	}
	return n
}

// Create starts a new VHD of one disk at d (see Writer): dynamic by
// default, fixed with -o subformat=fixed or azure=on, and only fixed to a
// stream. The disk's size is rounded up as qemu-img rounds it (to a CHS
// geometry, or with azure to a whole MiB), with a note.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a VHD holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a VHD holds no config files (-c)")
	case d.InPlace:
		return nil, format.Unsupported("-n writes raw output in place; a VHD is always new")
	}
	wo, err := writerOptions(o.Options)
	if err != nil {
		return nil, err
	}
	if d.Stream != nil && !wo.Fixed {
		return nil, format.Unsupported("a dynamic VHD cannot be written to a pipe (its BAT precedes its blocks); write a file, or a fixed VHD (-o subformat=fixed)")
	}
	given := disks[0].Size
	if given > MaxSize {
		return nil, format.Unsupported("a VHD holds at most 2040 GiB, not %d bytes", given)
	}
	size := requested(given, o.Options)
	name := cmp.Or(d.Name, d.Path)
	if d.Stream != nil && name == "-" {
		name = "standard output"
	}
	var w *Writer
	var f *outfile.File
	if d.Stream != nil {
		if w, err = NewStreamWriter(d.Stream, size, wo); err != nil {
			return nil, err
		}
	} else {
		if f, err = outfile.Create(d); err != nil {
			return nil, err
		}
		if w, err = NewWriter(f, size, wo); err == nil && wo.Fixed {
			err = f.Truncate(w.Size()) // the footer follows the disk
		}
		if err != nil {
			f.Abort()
			return nil, err
		}
	}
	w.given = given // the pipeline delivers the device's bytes; the rest reads as zeros
	if note := sizeNote(given, w.Size(), o.Options); note != "" && o.Note != nil {
		o.Note(name + ": " + note)
	}
	return &sink{f: f, w: w}, nil
}

// sizeNote says how a disk's size grew beyond whole sectors, if it did.
func sizeNote(given, n int64, v format.Values) string {
	if n == (given+sector-1)&^(sector-1) {
		return ""
	}
	if v.Bool("azure") {
		return fmt.Sprintf("virtual size %d bytes, rounded up to a whole MiB for Azure (%d more)", n, n-given)
	}
	return fmt.Sprintf("virtual size %d bytes, rounded up to a CHS geometry as qemu-img does (%d more; -o force_size=on keeps the size)", n, n-given)
}

type sink struct {
	f *outfile.File // nil for a stream
	w *Writer
}

// Disk returns the writer: a fixed disk's file takes writes in any order
// and in parallel, a stream in order, a dynamic disk in one order.
func (s *sink) Disk(int) format.DiskWriter {
	switch {
	case s.w.stream != nil:
		return sequential{s.w}
	case s.w.bat == nil:
		return orderIndependent{s.w}
	}
	return s.w
}

type sequential struct{ *Writer }

func (sequential) Sequential() {}

type orderIndependent struct{ *Writer }

func (orderIndependent) OrderIndependent() {}

// Commit completes the image and commits the file.
func (s *sink) Commit() error {
	if err := s.w.Close(); err != nil {
		if s.f != nil {
			s.f.Abort()
			return fmt.Errorf("%s: %w", s.f.Path(), err)
		}
		return err
	}
	if s.f == nil {
		return nil
	}
	return s.f.Commit()
}

// Abort stops writing and removes the file (what a stream received stays
// written).
func (s *sink) Abort() error {
	s.w.Abort()
	if s.f == nil {
		return nil
	}
	return s.f.Abort()
}

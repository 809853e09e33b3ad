package vhdx

import (
	"errors"
	"fmt"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/outfile"
)

// options are qemu-img's vhdx create options (block/vhdx.c), and how
// qemu-img rounds their values.
var options = []format.Option{
	{Name: "block_size", Type: format.OptSize, Default: "0",
		Help:  "Block size, a power of two from 1M to 256M (rounded up to a whole MiB, at most 256M, as qemu-img does); 0 chooses from the size",
		Check: func(v any) error { _, err := blockSize(v.(int64)); return err }},
	{Name: "block_state_zero", Type: format.OptBool, Default: "on for dynamic, off for fixed",
		Help: "Record blocks without data as PAYLOAD_BLOCK_ZERO (qemu-img's default); off: not present (dynamic), or present at their place (fixed)"},
	{Name: "log_size", Type: format.OptSize, Default: "1M",
		Help:  "Log size, a multiple of 1M (rounded up, as qemu-img does) below 4G",
		Check: func(v any) error { _, err := logSize(v.(int64)); return err }},
	{Name: "subformat", Type: format.OptEnum, Values: []string{"dynamic", "fixed"}, Default: "dynamic",
		Help: "dynamic: blocks allocated as data arrives; fixed: every block at its place (holes where it is zero)"},
}

// blockSize rounds a block_size as qemu-img does.
func blockSize(v int64) (int64, error) {
	r := min((v+mib-1)&^(mib-1), maxBlockSize)
	switch {
	case r != 0 && r&(r-1) != 0 && r != v:
		return 0, fmt.Errorf("block size %d (rounded up to %d): want a power of two", v, r)
	case r != 0 && r&(r-1) != 0:
		return 0, fmt.Errorf("block size %d: want a power of two", v)
	}
	return r, nil
}

// logSize rounds a log_size as qemu-img does.
func logSize(v int64) (int64, error) {
	r := (v + mib - 1) &^ (mib - 1)
	if r < mib || r >= 4<<30 {
		return 0, errors.New("want 1M to below 4G")
	}
	return r, nil
}

// Create starts a new VHDX image of one disk at d (see Writer). A stream
// is refused: the BAT is written in place, before the data.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	switch {
	case len(disks) != 1:
		return nil, format.Unsupported("a VHDX image holds one disk, not %d", len(disks))
	case len(o.Configs) > 0:
		return nil, format.Unsupported("a VHDX image holds no config files (-c)")
	case d.Stream != nil:
		return nil, format.Unsupported("vhdx cannot be written to a pipe (its BAT is written in place, before the data); write a file")
	case d.InPlace:
		return nil, format.Unsupported("-n writes raw output in place; a VHDX image is always new")
	case disks[0].Size > maxDiskSize:
		return nil, format.Unsupported("a VHDX disk holds at most 64 TiB; this one has %d bytes", disks[0].Size)
	}
	v := o.Options
	wo := WriterOptions{Fixed: v.String("subformat") == "fixed"}
	wo.BlockSize, _ = blockSize(v.Int("block_size"))
	if v.Has("log_size") {
		wo.LogSize, _ = logSize(v.Int("log_size"))
	}
	if v.Has("block_state_zero") {
		wo.Zeros = ZerosUnallocated
		if v.Bool("block_state_zero") {
			wo.Zeros = ZerosBlockZero
		}
	}
	// Check the options before a file exists.
	if err := checkOptions(&WriterOptions{BlockSize: wo.BlockSize, LogSize: wo.LogSize, Zeros: wo.Zeros}, (disks[0].Size+511)&^511); err != nil {
		return nil, format.Unsupported("%v", err)
	}
	f, err := outfile.Create(d)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(outFile{f}, disks[0].Size, wo)
	if err != nil {
		f.Abort()
		return nil, err
	}
	return &sink{f: f, w: w}, nil
}

// outFile reads back what the sink wrote, with errors naming the
// destination.
type outFile struct{ *outfile.File }

func (o outFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.File.File().ReadAt(p, off)
	return n, o.Err("reading", err)
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

package main

import (
	"bufio"
	"fmt"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/pipeline"
)

type mapCmd struct {
	File         string   `arg:"" help:"The disk: an image (qcow2, raw), ARCHIVE:DEVICE, or an archive with one disk."`
	Output       string   `enum:"human,json" default:"human" help:"human (qemu-img map's table of data ranges) or json (every range, with qemu-img map's keys: start, length, depth, present, zero, data, compressed, offset)."`
	StartOffset  byteSize `name:"start-offset" placeholder:"OFFSET" help:"Map from this offset (bytes, or with a suffix: 1G)."`
	MaxLength    byteSize `name:"max-length" placeholder:"LENGTH" help:"Map at most this many bytes (bytes, or with a suffix: 64M)."`
	Format       string   `short:"f" placeholder:"FMT" help:"Format of FILE (${formats}); default: detected from the file's magic bytes, raw if none."`
	AllowBacking bool     `help:"Let a qcow2 image read its backing files; their ranges are reported at depth 1, without offsets."`
}

// Run prints the disk's map as qemu-img map prints it: ranges with the
// same status (and, where the data has a place in the file, contiguous
// places) merged. Archive devices have no offsets: their clusters are
// not stored contiguously in the file.
func (c *mapCmd) Run(e *env) error {
	if c.StartOffset < 0 || c.MaxLength < 0 {
		return usageError{fmt.Errorf("--start-offset and --max-length cannot be negative")}
	}
	d, err := openDisk(e, c.File, input.Options{Format: c.Format, AllowBacking: c.AllowBacking}, "map")
	if err != nil {
		return err
	}
	defer d.close()
	size := d.src.Size()
	start := int64(c.StartOffset)
	end := size
	if c.MaxLength > 0 {
		end = min(size, start+int64(c.MaxLength))
	}
	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	human := c.Output == "human"
	if human {
		fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	} else {
		w.WriteByte('[')
	}
	err = pipeline.Map(e.ctx, d.raw, size, pipeline.MapOptions{Start: start, End: end}, func(m format.Mapping, last bool) error {
		switch {
		case human:
			w.WriteString(m.Text(d.file))
		case last:
			w.WriteString(m.JSON())
		default:
			w.WriteString(m.JSON() + ",\n")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	if !human {
		w.WriteString("]\n")
	}
	return w.Flush()
}

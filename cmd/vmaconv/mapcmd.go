package main

import (
	"bufio"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
)

type mapCmd struct {
	File         string   `arg:"" help:"The disk: an image (qcow2, raw), ARCHIVE:DEVICE, or an archive with one disk."`
	Output       string   `enum:"human,json" default:"human" help:"human (qemu-img map's table of data ranges) or json (every range, with qemu-img map's keys: start, length, depth, present, zero, data, compressed, offset)."`
	StartOffset  byteSize `name:"start-offset" placeholder:"OFFSET" help:"Map from this offset (bytes, or with a suffix: 1G)."`
	MaxLength    byteSize `name:"max-length" placeholder:"LENGTH" help:"Map at most this many bytes (bytes, or with a suffix: 64M)."`
	Format       string   `short:"f" placeholder:"FMT" help:"Format of FILE (qcow2, raw, vma); default: detected from the file's magic bytes, raw if none."`
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
	mp := mapperOf(d.raw, size)
	human := c.Output == "human"
	if human {
		fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	} else {
		w.WriteByte('[')
	}
	curr := format.Mapping{Start: start, Offset: -1}
	for curr.Start+curr.Length < end {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		off := curr.Start + curr.Length
		next, err := mp.Mapping(off, min(end-off, 1<<30))
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if next.Length <= 0 {
			return fmt.Errorf("%s: empty range at offset %d", d.name, off)
		}
		next.Start = off
		if mergeable(curr, next) {
			curr.Length += next.Length
			continue
		}
		if curr.Length > 0 {
			writeMapping(w, human, curr, &next, d.file)
		}
		curr = next
	}
	writeMapping(w, human, curr, nil, d.file)
	if !human {
		w.WriteString("]\n")
	}
	return w.Flush()
}

// mergeable reports whether next continues curr, as qemu-img map merges
// entries.
func mergeable(curr, next format.Mapping) bool {
	if curr.Length == 0 {
		return false
	}
	if curr.Zero != next.Zero || curr.Data != next.Data || curr.Compressed != next.Compressed ||
		curr.Depth != next.Depth || curr.Present != next.Present || (curr.Offset < 0) != (next.Offset < 0) {
		return false
	}
	return curr.Offset < 0 || curr.Offset+curr.Length == next.Offset
}

// writeMapping prints one entry as qemu-img map does: JSON with
// qemu-img's keys in its order (compressed as QEMU 8.1 and later print
// it), or, for humans, data ranges only, with their place in the file
// ("-" where there is none: archive devices, compressed clusters).
func writeMapping(w io.Writer, human bool, m format.Mapping, next *format.Mapping, file string) {
	if human {
		if m.Data && !m.Zero {
			at := "-"
			if m.Offset >= 0 {
				at = cHex(m.Offset)
			}
			fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", cHex(m.Start), cHex(m.Length), at, escapeControls(file))
		}
		// qemu-img's human format does not tell zero ranges apart, and
		// merges them.
		if next != nil && (!next.Data || next.Zero) {
			next.Data, next.Zero = false, true
		}
		return
	}
	fmt.Fprintf(w, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t, "compressed": %t`,
		m.Start, m.Length, m.Depth, m.Present, m.Zero, m.Data, m.Compressed)
	if m.Offset >= 0 {
		fmt.Fprintf(w, `, "offset": %d`, m.Offset)
	}
	io.WriteString(w, "}")
	if next != nil {
		io.WriteString(w, ",\n")
	}
}

// cHex formats n as C's %#x: 0x-prefixed, but plain 0.
func cHex(n int64) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", n)
}

// mapperOf returns src's Mapper: its own (raw and qcow2 images), or one
// made from its zero map (archive devices: every cluster is the archive's
// own, stored or zero, at no single place in the file).
// A raw image of a size that is not whole sectors is padded to size, as
// qemu presents it: the padding is zero at its own offset.
func mapperOf(src format.Source, size int64) format.Mapper {
	m, ok := src.(format.Mapper)
	if !ok {
		m = extentMapper{src}
	}
	if src.Size() < size {
		return paddedMapper{m, src.Size(), size}
	}
	return m
}

type paddedMapper struct {
	m         format.Mapper
	end, size int64
}

func (p paddedMapper) Mapping(start, length int64) (format.Mapping, error) {
	if start < p.end {
		return p.m.Mapping(start, min(length, p.end-start))
	}
	return format.Mapping{Start: start, Length: min(length, p.size-start), Present: true, Zero: true, Offset: start}, nil
}

type extentMapper struct{ src format.Source }

func (x extentMapper) Mapping(start, length int64) (format.Mapping, error) {
	length = min(length, x.src.Size()-start)
	m := format.Mapping{Start: start, Length: length, Present: true, Data: true, Offset: -1}
	if ext, ok := x.src.(format.Extenter); ok {
		e, err := ext.Extent(start, length)
		if err != nil {
			return m, err
		}
		m.Length, m.Zero, m.Data = min(e.Length, length), e.Zero, !e.Zero
	}
	return m, nil
}

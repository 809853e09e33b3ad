package pipeline

import (
	"context"
	"fmt"

	"github.com/vmaconv/vmaconv/format"
)

// MapOptions say what Map walks.
type MapOptions struct {
	// Start and End bound the walk: [Start, End) of the disk.
	Start, End int64
}

// Map walks the map of a disk as qemu-img map reports it and calls fn
// with each entry in order (last set for the last): ranges with the same
// status (and, where the data has a place in the file, contiguous places)
// merged. src is the disk as its driver opened it, size its size as it is
// presented (a raw file padded to whole sectors: the padding is zero, at
// its own offset). Its map is its own (format.Mapper: raw and qcow2
// images), or one made from its zero map (archive devices: every cluster
// is the archive's own, stored or zero, at no single place in the file).
func Map(ctx context.Context, src format.Source, size int64, o MapOptions, fn func(m format.Mapping, last bool) error) error {
	mp := mapperOf(src, size)
	curr := format.Mapping{Start: o.Start, Offset: -1}
	for curr.Start+curr.Length < o.End {
		if err := ctx.Err(); err != nil {
			return err
		}
		off := curr.Start + curr.Length
		next, err := mp.Mapping(off, min(o.End-off, 1<<30))
		if err != nil {
			return err
		}
		if next.Length <= 0 {
			return fmt.Errorf("empty range at offset %d", off)
		}
		next.Start = off
		if mergeable(curr, next) {
			curr.Length += next.Length
			continue
		}
		if curr.Length > 0 {
			if err := fn(curr, false); err != nil {
				return err
			}
		}
		curr = next
	}
	return fn(curr, true)
}

// mergeable reports whether next continues curr, as qemu-img map merges
// entries.
func mergeable(curr, next format.Mapping) bool {
	if curr.Length == 0 {
		return false
	}
	if curr.Zero != next.Zero || curr.Data != next.Data || curr.Compressed != next.Compressed ||
		curr.Depth != next.Depth || curr.Present != next.Present || (curr.Offset < 0) != (next.Offset < 0) || curr.File != next.File {
		return false
	}
	return curr.Offset < 0 || curr.Offset+curr.Length == next.Offset
}

// mapperOf returns src's Mapper, its own or one made from its zero map,
// padded to size.
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

// paddedMapper is a Mapper whose source is padded from end to size with
// zeros, at their own offsets.
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

// extentMapper is the Mapper of a source without one: its ranges are
// present, data or zero by its zero map, at no place in a file.
type extentMapper struct{ src format.Source }

func (x extentMapper) Mapping(start, length int64) (format.Mapping, error) {
	length = min(length, x.src.Size()-start)
	m := format.Mapping{Start: start, Length: length, Present: true, Data: true, Offset: -1}
	if ext, ok := x.src.(format.ZeroMapper); ok {
		e, err := ext.Region(start, length)
		if err != nil {
			return m, err
		}
		m.Length, m.Zero, m.Data = min(e.Length, length), e.Zero, !e.Zero
	}
	return m, nil
}

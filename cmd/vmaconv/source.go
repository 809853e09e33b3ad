package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/pipeline"
)

var registry = all.Registry()

// openInput opens SRC as o says (input.Open), with the process's standard
// input, the --zstd-memory limit and notes for stderr; options it cannot
// honour are usage errors.
func openInput(e *env, ref format.Ref, o input.Options) (*input.Input, error) {
	o.Stdin, o.MaxWindow = e.stdin, e.zstdMemory<<20
	o.Note = func(msg string) { e.note("%s", msg) }
	in, err := input.Open(e.ctx, registry, ref, o)
	if errors.Is(err, format.ErrUnsupportedOption) {
		return nil, usageError{err}
	}
	return in, err
}

// transfer copies the selected devices sel (indices into in's devices) to
// the sink's disks 0, 1, …: from a random-access input with parallel
// readers, device after device; from a stream in one pass, in archive
// order. progress gets the bytes done.
func transfer(e *env, in *input.Input, sel []int, sink format.Sink, o pipeline.Options, p *progress) (*vma.Result, error) {
	if in.Stream() == nil {
		done := int64(0)
		for k, i := range sel {
			src := in.Source(i)
			base := done
			o.Progress = func(n int64) { p.update(base + n) }
			if err := pipeline.Copy(e.ctx, sink.Disk(k), src, o); err != nil {
				return nil, fmt.Errorf("%s: %w", in.DiskName(i), err)
			}
			done += src.Size()
		}
		return nil, nil
	}
	so := format.StreamOptions{At: make([]format.DiskWriter, len(in.Devices())), InOrder: make([]io.Writer, len(in.Devices())),
		Workers: o.Workers, Progress: func(int64) { p.update(in.Consumed()) }}
	for k, i := range sel {
		dw := sink.Disk(k)
		if _, ok := dw.(format.Sequential); ok {
			so.InOrder[i] = &seqWriter{w: dw}
		} else {
			so.At[i] = dw
		}
	}
	err := in.Stream().Read(e.ctx, so)
	if errors.Is(err, format.ErrReorder) {
		err = fmt.Errorf("%w; a pipe needs them in order: write a file instead, or read the archive from a file", err)
	}
	if err != nil {
		return vma.ResultOf(in.Stream()), fmt.Errorf("%s: %w", in.Name(), err)
	}
	return vma.ResultOf(in.Stream()), nil
}

// seqWriter writes a stream of bytes to a Sequential disk writer.
type seqWriter struct {
	w   format.DiskWriter
	pos int64
}

func (s *seqWriter) Write(p []byte) (int, error) {
	n, err := s.w.WriteAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}

// progressTotal is what a transfer's progress counts up to: the devices'
// bytes for random access, the file's bytes (if known) for a stream.
func progressTotal(in *input.Input, sel []int) int64 {
	if in.Stream() != nil {
		return in.Size()
	}
	n := int64(0)
	for _, i := range sel {
		n += in.Devices()[i].Size
	}
	return n
}

// header returns an archive input's header.
func header(in *input.Input) *vma.Header {
	if r := vma.ReaderOf(in.Stream()); r != nil {
		return r.Header()
	}
	return vma.ArchiveOf(in.Image()).Header()
}

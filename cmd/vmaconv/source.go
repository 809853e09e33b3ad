package main

import (
	"errors"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
)

var registry = all.Registry()

// openInput opens SRC as o says (input.Open), with the process's standard
// input, the --zstd-memory limit and notes for stderr; options it cannot
// honour are usage errors.
func openInput(e *env, ref format.Ref, o input.Options) (*input.Input, error) {
	in, err := input.Open(e.ctx, registry, ref, e.inputOptions(o))
	if errors.Is(err, format.ErrUnsupportedOption) {
		return nil, usageError{err}
	}
	return in, err
}

// inputOptions are o with the process's standard input, the
// --zstd-memory limit and notes for stderr.
func (e *env) inputOptions(o input.Options) input.Options {
	o.Stdin, o.MaxWindow = e.stdin, e.zstdMemory<<20
	o.Note = func(msg string) { e.note("%s", msg) }
	return o
}

// header returns an archive input's header.
func header(in *input.Input) *vma.Header {
	if r := vma.ReaderOf(in.Stream()); r != nil {
		return r.Header()
	}
	return vma.ArchiveOf(in.Image()).Header()
}

package main

import (
	"errors"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/input"
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

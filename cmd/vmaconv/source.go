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
	in, err := input.Open(e.ctx, registry, ref, e.inputOptions(o))
	return in, usage(err)
}

// usage returns err as a usage error (exit status 2) if it is one for an
// option the user must change (format.ErrUnsupportedOption).
func usage(err error) error {
	if errors.Is(err, format.ErrUnsupportedOption) {
		return usageError{err}
	}
	return err
}

// inputOptions are o with the process's standard input, the
// --zstd-memory limit and notes for stderr.
func (e *env) inputOptions(o input.Options) input.Options {
	o.Stdin, o.MaxWindow = e.stdin, e.zstdMemory<<20
	o.Note = func(msg string) { e.note("%s", msg) }
	return o
}

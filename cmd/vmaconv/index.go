package main

import (
	"fmt"

	"github.com/vmaconv/vmaconv/input"
)

type indexCmd struct {
	Archives []string `arg:"" name:"archive" help:"Archives to index: plain .vma or seekable .vma.zst, files or s3:// objects (an https:// archive's index is made from a copy and put beside it on its server)."`
}

// Run writes ARCHIVE.vmaidx beside every archive given (input.BuildIndex,
// input.WriteIndex).
func (c *indexCmd) Run(e *env) error {
	for _, a := range c.Archives {
		o := e.inputOptions(input.Options{})
		x, err := input.BuildIndex(e.ctx, registry, a, o)
		if err != nil {
			return usage(err)
		}
		name, err := input.WriteIndex(e.ctx, a, x, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", printable(name), plural(len(x.Reads), "read"))
	}
	return nil
}

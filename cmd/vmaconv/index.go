package main

import (
	"fmt"

	"github.com/vmaconv/vmaconv/input"
)

type indexCmd struct {
	Archives []string `arg:"" name:"archive" help:"Archives to index: plain .vma, seekable .vma.zst or any .vma.zst, files or s3:// objects (an https:// archive's index is made from a copy and put beside it on its server)."`
	Every    byteSize `name:"every" placeholder:"SIZE" help:"For a .vma.zst without a seek table: decompressed bytes between restart points (default 32M, at least 1M). Smaller is faster to read at random and makes a larger index."`
}

// Run writes ARCHIVE.vmaidx beside every archive given (input.BuildIndex,
// input.WriteIndex).
func (c *indexCmd) Run(e *env) error {
	for _, a := range c.Archives {
		o := e.inputOptions(input.Options{IndexEvery: int64(c.Every)})
		x, err := input.BuildIndex(e.ctx, registry, a, o)
		if err != nil {
			return usage(err)
		}
		name, err := input.WriteIndex(e.ctx, a, x, o)
		x.Close()
		if err != nil {
			return err
		}
		if x.Restarts != nil {
			fmt.Fprintf(e.stdout, "%s: %s, %s\n", printable(name), plural(len(x.Restarts.Points), "restart point"), plural(len(x.Preread), "read"))
		} else {
			fmt.Fprintf(e.stdout, "%s: %s\n", printable(name), plural(len(x.Reads), "read"))
		}
	}
	return nil
}

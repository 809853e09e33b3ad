package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
)

type infoCmd struct {
	Files  []string `arg:"" name:"file" help:"Images and archives (${formats}; archives compressed or not); - for an archive on stdin."`
	Format string   `short:"f" placeholder:"FMT" help:"Format of the files (${formats}); default: detected from their magic bytes."`
	Output string   `help:"Output format: human or json." enum:"human,json" default:"human"`
}

// Run reports every file; it fails (status 1) if any could not be read,
// after reporting the others.
func (c *infoCmd) Run(e *env) error {
	var reports []format.Info
	failed := 0
	for i, name := range c.Files {
		in, err := c.describe(e, name)
		if err != nil {
			if e.ctx.Err() != nil || len(c.Files) == 1 {
				return err
			}
			fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(err))
			failed++
			continue
		}
		reports = append(reports, in)
		if c.Output == "human" {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			in.WriteText(e.stdout)
		}
	}
	if c.Output == "json" && len(reports) > 0 {
		var v any = reports
		if len(c.Files) == 1 {
			v = reports[0]
		}
		if err := writeJSON(e.stdout, v); err != nil {
			return err
		}
	}
	if failed > 0 {
		return quietError{fmt.Errorf("%d of %d files could not be read", failed, len(c.Files))}
	}
	return nil
}

// describe returns what info shows of a file (input.Describe).
func (c *infoCmd) describe(e *env, name string) (format.Info, error) {
	in, err := input.Describe(e.ctx, registry, name, e.inputOptions(input.Options{Format: c.Format}))
	return in, usage(err)
}

// writeInfo writes in as text (format.Info.WriteText).
func writeInfo(w io.Writer, in format.Info) error { return in.WriteText(w) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false) // "<VMID>", not "\u003cVMID\u003e"
	return enc.Encode(v)
}

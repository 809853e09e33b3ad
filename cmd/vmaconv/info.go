package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
)

type infoCmd struct {
	Files  []string `arg:"" name:"file" help:"Images (raw, qcow2) and archives (VMA, compressed or not); - for an archive on stdin."`
	Format string   `short:"f" placeholder:"FMT" help:"Format of the files (qcow2, raw, vma); default: detected from their magic bytes."`
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
			writeInfo(e.stdout, in)
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

// describe opens a file and returns what info shows of it. Opening is
// all it does: a file read at random is described by its format
// (format.Format.Info), from its header; an archive read as a stream
// (standard input, a pipe, a compressed file) by its reader
// (format.Informer).
func (c *infoCmd) describe(e *env, name string) (format.Info, error) {
	if name == "-" || c.Format == vma.Name {
		return describeStream(e, name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", name)
	}
	fm := raw.Format
	switch {
	case c.Format != "":
		if fm, err = registry.Lookup(c.Format); err != nil {
			return nil, usageError{err}
		}
	case fi.Mode().IsRegular():
		d, comp, _, err := input.Probe(registry, f)
		var fe *input.ForeignError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s: a %s image, which vmaconv does not read (qemu-img info -f %s reads it)", name, fe.Foreign.Name, fe.Foreign.QEMU)
		}
		if err != nil {
			return nil, err
		}
		if comp != "" {
			return describeStream(e, name) // vzdump compresses archives only
		}
		fm = d
	}
	if fm.Info == nil {
		return nil, usageError{fmt.Errorf("-f %s: info cannot describe %s files", fm.Name, fm.Name)}
	}
	st := format.FileStat{Name: name, Size: -1, Allocated: allocated(fi)}
	if fi.Mode().IsRegular() {
		st.Size = fi.Size()
	}
	in, err := fm.Info(f, st)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return in, nil
}

// describeStream describes an archive read as a stream.
func describeStream(e *env, name string) (format.Info, error) {
	a := archiveArg{Archive: name}
	in, err := a.open(e)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	inf, ok := in.Stream().(format.Informer)
	if !ok {
		return nil, fmt.Errorf("%s: a %s stream that cannot describe itself", a.name(), in.Format().Name)
	}
	return inf.Info(format.FileStat{Name: a.name(), Size: a.size()}), nil
}

// writeInfo writes in as text, as qemu-img info writes an image (see
// format.Field): "label: value" lines, an object's fields indented under
// its label, an array's objects as rows of aligned cells.
func writeInfo(w io.Writer, in format.Info) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	writeFields(tw, in, "")
	return tw.Flush()
}

func writeFields(w io.Writer, in format.Info, indent string) {
	for _, f := range in {
		if f.Show == format.ShowHidden {
			continue
		}
		switch v := f.Value.(type) {
		case format.Info:
			if f.Label == "" {
				writeFields(w, v, indent)
				continue
			}
			fmt.Fprintf(w, "%s%s:\n", indent, f.Label)
			writeFields(w, v, indent+"    ")
		case []format.Info:
			fmt.Fprintf(w, "%s%s: %d\n", indent, f.Label, len(v))
			for _, row := range v {
				var cells []string
				for _, cell := range row {
					if cell.Show != format.ShowHidden {
						cells = append(cells, fieldText(cell))
					}
				}
				fmt.Fprintf(w, "%s  %s\n", indent, strings.Join(cells, "\t"))
			}
		default:
			fmt.Fprintf(w, "%s%s\n", indent, fieldText(f))
		}
	}
}

// fieldText is a field's text: "label: value", or the value alone.
func fieldText(f format.Field) string {
	var v string
	switch f.Show {
	case format.ShowName:
		v = printable(fmt.Sprint(f.Value))
	case format.ShowSize:
		n := toInt64(f.Value)
		v = fmt.Sprintf("%s (%d bytes)", humanSize(n), n)
	case format.ShowDiskSize:
		v = humanSize(toInt64(f.Value))
	case format.ShowBytes:
		v = fmt.Sprintf("%d bytes", toInt64(f.Value))
	default:
		v = escapeControls(fmt.Sprint(f.Value))
	}
	if f.Label == "" {
		return v
	}
	return f.Label + ": " + v
}

// toInt64 returns an integer field's value.
func toInt64(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	}
	return 0
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false) // "<VMID>", not "\u003cVMID\u003e"
	return enc.Encode(v)
}

package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/sumfile"
	"github.com/vmaconv/vmaconv/pipeline"
)

type checksumCmd struct {
	Srcs  []string `arg:"" name:"src" help:"Disk images, ARCHIVE:DEVICE, or archives (all their devices); - for an archive on stdin. With -c: files of checksum lines to check."`
	Check bool     `short:"c" help:"Read checksum lines (as this command or sha256sum prints them) from the files given and check each: NAME: OK or FAILED."`
	readFlags
}

// Run prints the sha256 of the guest-visible content, as sha256sum prints
// it for a raw file: "HEX  NAME". Images and archive files are read with
// parallel readers; an archive stream in one pass.
func (c *checksumCmd) Run(e *env) error {
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	if c.Check {
		return c.check(e, o)
	}
	failed := 0
	for _, src := range c.Srcs {
		sums, err := c.sums(e, src, o)
		if err != nil {
			if e.ctx.Err() != nil || len(c.Srcs) == 1 {
				return err
			}
			fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(err))
			failed++
			continue
		}
		for _, s := range sums {
			fmt.Fprintln(e.stdout, sumfile.Line(s.sum, s.name))
		}
	}
	if failed > 0 {
		return quietError{fmt.Errorf("%d of %d could not be read", failed, len(c.Srcs))}
	}
	return nil
}

type namedSum struct{ sum, name string }

// sums returns the checksums of a source: one for an image or a device,
// one per device for an archive.
func (c *checksumCmd) sums(e *env, src string, o pipeline.Options) ([]namedSum, error) {
	in, err := openInput(e, format.ParseRef(src), input.Options{Format: c.Format, AllowBacking: c.AllowBacking})
	if err != nil {
		return nil, err
	}
	defer in.Close()
	if err := in.Check(in.Selected()); err != nil {
		return nil, err
	}
	if !in.Archive() {
		if n := in.Devices()[0].Size; n%512 != 0 {
			e.note("%s is %d bytes: in an archive or a qcow2 image it becomes a disk of whole 512-byte sectors (%d bytes, zeros added), whose checksum differs", src, n, (n+511)&^511)
		}
	}
	p := newProgress(e, c.Progress, "hashing "+in.Name(), -1)
	sums, err := pipeline.Checksum(e.ctx, in, in.Selected(), pipeline.ConvertOptions{Workers: o.Workers, Progress: p.report})
	if err != nil {
		p.abort()
		return nil, err
	}
	p.finish()
	var out []namedSum
	for k, i := range in.Selected() {
		name := src
		if in.Archive() {
			name = in.DiskName(i)
		}
		out = append(out, namedSum{hex.EncodeToString(sums[k]), name})
	}
	return out, nil
}

// check verifies the lines of the sums files, as sha256sum -c does.
func (c *checksumCmd) check(e *env, o pipeline.Options) error {
	bad, unreadable, lines := 0, 0, 0
	for _, file := range c.Srcs {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		err = sumfile.Scan(f, file, func(want, name string) error {
			lines++
			sums, err := c.sums(e, name, o)
			switch {
			case err != nil && e.ctx.Err() != nil:
				return err
			case err != nil:
				fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(err))
				fmt.Fprintf(e.stdout, "%s: FAILED open or read\n", escapeControls(name))
				unreadable++
			case len(sums) != 1:
				fmt.Fprintf(e.stdout, "%s: FAILED: an archive of %d devices; name one as ARCHIVE:DEVICE\n", escapeControls(name), len(sums))
				bad++
			case sums[0].sum != want:
				fmt.Fprintf(e.stdout, "%s: FAILED\n", escapeControls(name))
				bad++
			default:
				fmt.Fprintf(e.stdout, "%s: OK\n", escapeControls(name))
			}
			return nil
		})
		f.Close()
		if err != nil {
			return err
		}
	}
	switch {
	case lines == 0:
		return errors.New("no checksum lines found")
	case bad+unreadable > 0:
		return fmt.Errorf("%d of %d checksums did not match or could not be computed", bad+unreadable, lines)
	}
	return nil
}

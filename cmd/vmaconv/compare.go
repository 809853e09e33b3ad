package main

import (
	"errors"
	"fmt"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/pipeline"
)

type compareCmd struct {
	A            string `arg:"" name:"a" help:"First disk: an image (qcow2, raw), ARCHIVE:DEVICE, or an archive with one disk."`
	B            string `arg:"" name:"b" help:"Second disk, likewise."`
	SecondFormat string `short:"F" name:"second-format" placeholder:"FMT" help:"Format of B (${formats}), as -f is A's; default: detected."`
	Strict       bool   `short:"s" help:"Strict mode, as qemu-img compare -s: disks of different sizes differ (without it, the larger one's extra part must read as zeros). Allocation is not compared: vmaconv compares content."`
	readFlags
}

// Compare's exit statuses, as qemu-img compare's.
const (
	compareDiffer    = 1
	compareOpenError = 2
	compareMapError  = 3 // the zero map of a disk could not be read
	compareReadError = 4
)

// Run compares the content of two disks as qemu-img compare does, with its
// messages on standard output (silenced by -q) and its exit statuses.
// Both are read at once with parallel readers, ranges both report as
// zero are skipped, and the first difference stops the reading.
func (c *compareCmd) Run(e *env) error {
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	a, err := openDisk(e, c.A, input.Options{Format: c.Format, AllowBacking: c.AllowBacking}, "compare")
	if err != nil {
		return statusError{err, compareOpenError}
	}
	defer a.close()
	b, err := openDisk(e, c.B, input.Options{Format: c.SecondFormat, AllowBacking: c.AllowBacking}, "compare")
	if err != nil {
		return statusError{err, compareOpenError}
	}
	defer b.close()
	say := func(line string) {
		if !e.quiet {
			fmt.Fprintln(e.stdout, line)
		}
	}
	sa, sb := a.src.Size(), b.src.Size()
	if c.Strict && sa != sb {
		say("Strict mode: Image size mismatch!")
		return statusError{nil, compareDiffer}
	}
	p := newProgress(e, c.Progress, "comparing", max(sa, sb))
	o.Progress = p.update
	at, err := pipeline.Compare(e.ctx, pipeline.Compared{Source: a.src, End: a.raw.Size()}, pipeline.Compared{Source: b.src, End: b.raw.Size()}, o)
	switch {
	case err != nil:
		p.abort()
		if errors.As(err, new(pipeline.MapError)) {
			return statusError{err, compareMapError}
		}
		return statusError{err, compareReadError}
	case at >= 0:
		p.abort()
		if at >= min(sa, sb) {
			say("Warning: Image size mismatch!")
		}
		say(fmt.Sprintf("Content mismatch at offset %d!", at))
		return statusError{nil, compareDiffer}
	}
	p.finish()
	if sa != sb {
		say("Warning: Image size mismatch!")
	}
	say("Images are identical.")
	return nil
}

// disk is one disk opened for reading at random, for compare and map.
type disk struct {
	name    string        // FILE, or ARCHIVE:DEVICE
	file    string        // the file that holds it
	src     format.Source // zero-padded to whole sectors
	raw     format.Source // as the driver opened it
	archive bool
	close   func()
}

// openDisk opens arg (an image, ARCHIVE:DEVICE, or an archive with one
// disk) for reading at random. A compressed archive is read through its
// decompression cache, as serve and mount read it; standard input and
// pipes cannot be read at random.
func openDisk(e *env, arg string, o input.Options, cmd string) (*disk, error) {
	ref := format.ParseRef(arg)
	if ref.Path == "-" {
		return nil, usageError{fmt.Errorf("%s reads its disks at random, which standard input cannot give: save the archive to a file first", cmd)}
	}
	var done func(error)
	o.RandomAccess = true
	o.Cache, done = cacheOpts{}.inputOptions(e, ref.Path)
	in, err := openInput(e, ref, o)
	done(err)
	if errors.Is(err, input.ErrSequential) { // the error says why, and the ways out
		return nil, usageError{fmt.Errorf("%s reads its disks at random: %w", cmd, err)}
	}
	if err != nil {
		return nil, err
	}
	i, err := in.One()
	if err != nil {
		in.Close()
		return nil, err
	}
	// A raw image is a disk of whole 512-byte sectors, as QEMU presents
	// it (and as qemu-img compares and maps it).
	in.WholeSectors()
	raw := in.Image().Disks()[i].Source
	return &disk{name: in.DiskName(i), file: ref.Path, src: in.Source(i), raw: raw, archive: in.Archive(), close: func() { in.Close() }}, nil
}

// statusError is a failure with its own exit status (compare's); a nil
// error prints nothing.
type statusError struct {
	err    error
	status int
}

func (s statusError) Error() string {
	if s.err == nil {
		return ""
	}
	return s.err.Error()
}

func (s statusError) Unwrap() error { return s.err }

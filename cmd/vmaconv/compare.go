package main

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/zero"
	"github.com/vmaconv/vmaconv/pipeline"
)

type compareCmd struct {
	A            string `arg:"" name:"a" help:"First disk: an image (qcow2, raw), ARCHIVE:DEVICE, or an archive with one disk."`
	B            string `arg:"" name:"b" help:"Second disk, likewise."`
	SecondFormat string `short:"F" name:"second-format" placeholder:"FMT" help:"Format of B (qcow2, raw, vma), as -f is A's; default: detected."`
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
	d := &diffSource{a: a.src, b: b.src, size: max(sa, sb)}
	p := newProgress(e, c.Progress, "comparing", d.size)
	o.Progress = p.update
	var diff *differError
	err = pipeline.Scan(e.ctx, d, o, func(off, n int64, data []byte) error {
		if data == nil || zero.IsZero(data) {
			return nil
		}
		return &differError{at: off + firstNonZeroSector(data)}
	})
	common := min(sa, sb)
	switch {
	case errors.As(err, &diff):
		p.abort()
		at := diff.at
		// qemu-img reports the start of the first differing sector of
		// the range it compared; a raw file that ends inside a sector
		// ends a range there.
		for _, end := range []int64{a.raw.Size(), b.raw.Size()} {
			if end%512 != 0 && end&^511 == at && !differ(d, at, end) {
				at = end
			}
		}
		if at >= common {
			// qemu-img checks the larger disk's extra part sector by
			// sector from where the smaller one ends.
			at = max(common+(at-common)&^511, common)
			say("Warning: Image size mismatch!")
		}
		say(fmt.Sprintf("Content mismatch at offset %d!", at))
		return statusError{nil, compareDiffer}
	case err != nil:
		p.abort()
		var me mapError
		if errors.As(err, &me) {
			return statusError{err, compareMapError}
		}
		return statusError{err, compareReadError}
	}
	p.finish()
	if sa != sb {
		say("Warning: Image size mismatch!")
	}
	say("Images are identical.")
	return nil
}

// differ reports whether the disks differ in [from, to), which is
// within one sector (or cannot be read: then the sector's start is
// reported).
func differ(d *diffSource, from, to int64) bool {
	p := make([]byte, to-from)
	if _, err := d.ReadAt(p, from); err != nil {
		return true
	}
	return !zero.IsZero(p)
}

// firstNonZeroSector returns the offset in data of the first 512-byte
// sector that is not all zero (data is not all zero), as qemu-img reports
// a difference.
func firstNonZeroSector(data []byte) int64 {
	for i := 0; i < len(data); i += 512 {
		if !zero.IsZero(data[i:min(i+512, len(data))]) {
			return int64(i)
		}
	}
	return int64(len(data))
}

// differError stops the comparison at the first difference.
type differError struct{ at int64 }

func (d *differError) Error() string { return fmt.Sprintf("content differs at offset %d", d.at) }

// mapError is a failure to read a disk's zero map (qemu-img: "error on
// checking a sector allocation").
type mapError struct{ error }

func (m mapError) Unwrap() error { return m.error }

// diffSource is the XOR of two disks, each read as zeros past its end: it
// reads as zeros exactly where they agree, and is zero by its map where
// both are. Scanned by the pipeline, it compares both with parallel
// readers, a second buffer per reader.
type diffSource struct {
	a, b format.Source
	size int64
	bufs sync.Pool // *[]byte
}

func (d *diffSource) Size() int64  { return d.size }
func (d *diffSource) Close() error { return nil }

// ReadAt fills p with a's bytes XOR b's bytes at off.
func (d *diffSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), d.size-off)]
	bp, _ := d.bufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < len(p) {
		bp = new([]byte)
		*bp = make([]byte, len(p))
	}
	defer d.bufs.Put(bp)
	q := (*bp)[:len(p)]
	if err := readPadded(d.a, p, off); err != nil {
		return 0, err
	}
	if err := readPadded(d.b, q, off); err != nil {
		return 0, err
	}
	subtle.XORBytes(p, p, q)
	return len(p), nil
}

// readPadded fills p with src's bytes at off, zeros past its end.
func readPadded(src format.Source, p []byte, off int64) error {
	n := int(max(min(int64(len(p)), src.Size()-off), 0))
	clear(p[n:])
	if n == 0 {
		return nil
	}
	got, err := src.ReadAt(p[:n], off)
	if got == n {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at %d: %w", n, off, err)
}

// Extent implements format.Extenter: zero where both disks report zeros.
func (d *diffSource) Extent(start, length int64) (format.Extent, error) {
	ea, err := zeroExtent(d.a, start, length)
	if err != nil {
		return format.Extent{}, err
	}
	eb, err := zeroExtent(d.b, start, length)
	if err != nil {
		return format.Extent{}, err
	}
	return format.Extent{Start: start, Length: min(ea.Length, eb.Length), Zero: ea.Zero && eb.Zero}, nil
}

// zeroExtent is src's extent at start, zero past its end.
func zeroExtent(src format.Source, start, length int64) (format.Extent, error) {
	if start >= src.Size() {
		return format.Extent{Start: start, Length: length, Zero: true}, nil
	}
	length = min(length, src.Size()-start)
	x, ok := src.(format.Extenter)
	if !ok {
		return format.Extent{Start: start, Length: length}, nil
	}
	e, err := x.Extent(start, length)
	if err != nil {
		return e, mapError{err}
	}
	if e.Length <= 0 {
		return e, mapError{fmt.Errorf("empty extent at %d", start)}
	}
	return e, nil
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
	if errors.Is(err, input.ErrSequential) {
		return nil, usageError{fmt.Errorf("%s: %s reads its disks at random, which a pipe cannot give: save the archive to a file first", ref.Path, cmd)}
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

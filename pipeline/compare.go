package pipeline

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// Compared is one disk of a Compare.
type Compared struct {
	// Source is the disk as it is compared (a raw file padded to whole
	// 512-byte sectors, as QEMU presents it).
	Source format.Source
	// End is where the data its driver holds ends: Source's size, or, for
	// a padded raw file, the file's.
	End int64
}

// MapError is Compare's error for a disk whose zero map could not be read
// (qemu-img compare: "error on checking a sector allocation"), as opposed
// to one that could not be read.
type MapError struct{ Err error }

func (m MapError) Error() string { return m.Err.Error() }
func (m MapError) Unwrap() error { return m.Err }

// Compare compares the content of two disks as qemu-img compare does: a
// disk shorter than the other reads as zeros past its end. It returns the
// offset of the first difference as qemu-img reports it (the start of the
// first differing 512-byte sector, or the end of a raw file that ends
// inside that sector), or -1 if the disks hold the same content. Both are
// read at once with o.Workers parallel readers; ranges both report as
// zero are not read, and the first difference stops the reading.
// o.Progress gets the bytes compared.
func Compare(ctx context.Context, a, b Compared, o Options) (int64, error) {
	d := &xorSource{a: a.Source, b: b.Source, size: max(a.Source.Size(), b.Source.Size())}
	var diff *differError
	err := Scan(ctx, d, o, func(off, n int64, data []byte) error {
		if data == nil || zero.IsZero(data) {
			return nil
		}
		return &differError{at: off + firstNonZeroSector(data)}
	})
	if !errors.As(err, &diff) {
		return -1, err
	}
	at := diff.at
	// qemu-img reports the start of the first differing sector of the
	// range it compared; a raw file that ends inside a sector ends a
	// range there.
	for _, end := range []int64{a.End, b.End} {
		if end%512 != 0 && end&^511 == at && !differ(d, at, end) {
			at = end
		}
	}
	if common := min(a.Source.Size(), b.Source.Size()); at >= common {
		// qemu-img checks the larger disk's extra part sector by sector
		// from where the smaller one ends.
		at = max(common+(at-common)&^511, common)
	}
	return at, nil
}

// differ reports whether the disks differ in [from, to), which is
// within one sector (or cannot be read: then the sector's start is
// reported).
func differ(d *xorSource, from, to int64) bool {
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

// xorSource is the XOR of two disks, each read as zeros past its end: it
// reads as zeros exactly where they agree, and is zero by its map where
// both are. Scanned, it compares both with parallel readers, a second
// buffer per reader.
type xorSource struct {
	a, b format.Source
	size int64
	bufs sync.Pool // *[]byte
}

func (d *xorSource) Size() int64  { return d.size }
func (d *xorSource) Close() error { return nil }

// ReadAt fills p with a's bytes XOR b's bytes at off.
func (d *xorSource) ReadAt(p []byte, off int64) (int, error) {
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

// Region implements format.ZeroMapper: zero where both disks report zeros.
func (d *xorSource) Region(start, length int64) (format.Region, error) {
	ea, err := zeroRegion(d.a, start, length)
	if err != nil {
		return format.Region{}, err
	}
	eb, err := zeroRegion(d.b, start, length)
	if err != nil {
		return format.Region{}, err
	}
	return format.Region{Start: start, Length: min(ea.Length, eb.Length), Zero: ea.Zero && eb.Zero}, nil
}

// zeroRegion is src's region at start, zero past its end.
func zeroRegion(src format.Source, start, length int64) (format.Region, error) {
	if start >= src.Size() {
		return format.Region{Start: start, Length: length, Zero: true}, nil
	}
	length = min(length, src.Size()-start)
	x, ok := src.(format.ZeroMapper)
	if !ok {
		return format.Region{Start: start, Length: length}, nil
	}
	e, err := x.Region(start, length)
	if err != nil {
		return e, MapError{err}
	}
	if e.Length <= 0 {
		return e, MapError{fmt.Errorf("empty extent at %d", start)}
	}
	return e, nil
}

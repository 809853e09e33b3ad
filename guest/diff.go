package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// Change is one difference Diff finds.
type Change struct {
	// Path is the entry's path (as stored: see Escape).
	Path string
	// Op is '+' (only in B), '-' (only in A) or 'M' (in both, changed).
	Op byte
	// What lists what changed, for Op 'M': "type", "size", "mode",
	// "owner", "target", "content", "mtime" (with DiffOptions.Times), or
	// "unreadable" when one side could not be read.
	What []string
	// A and B are the entry's metadata on each side (zero where absent).
	A, B Info
	// Err is the error that made the entry unreadable, if any.
	Err error
}

// DiffOptions control Diff.
type DiffOptions struct {
	// Times reports entries whose only change is their mtime.
	Times bool
}

// Diff compares the trees below a and b (found at the path start on both
// sides) and calls fn with each entry added, removed or changed, in path
// order: an entry only on one side, and everything below it, is '+' or
// '-'; an entry on both sides is 'M' if its type, size, mode, owner, link
// target or content (compared byte for byte where the sizes agree)
// differ. Directories are compared by their entries, not their sizes.
func Diff(ctx context.Context, a, b Node, start string, o DiffOptions, fn func(Change) error) error {
	seen := map[[2]nodeKey]bool{} // pairs of directories entered
	var diff func(p string, a, b Node, fa, fb Node, depth int) error
	diff = func(p string, a, b Node, fa, fb Node, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fsRoot(a) {
			fa = a
		}
		if fsRoot(b) {
			fb = b
		}
		ia, ib := a.Info(), b.Info()
		c := Change{Path: p, Op: 'M', A: ia, B: ib}
		if ia.Mode.Type() != ib.Mode.Type() {
			if ia.Mode.IsDir() || ib.Mode.IsDir() {
				// A directory on one side: everything in it was removed or
				// added.
				if err := side(ctx, p, a, '-', fn); err != nil {
					return err
				}
				return side(ctx, p, b, '+', fn)
			}
			c.What = append(c.What, "type")
		} else {
			if ia.Mode.IsRegular() && ia.Size != ib.Size {
				c.What = append(c.What, "size")
			}
			if ia.Mode.Perm()|ia.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != ib.Mode.Perm()|ib.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) {
				c.What = append(c.What, "mode")
			}
			if ia.UID != ib.UID || ia.GID != ib.GID {
				c.What = append(c.What, "owner")
			}
			switch {
			case ia.Mode&fs.ModeSymlink != 0:
				ta, erra := a.Readlink()
				tb, errb := b.Readlink()
				if err := errors.Join(erra, errb); err != nil {
					c.What, c.Err = append(c.What, "unreadable"), err
				} else if ta != tb {
					c.What = append(c.What, "target")
				}
			case ia.Mode.IsRegular() && ia.Size == ib.Size:
				same, err := sameContent(ctx, a, b)
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					c.What, c.Err = append(c.What, "unreadable"), err
				} else if !same {
					c.What = append(c.What, "content")
				}
			}
			if o.Times && !ia.ModTime.Equal(ib.ModTime) && !ia.Mode.IsDir() {
				c.What = append(c.What, "mtime")
			}
		}
		if len(c.What) > 0 {
			if err := fn(c); err != nil {
				return err
			}
		}
		if !ia.Mode.IsDir() {
			return nil
		}
		if depth > 0 && !ValidName(ia.Name) {
			return nil
		}
		k := [2]nodeKey{{fa, ia.Ino}, {fb, ib.Ino}}
		if seen[k] {
			return fn(Change{Path: p, Op: 'M', What: []string{"unreadable"}, A: ia, B: ib, Err: fmt.Errorf("%s: a directory met a second time: %w", Escape(p), ErrCorrupt)})
		}
		if len(seen) >= MaxDirs {
			return fn(Change{Path: p, Op: 'M', What: []string{"unreadable"}, A: ia, B: ib, Err: fmt.Errorf("%s: more than %d directories", Escape(p), MaxDirs)})
		}
		if depth > MaxDepth {
			return fn(Change{Path: p, Op: 'M', What: []string{"unreadable"}, A: ia, B: ib, Err: fmt.Errorf("%s: more than %d directories deep", Escape(p), MaxDepth)})
		}
		na, erra := sortedDir(a)
		nb, errb := sortedDir(b)
		if err := errors.Join(erra, errb); err != nil {
			return fn(Change{Path: p, Op: 'M', What: []string{"unreadable"}, A: ia, B: ib, Err: err})
		}
		seen[k] = true
		for i, j := 0, 0; i < len(na) || j < len(nb); {
			var cmp int
			switch {
			case i == len(na):
				cmp = 1
			case j == len(nb):
				cmp = -1
			default:
				cmp = strings.Compare(na[i].Info().Name, nb[j].Info().Name)
			}
			var err error
			switch {
			case cmp < 0:
				err = side(ctx, Join(p, na[i].Info().Name), na[i], '-', fn)
				i++
			case cmp > 0:
				err = side(ctx, Join(p, nb[j].Info().Name), nb[j], '+', fn)
				j++
			default:
				err = diff(Join(p, na[i].Info().Name), na[i], nb[j], fa, fb, depth+1)
				i, j = i+1, j+1
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return diff(start, a, b, nil, nil, 0)
}

// side reports n and everything below it as only on one side.
func side(ctx context.Context, p string, n Node, op byte, fn func(Change) error) error {
	return Walk(n, p, func(q string, c Node, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			return fn(Change{Path: q, Op: 'M', What: []string{"unreadable"}, Err: err})
		}
		ch := Change{Path: q, Op: op}
		if op == '-' {
			ch.A = c.Info()
		} else {
			ch.B = c.Info()
		}
		return fn(ch)
	})
}

// sortedDir returns a directory's entries in byte order of their names.
func sortedDir(n Node) ([]Node, error) {
	nodes, err := n.ReadDir()
	if err != nil {
		return nil, err
	}
	nodes = slices.Clone(nodes)
	slices.SortStableFunc(nodes, func(a, b Node) int { return strings.Compare(a.Info().Name, b.Info().Name) })
	return nodes, nil
}

// sameContent compares two regular files of one size byte for byte.
func sameContent(ctx context.Context, a, b Node) (bool, error) {
	fa, err := a.Open()
	if err != nil {
		return false, err
	}
	fb, err := b.Open()
	if err != nil {
		return false, err
	}
	if fa.Size() != fb.Size() {
		return false, nil
	}
	buf := make([]byte, min(readChunk, fa.Size())) // a file's size at most: most are small
	var last int64
	err = ReadData(ctx, fa, func(off int64, p []byte) error {
		// A's holes must read as zeros in B.
		if err := zerosIn(fb, last, off, buf); err != nil {
			return err
		}
		q := buf[:len(p)]
		n, err := fb.ReadAt(q, off)
		if n < len(q) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if !bytes.Equal(p, q) {
			return errDiffer
		}
		last = off + int64(len(p))
		return nil
	})
	if err == nil {
		err = zerosIn(fb, last, fa.Size(), buf)
	}
	if errors.Is(err, errDiffer) {
		return false, nil
	}
	return err == nil, err
}

// errDiffer stops a comparison at the first difference.
var errDiffer = errors.New("contents differ")

// zerosIn returns errDiffer unless f reads as zeros in [lo, hi).
func zerosIn(f File, lo, hi int64, buf []byte) error {
	for lo < hi {
		q := buf[:min(int64(len(buf)), hi-lo)]
		n, err := f.ReadAt(q, lo)
		if n < len(q) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if !zero.IsZero(q) {
			return errDiffer
		}
		lo += int64(n)
	}
	return nil
}

package input

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/remote"
)

// IsRemote reports whether a ref's path names a remote object (s3://,
// https://, http://): see package remote.
func IsRemote(path string) bool { return format.IsURL(path) }

// openObject opens the remote object of the ref. A ref whose device was
// split off a key that ends in ":WORD" (ParseRef cannot ask the server)
// is taken whole when the object without the suffix does not exist.
func (op *opener) openObject() (*remote.Object, error) {
	ob, err := remote.Open(op.ctx, op.ref.Path, op.o.Remote)
	if err != nil && op.ref.Device != "" && errors.Is(err, remote.ErrNotFound) {
		whole := op.ref.String()
		if wob, werr := remote.Open(op.ctx, whole, op.o.Remote); werr == nil {
			op.ref = format.Ref{Path: whole}
			return wob, nil
		}
	}
	return ob, err
}

// openRemote opens a remote object, as open opens a file: a plain archive
// or image is read at random with ranged GETs (an archive through its
// sidecar index if it has a valid one), a seekable .vma.zst through its
// seek table; any other compressed archive, or an archive from a server
// that takes no range requests, as a stream, read once front to back.
func (op *opener) openRemote() (*Input, error) {
	ob, err := op.openObject()
	if err != nil {
		return nil, err
	}
	in, err := op.openObjectAs(ob)
	if err != nil {
		ob.Close()
		return nil, err
	}
	in.name = ob.Name()
	in.closers = append(in.closers, func() { ob.Close() })
	return in, nil
}

func (op *opener) openObjectAs(ob *remote.Object) (*Input, error) {
	name, head, size := ob.Name(), ob.Head(), ob.Size()
	comp := compress.Detect(head)
	var fm format.Format
	var err error
	if op.o.Format != "" {
		if fm, err = op.reg.Lookup(op.o.Format); err != nil {
			return nil, format.Unsupported("%v", err)
		}
		if fm.OpenStream == nil {
			comp = ""
		}
	} else if fm, err = op.detectRemote(ob); err != nil {
		return nil, err
	}
	if op.ref.Device != "" && !fm.Multi {
		return nil, fmt.Errorf("%s is a %s image, not an archive: ':%s' selects a device of a VMA archive", name, fm.Name, op.ref.Device)
	}
	if fm.OpenStream != nil && (comp != "" || op.o.Stream || !ob.RandomAccess()) {
		switch {
		case !op.o.RandomAccess:
			return op.openStream(fm, ob.NewReader(0), name, nil, size)
		case !ob.RandomAccess():
			return nil, &sequential{fmt.Sprintf("%s: %v: reading at random needs range requests", name, remote.ErrNoRanges)}
		case comp != "":
			return op.openRemoteCompressed(fm, ob, comp)
		}
	}
	if !ob.RandomAccess() {
		return nil, fmt.Errorf("%s: %v; only an archive can be read from it", name, remote.ErrNoRanges)
	}
	if fm.OpenAt == nil {
		return nil, fmt.Errorf("%s: %s images are read from files only: download it first", name, fm.Name)
	}
	in, err := op.openRemoteAt(fm, ob)
	if errors.Is(err, format.ErrStreamOnly) && fm.OpenStream != nil && !op.o.RandomAccess {
		return op.openStream(fm, ob.NewReader(0), name, nil, size)
	}
	return in, err
}

// openRemoteAt opens the object with fm's OpenAt (a plain archive through
// its sidecar index, if it has one that fits).
func (op *opener) openRemoteAt(fm format.Format, ob *remote.Object) (*Input, error) {
	var notes []string
	o := op.openOptions()
	o.Note = func(msg string) { notes = append(notes, msg) }
	var ra io.ReaderAt = ob
	opened := func() {}
	if fm.Multi {
		ra, opened = op.sidecar(ob)
	}
	img, err := fm.OpenAt(ra, ob.Size(), o)
	opened()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ob.Name(), err)
	}
	op.notes = append(op.notes, notes...)
	return op.newInput(fm, img, "", ob.Size(), func() { img.Close() }), nil
}

// openRemoteCompressed opens a compressed archive object for reading at
// random: a zstd one in the seekable format; any other is refused, with
// the ways to read it.
func (op *opener) openRemoteCompressed(fm format.Format, ob *remote.Object, comp string) (*Input, error) {
	name := ob.Name()
	if fm.OpenAt == nil {
		return nil, fmt.Errorf("%s: a compressed %s cannot be read at random", name, fm.Name)
	}
	if comp == compress.Zstd {
		x, closeIx := op.sidecarIndex(ob)
		if x != nil && x.Restarts != nil {
			// Without a seek table: through the restart points.
			in, err := op.openRestarts(fm, ob, ob.Size(), x, closeIx)
			if err != nil {
				closeIx()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return in, nil
		}
		closeIx()
		ra, opened := prefetch(ob, x)
		defer opened()
		sk, err := compress.OpenSeekable(ra, ob.Size())
		switch {
		case err == nil:
			img, err := fm.OpenAt(sk, sk.Size(), op.openOptions())
			if err != nil {
				sk.Close()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return op.newInput(fm, img, comp, ob.Size(), func() { img.Close() }, func() { sk.Close() }), nil
		case !errors.Is(err, compress.ErrNotSeekable):
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil, &sequential{fmt.Sprintf("%s: a %s-compressed archive%s can only be read front to back from where it lies; "+
		"to read it at random, %swrite it seekable (vmaconv convert %s %s --seekable) or download it", name, comp, notSeekable(comp), indexHint(comp, name), name, seekableName(name))}
}

// indexHint suggests vmaconv index where it makes an archive readable at
// random.
func indexHint(comp, name string) string {
	if comp == compress.Zstd {
		return "index it (vmaconv index " + name + "), "
	}
	return ""
}

func notSeekable(comp string) string {
	if comp == compress.Zstd {
		return " without a seek table"
	}
	return ""
}

// seekableName suggests the name of a seekable copy of the archive name.
func seekableName(name string) string {
	base := name[strings.LastIndexByte(name, '/')+1:]
	base, _, _ = strings.Cut(base, "?")
	for _, ext := range []string{".zst", ".gz", ".lzo"} {
		base = strings.TrimSuffix(base, ext)
	}
	return base + ".zst"
}

// detectRemote finds the format of an object as detect does a file's.
func (op *opener) detectRemote(ob *remote.Object) (format.Format, error) {
	head := ob.Head()
	if compress.Detect(head) != "" {
		return streamFormat(op.reg)
	}
	fm, err := op.reg.Detect(head)
	if !errors.Is(err, format.ErrUnknownFormat) {
		return fm, err
	}
	var tail []byte
	if ob.RandomAccess() && ob.Size() >= 512 {
		tail = make([]byte, 512)
		if _, err := ob.ReadAt(tail, ob.Size()-512); err != nil {
			tail = nil
		}
	}
	// A format whose signature is a footer (a fixed VHD), as of a file.
	if tail != nil {
		if fm, err := op.reg.DetectTail(tail, ob.Size()); err == nil {
			return fm, nil
		}
	}
	if ff, ok := format.DetectForeign(head, tail); ok {
		return format.Format{}, &ForeignError{Path: ob.Name(), Foreign: ff}
	}
	op.note("%s: no known format found, reading it as raw (pass -f raw to say so)", ob.Name())
	return op.reg.Lookup(fallback)
}

// formatOf returns the format o names, or the one the object's head shows.
func (op *opener) formatOf(ob *remote.Object) (format.Format, error) {
	if op.o.Format != "" {
		fm, err := op.reg.Lookup(op.o.Format)
		if err != nil {
			return fm, format.Unsupported("%v", err)
		}
		return fm, nil
	}
	return op.detectRemote(ob)
}

// Expand returns the archives args name: each argument as it is, except an
// s3:// prefix (an argument ending in "/"), which stands for every
// archive under it (a key ending in an archive format's extension, or one
// compressed: .vma, .vma.zst, .vma.gz, .vma.lzo), in key order. A prefix
// that holds none is an error.
func Expand(ctx context.Context, reg *format.Registry, args []string, o Options) ([]string, error) {
	var out []string
	for _, a := range args {
		if !IsRemote(a) || !strings.HasSuffix(a, "/") {
			out = append(out, a)
			continue
		}
		urls, err := remote.List(ctx, a, o.Remote, func(key string) bool { return isArchiveName(reg, key) })
		if err != nil {
			return nil, err
		}
		if len(urls) == 0 {
			return nil, fmt.Errorf("%s: no archives under this prefix", a)
		}
		out = append(out, urls...)
	}
	return out, nil
}

// isArchiveName reports whether a key is named as an archive of a format
// of reg, compressed or not.
func isArchiveName(reg *format.Registry, key string) bool {
	lower := strings.ToLower(key)
	for _, ext := range []string{".zst", ".gz", ".lzo"} {
		if fm, ok := reg.ForPath(strings.TrimSuffix(lower, ext)); ok && fm.Multi {
			return true
		}
	}
	fm, ok := reg.ForPath(lower)
	return ok && fm.Multi
}

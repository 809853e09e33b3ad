package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
)

// Format is the VMDK driver, for a format.Registry.
var Format = format.Format{
	Name:  Name,
	Probe: Probe,
	Open: func(f *os.File, o format.OpenOptions) (format.Image, error) {
		s, err := Open(f, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	OpenAt: func(r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
		s, err := OpenAt(r, size, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	Extensions: []string{".vmdk"},
	Create:     Create,
	Options:    options,
	InfoAt:     info,
}

// Probe reports whether head starts a VMDK file, as QEMU's vmdk_probe
// decides: a sparse extent's magic, or a descriptor file.
func Probe(head []byte) bool {
	return bytes.HasPrefix(head, Magic[:]) || bytes.HasPrefix(head, MagicCOWD[:]) || probeDescriptor(head)
}

// Bounds of what one Open follows.
const (
	maxParents = 16   // parent images behind the image
	maxExtents = 4096 // extents of one descriptor, each an open file
)

// Source is an open VMDK disk: its extents, in order, and its parent's
// content under unallocated grains. Safe for concurrent use.
type Source struct {
	name   string // the file, as given
	size   int64
	exts   []*extent
	parent *Source
	files  []*os.File // opened by Open (extents, parents), closed by Close
	own    *os.File   // the file given to Open, closed by Close
	about  about
}

// about is what Info shows of an opened image.
type about struct {
	createType     string
	cid, parentCID uint32
	parentHint     string
}

// extent is one extent of a disk, at [start, start+size) of it.
type extent struct {
	start, size int64
	typ         string // the descriptor's type (FLAT, SPARSE, …); "" for an image's own sparse extent
	file        string // the file, as QEMU names it; "" for the image's own
	r           io.ReaderAt
	fileSize    int64
	flatOff     int64       // FLAT, VMFS: where the extent starts in its file
	sp          *sparse     // SPARSE, VMFSSPARSE, the image's own
	holes       *raw.Source // the file's holes, where it is a regular file
	zero        bool        // ZERO
}

// opener is what one Open knows of the files opened so far.
type opener struct {
	o      format.OpenOptions
	tables *tables
	seen   []os.FileInfo // images of the parent chain, to find loops
	names  []string
	files  []*os.File // every file opened, for cleanup on failure
}

// Open opens f as a VMDK image: a sparse extent (its file alone), or a
// descriptor and the extent files it names (from its directory), and its
// parent if the image has one and o allows it. The Source's Close closes
// f, and so does a failing Open.
func Open(f *os.File, o format.OpenOptions) (*Source, error) {
	op := &opener{o: o, tables: newTables(tableCacheBytes)}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, err
		}
	}
	op.seen, op.names = append(op.seen, fi), append(op.names, f.Name())
	s, err := op.open(f, size, f.Name(), true, 0)
	if err != nil {
		op.closeAll()
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	s.own, s.files = f, op.files
	return s, nil
}

// OpenAt opens the size bytes of r as a self-contained sparse VMDK image
// (monolithicSparse or streamOptimized, as an OVA holds one). A descriptor
// file and an image with a parent are refused: they name other files. The
// Source's Close does not close r.
func OpenAt(r io.ReaderAt, size int64, o format.OpenOptions) (*Source, error) {
	op := &opener{o: o, tables: newTables(tableCacheBytes)}
	s, err := op.open(r, size, "", false, 0)
	if err != nil {
		op.closeAll()
		return nil, err
	}
	s.files = op.files
	return s, nil
}

func (op *opener) closeAll() {
	for _, f := range op.files {
		f.Close()
	}
}

// open opens the image in r (named name; inDir says its directory can be
// read: extent files and a parent are looked for there).
func (op *opener) open(r io.ReaderAt, size int64, name string, inDir bool, depth int) (*Source, error) {
	var magic [4]byte
	r.ReadAt(magic[:], 0)
	if magic == Magic || magic == MagicCOWD {
		h, err := readHeader(r, size)
		if err != nil {
			return nil, err
		}
		if h.capacity == 0 && h.descOffset != 0 {
			// QEMU reads such a file as a descriptor file.
			text, err := readText(r, size, h.descAt(), maxDescriptor)
			if err != nil {
				return nil, err
			}
			return op.openDescriptor(text, name, inDir, depth)
		}
		return op.openSparse(r, size, name, h, inDir, depth)
	}
	text, err := readText(r, size, 0, maxDescriptor)
	if err != nil {
		return nil, err
	}
	if !probeDescriptor(text) && !bytes.Contains(text, []byte("createType")) {
		return nil, fmt.Errorf("%w: not a VMDK image (no sparse extent magic, not a descriptor)", format.ErrUnknownFormat)
	}
	return op.openDescriptor(text, name, inDir, depth)
}

// readText reads up to n bytes at off, fewer where the file ends.
func readText(r io.ReaderAt, size, off, n int64) ([]byte, error) {
	if off < 0 || off >= size {
		return nil, fmt.Errorf("%w: descriptor at %#x, past the end of the file (%#x bytes)", ErrCorrupt, off, size)
	}
	b := make([]byte, min(n, size-off))
	if k, err := r.ReadAt(b, off); k < len(b) {
		return nil, fmt.Errorf("vmdk: reading the descriptor at %#x: %w", off, err)
	}
	return b, nil
}

// openSparse opens an image that is one sparse extent, and its parent.
func (op *opener) openSparse(r io.ReaderAt, size int64, name string, h *header, inDir bool, depth int) (*Source, error) {
	sp := newSparse(r, name, size, h, op.tables)
	s := &Source{name: name, size: sp.capacity}
	s.exts = []*extent{{size: sp.capacity, r: r, fileSize: size, sp: sp}}
	if f, ok := r.(*os.File); ok {
		if h := regularHoles(f, size); h != nil {
			s.exts[0].holes, sp.holes = h, h
		}
	}
	ab, err := sparseAbout(r, size, h)
	if err != nil {
		return nil, err
	}
	s.about = ab
	if err := op.openParent(s, inDir, depth); err != nil {
		return nil, err
	}
	return s, nil
}

// sparseAbout reads what a sparse image's header and embedded descriptor
// say of it: its create type as QEMU names it (from the header), its CIDs
// and its parent.
func sparseAbout(r io.ReaderAt, size int64, h *header) (about, error) {
	ab := about{createType: "monolithicSparse", parentCID: 0xffffffff}
	if h.compressed() {
		ab.createType = "streamOptimized"
	}
	if h.cowd || h.descOffset == 0 || h.descOffset >= uint64(size)/sector {
		return ab, nil
	}
	n := int64(min(h.descSize, maxDescriptor/sector)) * sector
	text, err := readText(r, size, h.descAt(), max(n, sector))
	if err != nil {
		return ab, err
	}
	d, err := parseDescriptor(text)
	if err != nil {
		return ab, err
	}
	ab.cid, ab.parentHint = d.cid, d.parentHint
	if d.hasParent {
		ab.parentCID = d.parentCID
	}
	return ab, nil
}

// openDescriptor opens the extents a descriptor names, and its parent.
func (op *opener) openDescriptor(text []byte, name string, inDir bool, depth int) (*Source, error) {
	d, err := parseDescriptor(text)
	if err != nil {
		return nil, err
	}
	if err := d.checkCreateType(); err != nil {
		return nil, err
	}
	if !inDir {
		return nil, fmt.Errorf("%w: a %s descriptor names extent files, which are read from its directory: open it as a file", ErrUnsupported, d.createType)
	}
	if len(d.extents) > maxExtents {
		return nil, fmt.Errorf("%w: %d extents (at most %d)", ErrUnsupported, len(d.extents), maxExtents)
	}
	s := &Source{name: name, about: about{createType: d.createType, cid: d.cid, parentCID: d.parentCID, parentHint: d.parentHint}}
	if !d.hasParent {
		s.about.parentCID = 0xffffffff
	}
	for _, l := range d.extents {
		e, err := op.openExtent(name, l)
		if err != nil {
			return nil, err
		}
		e.start = s.size
		if e.size > maxCapacity*sector-s.size {
			return nil, fmt.Errorf("%w: the extents add up to more than %d bytes", ErrCorrupt, int64(maxCapacity*sector))
		}
		s.size += e.size
		s.exts = append(s.exts, e)
	}
	if err := op.openParent(s, true, depth); err != nil {
		return nil, err
	}
	return s, nil
}

// displayName is a file named by a descriptor as QEMU names it: the
// descriptor's directory as given, then the name (path_combine).
func displayName(desc, file string) string {
	if filepath.IsAbs(file) {
		return file
	}
	return desc[:strings.LastIndexByte(desc, '/')+1] + file
}

// resolve finds a file a descriptor names (an extent or a parent), and
// applies the consent rule: a name that is absolute, or leaves the
// descriptor's directory by "..", or by a symbolic link, needs
// AllowBacking; always does a parent. It returns the path to open: for a
// file inside the directory, with its links resolved.
func (op *opener) resolve(desc, file string, what error, parent bool) (string, error) {
	shown := displayName(desc, file)
	if strings.IndexByte(file, 0) >= 0 {
		return "", fmt.Errorf("%w %q: a NUL byte in the name", what, file)
	}
	dir := filepath.Dir(desc)
	path := file
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, file)
	}
	outside := !within(dir, path)
	if !outside {
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return "", fmt.Errorf("%w %q: %v", what, file, unwrapPath(err))
		}
		realDir, err := filepath.EvalSymlinks(dir)
		if outside = err != nil || !within(realDir, real); !outside {
			path = real // opened without following a link again
		}
	}
	switch {
	case parent && !op.o.AllowBacking:
		return "", fmt.Errorf("%w: the image has parent %q; pass --allow-backing to read it", what, file)
	case outside && !op.o.AllowBacking:
		return "", fmt.Errorf("%w %q lies outside the descriptor's directory; pass --allow-backing to read it", what, file)
	case parent:
		op.note(fmt.Sprintf("%s: reading parent image %s", desc, shown))
	case outside:
		op.note(fmt.Sprintf("%s: reading extent file %s, outside the descriptor's directory", desc, shown))
	}
	return path, nil
}

// within reports whether path is dir or below it, by name.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (op *opener) note(msg string) {
	if op.o.Note != nil {
		op.o.Note(msg)
	}
}

// openFile opens a file a descriptor names: a regular file, or a block
// device where the user consented to files outside the directory.
func (op *opener) openFile(path, file string, what error) (*os.File, os.FileInfo, int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w %q: %v", what, file, unwrapPath(err))
	}
	device := fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0
	if !fi.Mode().IsRegular() && !(device && op.o.AllowBacking) {
		return nil, nil, 0, fmt.Errorf("%w %q is not a regular file", what, file)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w %q: %v", what, file, unwrapPath(err))
	}
	op.files = append(op.files, f)
	fi2, err := f.Stat()
	if err != nil || !os.SameFile(fi, fi2) {
		return nil, nil, 0, fmt.Errorf("%w %q changed while it was opened", what, file)
	}
	size := fi2.Size()
	if device {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, nil, 0, fmt.Errorf("%w %q: %v", what, file, err)
		}
	}
	return f, fi2, size, nil
}

// openExtent opens the file of one extent line of the descriptor desc.
func (op *opener) openExtent(desc string, l extentLine) (*extent, error) {
	e := &extent{typ: l.typ, size: l.sectors * sector}
	if l.typ == "ZERO" {
		e.zero = true
		return e, nil
	}
	path, err := op.resolve(desc, l.file, ErrExtentFile, false)
	if err != nil {
		return nil, err
	}
	f, fi, size, err := op.openFile(path, l.file, ErrExtentFile)
	if err != nil {
		return nil, err
	}
	e.file, e.r, e.fileSize = displayName(desc, l.file), f, size
	if fi.Mode().IsRegular() {
		e.holes = regularHoles(f, size)
	}
	switch l.typ {
	case "FLAT", "VMFS":
		e.flatOff = l.offset * sector
		if e.flatOff > size || e.size > size-e.flatOff {
			return nil, fmt.Errorf("%w %q: the descriptor (line %d) says %d bytes from %#x, the file has %d", ErrExtentFile, l.file, l.line, e.size, e.flatOff, size)
		}
		return e, nil
	}
	h, err := readHeader(f, size)
	if errors.Is(err, format.ErrUnknownFormat) {
		return nil, fmt.Errorf("%w %q (line %d): not a sparse extent (magic %q)", ErrExtentFile, l.file, l.line, h4(f))
	}
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrExtentFile, l.file, err)
	}
	if h.capacity == 0 && h.descOffset != 0 {
		return nil, fmt.Errorf("%w %q: a descriptor, not a sparse extent", ErrExtentFile, l.file)
	}
	// As QEMU, the extent's size is its header's, not the descriptor's.
	e.sp = newSparse(f, e.file, size, h, op.tables)
	if e.holes != nil {
		e.sp.holes = e.holes
	}
	e.size = e.sp.capacity
	return e, nil
}

// h4 returns the first four bytes of a file, for messages.
func h4(r io.ReaderAt) []byte {
	b := make([]byte, 4)
	n, _ := r.ReadAt(b, 0)
	return b[:n]
}

// regularHoles returns the hole map of a regular file, nil for others.
func regularHoles(f *os.File, size int64) *raw.Source {
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	return raw.Map(f, size)
}

// openParent opens s's parent image, if it has one, as QEMU reads
// parentFileNameHint: relative to s's file, a VMDK image whose CID is s's
// parentCID.
func (op *opener) openParent(s *Source, inDir bool, depth int) error {
	hint := s.about.parentHint
	if hint == "" {
		return nil
	}
	if !inDir {
		return fmt.Errorf("%w: the image has parent %q, which is read from its directory: open it as a file", ErrUnsupported, hint)
	}
	path, err := op.resolve(s.name, hint, ErrParent, true)
	if err != nil {
		return err
	}
	if depth+1 > maxParents {
		return fmt.Errorf("%w: a parent chain deeper than %d (a loop?)", ErrParent, maxParents)
	}
	f, fi, size, err := op.openFile(path, hint, ErrParent)
	if err != nil {
		return err
	}
	for i, seen := range op.seen {
		if os.SameFile(seen, fi) {
			return fmt.Errorf("%w: loop: %s is already in the chain as %s", ErrParent, hint, op.names[i])
		}
	}
	op.seen, op.names = append(op.seen, fi), append(op.names, path)
	p, err := op.open(f, size, displayName(s.name, hint), true, depth+1)
	if errors.Is(err, format.ErrUnknownFormat) {
		return fmt.Errorf("%w %q: not a VMDK image (magic %q)", ErrParent, hint, h4(f))
	}
	if err != nil {
		return fmt.Errorf("%w %q: %w", ErrParent, hint, err)
	}
	if p.about.cid != s.about.parentCID {
		return fmt.Errorf("%w %q: its CID %08x is not the image's parentCID %08x (the parent changed after the image was made)", ErrParent, hint, p.about.cid, s.about.parentCID)
	}
	s.parent = p
	return nil
}

// Size returns the disk's size in bytes.
func (s *Source) Size() int64 { return s.size }

// Close closes the files Open opened (extents, parents), and the file
// given to it.
func (s *Source) Close() error {
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	if s.own != nil {
		if err := s.own.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// extentAt returns the extent holding disk offset off < s.size.
func (s *Source) extentAt(off int64) *extent {
	i := sort.Search(len(s.exts), func(i int) bool { return s.exts[i].start+s.exts[i].size > off })
	return s.exts[i]
}

// span describes the run at disk offset off < s.size, within one extent:
// see sparse.span.
func (s *Source) span(off int64) (e *extent, k kind, host, n int64, err error) {
	e = s.extentAt(off)
	in := off - e.start
	switch {
	case e.zero:
		return e, zeroed, 0, e.size - in, nil
	case e.sp == nil:
		return e, data, e.flatOff + in, e.size - in, nil
	}
	k, host, n, err = e.sp.span(in)
	if err != nil {
		return nil, 0, 0, 0, s.errorf("at disk offset %#x: %w", off, err)
	}
	return e, k, host, min(n, e.size-in), nil
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vmdk: read at negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > s.size-off {
		p, short = p[:s.size-off], true
	}
	if err := s.read(p, off); err != nil {
		return 0, err
	}
	if short {
		return len(p), io.EOF
	}
	return len(p), nil
}

// read fills p with the disk's bytes at off (within the disk): runs of
// data contiguous in one file with one call.
func (s *Source) read(p []byte, off int64) error {
	var run []byte // p[runPos:pos], at runHost of runExt
	var runExt *extent
	var runHost int64
	flush := func() error {
		if runExt == nil {
			return nil
		}
		n, err := runExt.r.ReadAt(run, runHost)
		if n < len(run) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return s.errorf("reading %s at %#x: %w", cmpOr(runExt.file, "the image"), runHost, err)
		}
		runExt = nil
		return nil
	}
	for pos := 0; pos < len(p); {
		at := off + int64(pos)
		e, k, host, n, err := s.span(at)
		if err != nil {
			return err
		}
		n = min(n, int64(len(p)-pos))
		piece := p[pos : pos+int(n)]
		if k == data && runExt == e && runHost+int64(len(run)) == host {
			run = p[pos-len(run) : pos+int(n)]
			pos += int(n)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		switch k {
		case data:
			runExt, runHost, run = e, host, piece
		case compressed:
			in := at - e.start
			g := in / e.sp.grain
			if err := e.sp.readGrain(piece, g, host, in-g*e.sp.grain); err != nil {
				return s.errorf("at disk offset %#x: %w", at, err)
			}
		case unallocated:
			if s.parent == nil {
				clear(piece)
				break
			}
			if err := s.parent.readPadded(piece, at); err != nil {
				return err
			}
		default:
			clear(piece)
		}
		pos += int(n)
	}
	return flush()
}

// readPadded reads p at off from a parent, zeros past its end.
func (s *Source) readPadded(p []byte, off int64) error {
	if off >= s.size {
		clear(p)
		return nil
	}
	k := min(int64(len(p)), s.size-off)
	if err := s.read(p[:k], off); err != nil {
		return err
	}
	clear(p[k:])
	return nil
}

// errorf returns an error about the image: "NAME: …" (or "vmdk: …" for
// an image without a name, opened with OpenAt).
func (s *Source) errorf(format string, args ...any) error {
	prefix := "vmdk: "
	if s.name != "" {
		prefix = s.name + ": "
	}
	return fmt.Errorf(prefix+format, args...)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

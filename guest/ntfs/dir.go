package ntfs

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/bits"
	"strings"
	"time"

	"github.com/vmaconv/vmaconv/guest"
)

const (
	rootRecord      = 5
	firstUserRecord = 16 // records below are the system files, hidden in the root
	maxIndexDepth   = 32
	maxIndexBlocks  = 1 << 16
	// maxIndexEntries bounds the raw entries of one index: a file may
	// have a Win32 and a DOS entry.
	maxIndexEntries = 2*guest.MaxDirEntries + 16
)

// File attribute flags ($STANDARD_INFORMATION).
const (
	faReadOnly  = 0x0001
	faReparse   = 0x0400
	faEncrypted = 0x4000
)

// Reparse tags.
const (
	tagMountPoint = 0xA0000003
	tagSymlink    = 0xA000000C
)

// File name namespaces.
const (
	nsPOSIX = 0
	nsWin32 = 1
	nsDOS   = 2
)

type kind uint8

const (
	kFile kind = iota
	kDir
	kLink
)

// node is a file, directory, link or alternate data stream.
type node struct {
	v      *volume
	info   guest.Info
	rec    uint64
	kind   kind
	stream string // the $DATA attribute's name ("" unless an ADS)
	target string // links
}

// Root returns the root directory (MFT record 5).
func (v *volume) Root() (n guest.Node, err error) {
	defer recoverErr("root", &err)
	r, err := v.record(rootRecord)
	if err != nil {
		return nil, err
	}
	if !r.isDir() {
		return nil, corrupt("root (MFT record 5) is not a directory")
	}
	nodes, err := v.stat(r, "")
	if err != nil {
		return nil, err
	}
	return nodes[0], nil
}

func filetime(b []byte) time.Time {
	ft := int64(binary.LittleEndian.Uint64(b))
	const epoch = 11644473600 // 1601-01-01 to 1970-01-01, in seconds
	return time.Unix(ft/1e7-epoch, ft%1e7*100).UTC()
}

// stat returns the node of record r found under name, followed by one
// node per alternate data stream.
func (v *volume) stat(r *record, name string) ([]*node, error) {
	n := &node{v: v, rec: r.num}
	i := &n.info
	i.Name, i.Ino, i.Nlink = name, r.num, 0
	var fa uint32
	if si := r.first(atStandardInfo, ""); si != nil && len(si.value) >= 0x24 {
		b := si.value
		i.ModTime, i.CTime, i.ATime = filetime(b[8:]), filetime(b[16:]), filetime(b[24:])
		fa = binary.LittleEndian.Uint32(b[0x20:])
	}
	for _, a := range r.attrs {
		if a.typ == atFileName && len(a.value) >= 0x42 && a.value[0x41] != nsDOS {
			i.Nlink++
		}
	}
	i.Nlink = max(i.Nlink, 1)
	switch {
	case r.isDir():
		n.kind, i.Mode = kDir, fs.ModeDir|0o755
	case fa&faReadOnly != 0:
		i.Mode = 0o444
	default:
		i.Mode = 0o644
	}
	if rp := r.first(atReparse, ""); rp != nil && !rp.nonres {
		t, ok, err := reparseTarget(rp.value)
		if err != nil {
			return nil, corrupt("MFT record %d: reparse point: %v", r.num, err)
		}
		if ok {
			n.kind, i.Mode, n.target, i.Size = kLink, fs.ModeSymlink|0o777, t, int64(len(t))
		}
	}
	if n.kind == kFile {
		// System files that are only indexes ($Quota, $ObjId) have no
		// $DATA: they read as empty.
		if d := r.first(atData, ""); d != nil {
			i.Size = d.size()
		}
	}
	out := []*node{n}
	seen := map[string]bool{}
	for k := range r.attrs {
		a := &r.attrs[k]
		if a.typ != atData || a.name == "" || seen[a.name] || (a.nonres && a.startVCN != 0) {
			continue
		}
		seen[a.name] = true
		if len(seen) >= 1<<16 {
			return nil, corrupt("MFT record %d: too many streams", r.num)
		}
		s := *n
		s.kind, s.stream, s.target = kFile, a.name, ""
		s.info.Name = name + ":" + a.name
		s.info.Ino = 1<<63 | r.num<<16 | uint64(len(seen))
		s.info.Mode = n.info.Mode &^ fs.ModeType &^ 0o111
		if n.kind != kFile {
			s.info.Mode = 0o644
			if fa&faReadOnly != 0 {
				s.info.Mode = 0o444
			}
		}
		s.info.Size = a.size()
		s.info.Nlink = 1
		out = append(out, &s)
	}
	return out, nil
}

// reparseTarget returns the target of a symbolic link or junction
// reparse point, ok false for other tags.
func reparseTarget(b []byte) (string, bool, error) {
	if len(b) < 8 {
		return "", false, fmt.Errorf("%d bytes", len(b))
	}
	tag := binary.LittleEndian.Uint32(b)
	var buf int
	switch tag {
	case tagSymlink:
		buf = 8 + 12
	case tagMountPoint:
		buf = 8 + 8
	default:
		return "", false, nil
	}
	if len(b) < buf {
		return "", false, fmt.Errorf("tag %#x: %d bytes", tag, len(b))
	}
	get := func(o int) (string, error) {
		off := int(binary.LittleEndian.Uint16(b[8+o:]))
		ln := int(binary.LittleEndian.Uint16(b[10+o:]))
		if buf+off+ln > len(b) || ln%2 != 0 {
			return "", fmt.Errorf("tag %#x: name of %d bytes at %d past the end (%d)", tag, ln, off, len(b))
		}
		return utf16String(b[buf+off : buf+off+ln]), nil
	}
	subst, err := get(0)
	if err != nil {
		return "", false, err
	}
	print, err := get(4)
	if err != nil {
		return "", false, err
	}
	t := print
	if t == "" {
		t = strings.TrimPrefix(subst, `\??\`)
	}
	if t == "" || len(t) > guest.MaxLinkLen {
		return "", false, fmt.Errorf("tag %#x: target of %d bytes", tag, len(t))
	}
	return strings.ReplaceAll(t, `\`, `/`), true, nil
}

// Info returns the node's metadata.
func (n *node) Info() guest.Info { return n.info }

// Readlink returns a symbolic link's or junction's target.
func (n *node) Readlink() (string, error) {
	if n.kind != kLink {
		return "", fmt.Errorf("ntfs: %q (MFT record %d): %w", n.info.Name, n.rec, guest.ErrNotLink)
	}
	return n.target, nil
}

// Open returns a regular file's (or alternate data stream's) contents.
func (n *node) Open() (f guest.File, err error) {
	defer recoverErr(fmt.Sprintf("MFT record %d", n.rec), &err)
	if n.kind != kFile {
		return nil, fmt.Errorf("ntfs: %q (MFT record %d): %w", n.info.Name, n.rec, guest.ErrNotRegular)
	}
	r, err := n.v.record(n.rec)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("MFT record %d $DATA", n.rec)
	if n.stream != "" {
		what += ":" + n.stream
	}
	ext := r.extents(atData, n.stream)
	if len(ext) == 0 && n.stream == "" {
		return &stream{v: n.v, what: what, resident: []byte{}, cuIndex: -1}, nil
	}
	if len(ext) > 0 && ext[0].flags&afEncrypted != 0 {
		return nil, fmt.Errorf("ntfs: %s: encrypted (EFS), not supported", what)
	}
	s, err := n.v.newStream(what, ext)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// parent returns the directory the record's first Win32 or POSIX name
// (else its DOS name) is in.
func (r *record) parent() (uint64, bool) {
	var p uint64
	found := false
	for _, a := range r.attrs {
		if a.typ == atFileName && len(a.value) >= 0x42 {
			if a.value[0x41] != nsDOS {
				return binary.LittleEndian.Uint64(a.value) & (1<<48 - 1), true
			}
			if !found {
				p, found = binary.LittleEndian.Uint64(a.value)&(1<<48-1), true
			}
		}
	}
	return p, found
}

type indexEntry struct {
	ref  uint64 // MFT record number
	seq  uint16
	ns   uint8
	name string
}

// ReadDir lists a directory from its $I30 index, in index order.
func (n *node) ReadDir() (nodes []guest.Node, err error) {
	defer recoverErr(fmt.Sprintf("directory MFT record %d", n.rec), &err)
	if n.kind != kDir {
		return nil, fmt.Errorf("ntfs: %q (MFT record %d): %w", n.info.Name, n.rec, guest.ErrNotDir)
	}
	r, err := n.v.record(n.rec)
	if err != nil {
		return nil, err
	}
	ents, err := n.v.index(r)
	if err != nil {
		return nil, err
	}
	seenDir := map[uint64]bool{}
	for _, e := range visible(ents, r.num) {
		c, err := n.v.record(e.ref)
		if err != nil {
			return nil, fmt.Errorf("ntfs: directory MFT record %d: entry %q: %w", r.num, e.name, err)
		}
		if e.seq != 0 && c.seq != 0 && e.seq != c.seq {
			return nil, corrupt("directory MFT record %d: entry %q: sequence number %d, record %d has %d", r.num, e.name, e.seq, e.ref, c.seq)
		}
		if c.isDir() {
			// Directories have one name (no hard links): list each
			// once, and only in the directory its name says is its
			// parent, so that a damaged index cannot make the tree a
			// graph.
			if seenDir[c.num] {
				continue
			}
			seenDir[c.num] = true
			if p, ok := c.parent(); ok && p != r.num {
				return nil, corrupt("directory MFT record %d: entry %q: directory %d has parent %d", r.num, e.name, c.num, p)
			}
		}
		ns, err := n.v.stat(c, e.name)
		if err != nil {
			return nil, err
		}
		if len(nodes)+len(ns) > guest.MaxDirEntries {
			return nil, fmt.Errorf("ntfs: directory MFT record %d: %w", r.num, guest.ErrTooManyEntries)
		}
		for _, x := range ns {
			nodes = append(nodes, x)
		}
	}
	return nodes, nil
}

// visible returns the entries of directory dir's index that ReadDir
// lists: one name per file (not a DOS name where the file has a Win32 or
// POSIX one), not the directory itself, nor "." and "..", nor the system
// files in the root.
func visible(ents []indexEntry, dir uint64) []indexEntry {
	long := map[uint64]bool{}
	for _, e := range ents {
		if e.ns != nsDOS {
			long[e.ref] = true
		}
	}
	var out []indexEntry
	for _, e := range ents {
		switch {
		case e.ns == nsDOS && long[e.ref],
			e.ref == dir, e.name == ".", e.name == "..",
			dir == rootRecord && e.ref < firstUserRecord:
			continue
		}
		out = append(out, e)
	}
	return out
}

// index returns the entries of a directory's $I30 index, in order.
func (v *volume) index(r *record) ([]indexEntry, error) {
	what := fmt.Sprintf("directory MFT record %d: $I30", r.num)
	root := r.first(atIndexRoot, "$I30")
	if root == nil || root.nonres {
		return nil, corrupt("%s: no resident index root", what)
	}
	b := root.value
	if len(b) < 0x20 {
		return nil, corrupt("%s: index root of %d bytes", what, len(b))
	}
	if t := binary.LittleEndian.Uint32(b); t != atFileName {
		return nil, corrupt("%s: indexes attribute type %#x", what, t)
	}
	w := &indexWalk{v: v, what: what, seen: map[int64]bool{}}
	w.bsize = int64(binary.LittleEndian.Uint32(b[8:]))
	if w.bsize < 512 || w.bsize > 64<<10 || bits.OnesCount64(uint64(w.bsize)) != 1 {
		return nil, corrupt("%s: index block size %d", what, w.bsize)
	}
	w.vcnSize = 512
	if w.bsize >= v.clusterSize {
		w.vcnSize = v.clusterSize
	}
	if ext := r.extents(atIndexAlloc, "$I30"); len(ext) > 0 {
		s, err := v.newStream(what+" allocation", ext)
		if err != nil {
			return nil, err
		}
		w.alloc = s
	}
	if err := w.node(b[0x10:], 0); err != nil {
		return nil, err
	}
	return w.out, nil
}

type indexWalk struct {
	v       *volume
	what    string
	bsize   int64
	vcnSize int64
	alloc   *stream
	seen    map[int64]bool
	out     []indexEntry
	steps   int
}

// node walks the index node whose header starts b, in order.
func (w *indexWalk) node(b []byte, depth int) error {
	if len(b) < 16 {
		return corrupt("%s: index node of %d bytes", w.what, len(b))
	}
	start := int(binary.LittleEndian.Uint32(b))
	end := int(binary.LittleEndian.Uint32(b[4:]))
	if start < 16 || end > len(b) || start > end {
		return corrupt("%s: index entries [%d, %d) in a node of %d bytes", w.what, start, end, len(b))
	}
	for off := start; ; {
		if w.steps++; w.steps > maxIndexEntries+maxIndexBlocks {
			return fmt.Errorf("ntfs: %s: %w", w.what, guest.ErrTooManyEntries)
		}
		if off+16 > end {
			return corrupt("%s: index node without a last entry", w.what)
		}
		e := b[off:end]
		ln := int(binary.LittleEndian.Uint16(e[8:]))
		kl := int(binary.LittleEndian.Uint16(e[10:]))
		fl := binary.LittleEndian.Uint16(e[12:])
		if ln < 16 || ln > len(e) || 16+kl > ln {
			return corrupt("%s: index entry at %d: length %d, key %d", w.what, off, ln, kl)
		}
		if fl&1 != 0 {
			if ln < 24 || 16+kl > ln-8 {
				return corrupt("%s: index entry at %d: no room for its child", w.what, off)
			}
			if err := w.child(int64(binary.LittleEndian.Uint64(e[ln-8:])), depth+1); err != nil {
				return err
			}
		}
		if fl&2 != 0 {
			return nil
		}
		if kl < 0x42 {
			return corrupt("%s: index entry at %d: key of %d bytes", w.what, off, kl)
		}
		k := e[16 : 16+kl]
		nl := int(k[0x40])
		if 0x42+2*nl > kl {
			return corrupt("%s: index entry at %d: name of %d characters in a key of %d bytes", w.what, off, nl, kl)
		}
		ref := binary.LittleEndian.Uint64(e)
		if len(w.out) >= maxIndexEntries {
			return fmt.Errorf("ntfs: %s: %w", w.what, guest.ErrTooManyEntries)
		}
		w.out = append(w.out, indexEntry{
			ref:  ref & (1<<48 - 1),
			seq:  uint16(ref >> 48),
			ns:   k[0x41],
			name: utf16String(k[0x42 : 0x42+2*nl]),
		})
		off += ln
	}
}

// child walks the index block at vcn.
func (w *indexWalk) child(vcn int64, depth int) error {
	if depth > maxIndexDepth {
		return corrupt("%s: index deeper than %d", w.what, maxIndexDepth)
	}
	if w.alloc == nil {
		return corrupt("%s: a child block %d without an index allocation", w.what, vcn)
	}
	if vcn < 0 || vcn > w.alloc.size/w.vcnSize {
		return corrupt("%s: child block at VCN %d past the allocation (%d bytes)", w.what, vcn, w.alloc.size)
	}
	if w.seen[vcn] {
		return corrupt("%s: index block at VCN %d reached twice (a loop)", w.what, vcn)
	}
	if len(w.seen) >= maxIndexBlocks {
		return fmt.Errorf("ntfs: %s: more than %d index blocks: %w", w.what, maxIndexBlocks, guest.ErrTooManyEntries)
	}
	w.seen[vcn] = true
	b := make([]byte, w.bsize)
	if _, err := w.alloc.readFull(b, vcn*w.vcnSize); err != nil {
		return err
	}
	bw := fmt.Sprintf("%s: index block at VCN %d", w.what, vcn)
	if string(b[:4]) != "INDX" {
		return corrupt("%s: bad magic %q", bw, b[:4])
	}
	if err := fixup(b, bw); err != nil {
		return err
	}
	if got := int64(binary.LittleEndian.Uint64(b[0x10:])); got != vcn {
		return corrupt("%s: says it is at VCN %d", bw, got)
	}
	return w.node(b[0x18:], depth)
}

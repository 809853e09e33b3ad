package guest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/vmaconv/vmaconv/guest/lvm"
	"github.com/vmaconv/vmaconv/guest/part"
)

// Disk is one disk of an input, read at random.
type Disk struct {
	// Name is the disk's name in an archive ("drive-scsi0"), or "" for an
	// image's one disk.
	Name string
	R    io.ReaderAt
	Size int64
}

// Tree is the file tree of an input's disks. Its root lists the disks by
// name; an image's one unnamed disk is the root itself. A disk or a
// partition with a partition table lists its partitions as p1, p2, …; an
// LVM2 physical volume lists its volume group, which lists its logical
// volumes; a disk, partition or logical volume holding a file system is
// that file system's root directory. Contents vmaconv recognises but does
// not read (Btrfs, ZFS, LUKS, …) are irregular nodes whose Volume says
// why. Everything is found when first looked at, and reads go through a
// bounded cache of 64 KiB chunks. A Tree is an FS, safe for concurrent
// use.
type Tree struct {
	disks []*volume
	cache *chunkCache
	ino   atomic.Uint64

	lvmOnce sync.Once
	vgs     map[string]*vgNode // by volume group id
	pvVG    map[string]string  // PV UUID → volume group id
	lvmErr  error
}

// New returns the tree of disks.
func New(disks []Disk) *Tree {
	t := &Tree{cache: newChunkCache()}
	for i, d := range disks {
		r := &cachedDisk{c: t.cache, id: i, r: d.R, size: d.Size}
		t.disks = append(t.disks, t.newVolume(d.Name, "disk", "", r, d.Size, ""))
	}
	return t
}

// Root returns the tree's root: a directory of the disks, or an image's
// disk.
func (t *Tree) Root() (Node, error) {
	if len(t.disks) == 1 && t.disks[0].name == "" {
		return t.disks[0], nil
	}
	return &dirNode{info: Info{Mode: fs.ModeDir | 0o555, Ino: 1, Nlink: 2}, entries: func() ([]Node, error) {
		nodes := make([]Node, len(t.disks))
		for i, d := range t.disks {
			nodes[i] = d
		}
		return nodes, nil
	}}, nil
}

// Read returns the reads made from the disks so far, and their bytes.
func (t *Tree) Read() (reads, bytes int64) {
	t.cache.mu.Lock()
	defer t.cache.mu.Unlock()
	return t.cache.reads, t.cache.bytes
}

func (t *Tree) newIno() uint64 { return 1<<62 | t.ino.Add(1) }

// Volume describes a node that stands for a disk, a partition, a volume
// group or a logical volume, and what it holds.
type Volume struct {
	// Kind is "disk", "partition", "volume group" or "logical volume".
	Kind string `json:"kind"`
	// Detail is a partition's type name, a logical volume's VG/LV.
	Detail string `json:"detail,omitempty"`
	// Content is what it holds: a partition table ("gpt", "dos"), "lvm2",
	// a file system ("ext4", "xfs", "ntfs", "fat32", "iso9660", …), a
	// type vmaconv does not read ("btrfs", "zfs", "luks", "swap", …),
	// "empty" (zeros), or "" when unknown.
	Content string `json:"content"`
	// Readable is false for contents vmaconv does not read; Why says why.
	Readable bool   `json:"readable"`
	Why      string `json:"why,omitempty"`
	// Size is the volume's size in bytes.
	Size int64 `json:"size"`
	// Warnings are what a user should know of its partition table (a
	// backup GPT header used, a partition clipped at the disk's end).
	Warnings []string `json:"warnings,omitempty"`
}

// Volumer is implemented by the nodes of a Tree that stand for volumes.
type Volumer interface {
	Volume() Volume
}

// volume is a disk, a partition or a logical volume.
type volume struct {
	t        *Tree
	name     string
	kind     string
	detail   string
	partType string // the partition's type (an MBR byte "0x83", a GPT GUID)
	r        io.ReaderAt
	size     int64
	ino      uint64

	once     sync.Once
	content  string
	why      string
	err      error    // what made it unreadable, if an error did (a corrupt table or superblock)
	warnings []string // of its partition table
	fs       FS
	root     Node                   // the file system's root
	children func() ([]Node, error) // partitions, or volume groups
}

func (t *Tree) newVolume(name, kind, detail string, r io.ReaderAt, size int64, partType string) *volume {
	return &volume{t: t, name: name, kind: kind, detail: detail, partType: partType, r: r, size: size, ino: t.newIno()}
}

// probe finds what the volume holds, once.
func (v *volume) probe() {
	v.once.Do(func() {
		if s, ok := partitionSignatures[v.partType]; ok {
			v.content, v.why = s[0], s[1]
			return
		}
		var empty *part.Table // a table without partitions, if nothing else is found
		// Only a disk has a partition table (as Linux reads them: the
		// logical partitions of an extended one are the table's own), and
		// only disks and partitions hold LVM2 physical volumes: a table or
		// a physical volume found again inside one of its own volumes
		// would nest without end.
		if v.kind == "disk" {
			tab, err := part.Read(v.r, v.size)
			switch {
			case err != nil:
				v.err = corrupt(err)
				v.content, v.why = "partition table", v.err.Error()
				return
			case tab != nil && len(tab.Partitions) > 0:
				v.content, v.warnings = tab.Kind, tab.Warnings
				v.children = v.partitions(tab)
				return
			case tab != nil:
				empty = tab
			}
		}
		defer func() {
			if empty != nil && (v.content == "" || v.content == "empty") {
				v.content, v.why = empty.Kind, ""
				v.children = func() ([]Node, error) { return nil, nil }
			}
		}()
		if v.kind != "logical volume" && lvm.Probe(v.r, v.size) {
			v.content = "lvm2"
			v.children = v.volumeGroups
			return
		}
		for _, f := range filesystems {
			typ := f.Probe(v.r, v.size)
			if typ == "" {
				continue
			}
			v.content = typ
			fsys, err := f.Open(v.r, v.size)
			if err == nil {
				var root Node
				if root, err = fsys.Root(); err == nil {
					v.fs, v.root = fsys, root
					return
				}
			}
			v.err = err
			v.why = err.Error()
			return
		}
		for _, s := range signatures {
			if s.at(v.r, v.size) {
				v.content, v.why = s.name, s.why
				return
			}
		}
		if allZero(v.r, v.size) {
			v.content, v.why = "empty", "holds only zeros at its start: no file system"
			return
		}
		v.why = "no partition table or file system that vmaconv reads"
	})
}

// partitions returns the nodes of a partition table's partitions.
func (v *volume) partitions(tab *part.Table) func() ([]Node, error) {
	var nodes []Node
	for _, p := range tab.Partitions {
		if p.Extended() {
			continue // its logical partitions are listed
		}
		detail := p.TypeName
		if detail == "" {
			detail = p.Type
		}
		r := io.NewSectionReader(v.r, p.Start, p.Size)
		nodes = append(nodes, v.t.newVolume(fmt.Sprintf("p%d", p.Number), "partition", detail, r, p.Size, p.Type))
	}
	return func() ([]Node, error) { return nodes, nil }
}

// Volume implements Volumer.
func (v *volume) Volume() Volume {
	v.probe()
	return Volume{Kind: v.kind, Detail: v.detail, Content: v.content, Readable: v.why == "", Why: v.why, Size: v.size, Warnings: v.warnings}
}

// Info implements Node: a file system's root's, a directory's for a
// partition table or a physical volume, else an irregular node's.
func (v *volume) Info() Info {
	v.probe()
	switch {
	case v.root != nil:
		i := v.root.Info()
		i.Name = v.name
		return i
	case v.children != nil:
		return Info{Name: v.name, Mode: fs.ModeDir | 0o555, Size: v.size, Ino: v.ino, Nlink: 2}
	}
	return Info{Name: v.name, Mode: fs.ModeIrregular | 0o444, Size: v.size, Ino: v.ino, Nlink: 1}
}

// ReadDir implements Node.
func (v *volume) ReadDir() ([]Node, error) {
	v.probe()
	switch {
	case v.root != nil:
		return v.root.ReadDir()
	case v.children != nil:
		return v.children()
	}
	return nil, v.unreadable(ErrNotDir)
}

// unreadable returns the error for a volume without a readable file
// system: what it holds and why it cannot be read ("partition p2: btrfs:
// Btrfs is not readable"), matching kind (ErrNotDir, ErrNotRegular) and
// what made it unreadable.
func (v *volume) unreadable(kind error) error {
	what := v.content
	if what == "" {
		what = "unknown content"
	}
	return &volumeError{msg: fmt.Sprintf("%s %s: %s: %s", v.kind, v.name, what, v.why), kind: kind, err: v.err}
}

// volumeError says why a volume cannot be listed or read.
type volumeError struct {
	msg  string
	kind error // ErrNotDir or ErrNotRegular
	err  error // the cause, if any
}

func (e *volumeError) Error() string        { return e.msg }
func (e *volumeError) Is(target error) bool { return target == e.kind }
func (e *volumeError) Unwrap() error        { return e.err }

// Open implements Node.
func (v *volume) Open() (File, error) {
	v.probe()
	if v.root != nil || v.children != nil {
		return nil, ErrNotRegular
	}
	return nil, v.unreadable(ErrNotRegular)
}

// Readlink implements Node.
func (v *volume) Readlink() (string, error) { return "", ErrNotLink }

// volumeGroups returns the volume groups a physical volume belongs to
// (one, or none for an orphan).
func (v *volume) volumeGroups() ([]Node, error) {
	t := v.t
	t.lvmOnce.Do(t.scanLVM)
	if t.lvmErr != nil {
		return nil, t.lvmErr
	}
	pv, err := lvm.ReadPV(v.r, v.size)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", v.kind, v.name, corrupt(err))
	}
	if g, ok := t.vgs[t.pvVG[pv.UUID]]; ok {
		return []Node{g}, nil
	}
	return nil, nil
}

// scanLVM reads the LVM2 physical volumes of every disk (on the disk, or
// on one of its partitions) and groups them into volume groups, so that a
// group spread over several disks of an archive is whole.
func (t *Tree) scanLVM() {
	var pvs []*lvm.PV
	add := func(r io.ReaderAt, size int64) {
		if !lvm.Probe(r, size) {
			return
		}
		if pv, err := lvm.ReadPV(r, size); err == nil {
			pvs = append(pvs, pv)
		}
	}
	for _, d := range t.disks {
		tab, err := part.Read(d.r, d.size)
		if err != nil || tab == nil {
			add(d.r, d.size)
			continue
		}
		for _, p := range tab.Partitions {
			add(io.NewSectionReader(d.r, p.Start, p.Size), p.Size)
		}
	}
	t.vgs = map[string]*vgNode{}
	t.pvVG = map[string]string{}
	for _, g := range lvm.Group(pvs) {
		m := g.Metadata
		n := &vgNode{t: t, vg: g, ino: t.newIno()}
		t.vgs[m.ID] = n
		for _, p := range m.PVs {
			t.pvVG[p.ID] = m.ID
		}
	}
}

// vgNode is a volume group: a directory of its visible logical volumes.
type vgNode struct {
	t    *Tree
	vg   *lvm.VolumeGroup
	ino  uint64
	once sync.Once
	lvs  []Node
}

func (g *vgNode) Info() Info {
	return Info{Name: g.vg.Metadata.Name, Mode: fs.ModeDir | 0o555, Ino: g.ino, Nlink: 2}
}

func (g *vgNode) Volume() Volume {
	m := g.vg.Metadata
	return Volume{Kind: "volume group", Detail: m.Name, Content: "lvm2", Readable: true}
}

func (g *vgNode) ReadDir() ([]Node, error) {
	g.once.Do(func() {
		name := g.vg.Metadata.Name
		for _, lv := range g.vg.Metadata.LVs {
			if !lv.Visible {
				continue
			}
			detail := name + "/" + lv.Name
			if !lv.Readable {
				v := g.t.newVolume(lv.Name, "logical volume", detail, nil, lv.Size, "")
				v.once.Do(func() { v.content, v.why = lv.Type, lv.Why })
				g.lvs = append(g.lvs, v)
				continue
			}
			r, err := g.vg.Open(lv.Name)
			if err != nil {
				err = corrupt(err)
				v := g.t.newVolume(lv.Name, "logical volume", detail, nil, lv.Size, "")
				v.once.Do(func() { v.content, v.why = lv.Type, err.Error() })
				g.lvs = append(g.lvs, v)
				continue
			}
			g.lvs = append(g.lvs, g.t.newVolume(lv.Name, "logical volume", detail, r, r.Size(), ""))
		}
	})
	return g.lvs, nil
}

func (g *vgNode) Open() (File, error)       { return nil, ErrNotRegular }
func (g *vgNode) Readlink() (string, error) { return "", ErrNotLink }

// dirNode is a directory made up by the tree (the root of an archive).
type dirNode struct {
	info    Info
	entries func() ([]Node, error)
}

func (d *dirNode) Info() Info                { return d.info }
func (d *dirNode) ReadDir() ([]Node, error)  { return d.entries() }
func (d *dirNode) Open() (File, error)       { return nil, ErrNotRegular }
func (d *dirNode) Readlink() (string, error) { return "", ErrNotLink }

// fsRoot reports whether n is the root of a file system: a volume that
// holds one.
func fsRoot(n Node) bool {
	v, ok := n.(*volume)
	if !ok {
		return false
	}
	v.probe()
	return v.root != nil
}

// MaxLinks bounds the symbolic links one lookup follows (Linux's
// MAXSYMLINKS).
const MaxLinks = 40

// ErrNotExist is wrapped by the errors of paths that name nothing.
var ErrNotExist = fs.ErrNotExist

// Lookup returns the node at p, a slash-separated path from the tree's
// root, and the path it resolved to. Symbolic links inside a file system
// are followed in every component but the last, and in the last too if
// follow is set, as the guest would: an absolute target from the root of
// the link's own file system, never outside it; ".." stops at a file
// system's root and at the tree's.
func (t *Tree) Lookup(p string, follow bool) (Node, string, error) {
	root, err := t.Root()
	if err != nil {
		return nil, "", err
	}
	type frame struct {
		n      Node
		name   string
		fsRoot int // index of the frame of the current file system's root, -1 outside one
	}
	stack := []frame{{root, "", -1}}
	if fsRoot(root) {
		stack[0].fsRoot = 0
	}
	where := func() string {
		var b strings.Builder
		for _, f := range stack[1:] {
			b.WriteString("/" + Escape(f.name))
		}
		if b.Len() == 0 {
			return "/"
		}
		return b.String()
	}
	comps := strings.Split(p, "/")
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		top := stack[len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 && top.fsRoot != len(stack)-1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if !top.n.Info().Mode.IsDir() {
			if v, ok := top.n.(*volume); ok {
				return nil, "", fmt.Errorf("%s: %w", where(), v.unreadable(ErrNotDir))
			}
			return nil, "", fmt.Errorf("%s: %w", where(), ErrNotDir)
		}
		nodes, err := top.n.ReadDir()
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", where(), err)
		}
		i := slices.IndexFunc(nodes, func(n Node) bool { return n.Info().Name == c })
		if i < 0 {
			return nil, "", fmt.Errorf("%s: %s: %w", where(), Escape(c), ErrNotExist)
		}
		n := nodes[i]
		if n.Info().Mode&fs.ModeSymlink != 0 && (len(comps) > 0 || follow) {
			if links++; links > MaxLinks {
				return nil, "", fmt.Errorf("%s/%s: more than %d symbolic links: %w", strings.TrimSuffix(where(), "/"), Escape(c), MaxLinks, ErrCorrupt)
			}
			target, err := n.Readlink()
			if err != nil {
				return nil, "", fmt.Errorf("%s/%s: %w", strings.TrimSuffix(where(), "/"), Escape(c), err)
			}
			if strings.HasPrefix(target, "/") {
				if top.fsRoot < 0 {
					return nil, "", fmt.Errorf("%s: a link outside a file system", where())
				}
				stack = stack[:top.fsRoot+1]
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		}
		f := frame{n, c, top.fsRoot}
		if fsRoot(n) {
			f.fsRoot = len(stack)
		}
		stack = append(stack, f)
	}
	return stack[len(stack)-1].n, where(), nil
}

// Escape returns a name from a guest as it can be shown: control
// characters and bytes that are not UTF-8 as Go escapes, backslashes
// doubled, so that a name cannot play tricks on a terminal and every
// shown name stands for one stored name.
func Escape(name string) string {
	if !strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f || r == '\\' || r >= 0x80 }) {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); {
		r, size := decodeRune(name[i:])
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0:
			fmt.Fprintf(&b, `\x%02x`, name[i])
		case r < ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 || r == 0xfeff || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069:
			q := fmt.Sprintf("%+q", string(r))
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(name[i : i+size])
		}
		i += size
	}
	return b.String()
}

// ValidName reports whether a name from a guest can name a file on the
// host: not empty, ".", or "..", and without "/" or NUL.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// MaxDepth bounds how deep Walk goes (Linux's PATH_MAX allows 2048).
const MaxDepth = 2048

// WalkFunc is called by Walk for every node, with its path (names joined
// by "/" after start, as stored: see Escape) and its depth below the
// start. An error from ReadDir is passed with the directory's node after
// the directory itself was visited. Returning SkipDir from a directory's
// call skips its entries; any other error stops the walk.
type WalkFunc func(p string, n Node, err error) error

// SkipDir is returned by a WalkFunc to skip a directory's entries.
var SkipDir = fs.SkipDir

// Walk visits n and everything below it, entries of a directory in byte
// order of their names, each directory before its entries. A directory
// met a second time (a hard-linked directory of a hostile file system: a
// loop, or many paths to one directory) is visited, then reported to fn
// with an error instead of being entered again; so is one deeper than
// MaxDepth, or past MaxDirs. Names that cannot name a file (ValidName)
// are visited but never entered.
func Walk(n Node, start string, fn WalkFunc) error { return WalkLeave(n, start, fn, nil) }

// WalkLeave is Walk that also calls leave, if not nil, after a
// directory's entries were visited (not for a directory skipped or not
// entered).
func WalkLeave(n Node, start string, fn WalkFunc, leave func(p string, n Node) error) error {
	seen := map[nodeKey]bool{} // directories entered
	var walk func(p string, n Node, fsys Node, depth int) error
	walk = func(p string, n Node, fsys Node, depth int) error {
		if fsRoot(n) {
			fsys = n
		}
		info := n.Info()
		if err := fn(p, n, nil); err != nil || !info.Mode.IsDir() {
			if errors.Is(err, SkipDir) {
				return nil
			}
			return err
		}
		if depth > 0 && !ValidName(info.Name) {
			return nil
		}
		k := nodeKey{fsys, info.Ino}
		switch {
		case seen[k]:
			// A directory has one parent: one met again is hard-linked
			// (a hostile file system's loop, or a DAG that would be
			// walked exponentially often).
			return fn(p, n, fmt.Errorf("%s: a directory met a second time (inode %d): %w", Escape(p), info.Ino, ErrCorrupt))
		case len(seen) >= MaxDirs:
			return fn(p, n, fmt.Errorf("%s: more than %d directories", Escape(p), MaxDirs))
		case depth > MaxDepth:
			return fn(p, n, fmt.Errorf("%s: more than %d directories deep", Escape(p), MaxDepth))
		}
		seen[k] = true
		nodes, err := n.ReadDir()
		if err != nil {
			return fn(p, n, err)
		}
		nodes = slices.Clone(nodes)
		slices.SortStableFunc(nodes, func(a, b Node) int { return strings.Compare(a.Info().Name, b.Info().Name) })
		for _, c := range nodes {
			if err := walk(Join(p, c.Info().Name), c, fsys, depth+1); err != nil && !errors.Is(err, SkipDir) {
				return err
			}
		}
		if leave != nil {
			return leave(p, n)
		}
		return nil
	}
	if err := walk(start, n, nil, 0); !errors.Is(err, SkipDir) {
		return err
	}
	return nil
}

// MaxDirs bounds the directories one Walk or Diff enters, and so the
// memory it takes to know each directory is entered once (about 30 bytes
// a directory).
const MaxDirs = 1 << 21

// nodeKey identifies a node within a tree: its file system (the volume
// that holds it) and its Ino there.
type nodeKey struct {
	fs  Node
	ino uint64
}

// Join returns the path of the entry name in the directory at dir.
func Join(dir, name string) string {
	if dir == "" || strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

var errNegativeOffset = errors.New("negative offset")

// corrupt returns err, matching ErrCorrupt too where it is the partition
// table's or LVM's kind of corrupt (those packages cannot import this one).
func corrupt(err error) error {
	if errors.Is(err, part.ErrCorrupt) || errors.Is(err, lvm.ErrCorrupt) {
		return corruptError{err}
	}
	return err
}

// corruptError is an error of package part or lvm that matches
// ErrCorrupt.
type corruptError struct{ error }

func (e corruptError) Is(target error) bool { return target == ErrCorrupt }
func (e corruptError) Unwrap() error        { return e.error }

// decodeRune decodes the first rune of s, -1 for a byte that is not UTF-8.
func decodeRune(s string) (rune, int) {
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size == 1 {
		return -1, 1
	}
	return r, size
}

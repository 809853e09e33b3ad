// Package guesttest checks file system readers (guest.FS) against a known
// source tree: it describes the tree (Standard), writes it to a host
// directory for the tools that build test images from one (mkfs.ext4 -d,
// mkfs.xfs -p, mcopy, xorriso), and compares what a reader shows with it
// (Check). Walk reads a whole file system within a budget, for fuzz
// targets.
package guesttest

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
)

// Entry is one node of a source tree.
type Entry struct {
	Path    string      // slash-separated, relative, e.g. "dir/sub/file"
	Mode    fs.FileMode // type bits (fs.ModeDir, fs.ModeSymlink; none: regular) | permission bits
	Size    int64       // regular files: length; content is Content(Path, off)
	Holes   [][2]int64  // regular files: [start,end) ranges left unwritten (sparse), block aligned
	Target  string      // symlinks
	Link    string      // hard link: Path of an earlier regular file this is a link to
	ModTime time.Time
}

// Caps says what a file system can hold, for Check.
type Caps struct {
	Perm      bool          // permission bits (and setuid/setgid/sticky) are kept
	Symlinks  bool          // symbolic links are kept
	HardLinks bool          // hard links share Info.Ino and Nlink
	MTime     time.Duration // granularity of kept mtimes (0: not checked)
	Sparse    bool          // holes are reported through guest.Sparse
	Ignore    []string      // root entries the file system adds (e.g. "lost+found")
}

const (
	mib = 1 << 20
	kib = 1 << 10
)

// Epoch is the first mtime of the standard tree; entries follow it a
// second and a few nanoseconds apart.
var Epoch = time.Date(2024, 6, 10, 6, 13, 20, 0, time.UTC)

// Standard returns the standard tree: regular files of several sizes and
// modes ("empty", "small", "large" of 8 MiB, "sparse" of 4 MiB with data
// only at 0–64 KiB and 2 MiB–2 MiB+64 KiB, "exec" 0755, "secret" 0600,
// "setuid" 04755), a directory "dir" with "dir/file" and its hard link
// "dir/hard", symbolic links "link-rel" → "dir/file" and "link-abs" →
// "/etc/passwd", non-ASCII names under "unicode", a path 20 directories
// deep under "deep", and 10,000 empty files f00000…f09999 in "many".
// Directories come before their entries.
func Standard() []Entry {
	var es []Entry
	add := func(e Entry) {
		e.ModTime = Epoch.Add(time.Duration(len(es))*time.Second + time.Duration(len(es)*1001))
		es = append(es, e)
	}
	add(Entry{Path: "empty", Mode: 0o644})
	add(Entry{Path: "small", Mode: 0o644, Size: 100})
	add(Entry{Path: "large", Mode: 0o644, Size: 8 * mib})
	add(Entry{Path: "sparse", Mode: 0o644, Size: 4 * mib, Holes: [][2]int64{{64 * kib, 2 * mib}, {2*mib + 64*kib, 4 * mib}}})
	add(Entry{Path: "exec", Mode: 0o755, Size: 10})
	add(Entry{Path: "secret", Mode: 0o600, Size: 7})
	add(Entry{Path: "setuid", Mode: 0o755 | fs.ModeSetuid, Size: 11})
	add(Entry{Path: "dir", Mode: fs.ModeDir | 0o755})
	add(Entry{Path: "dir/file", Mode: 0o640, Size: 5000})
	add(Entry{Path: "dir/hard", Mode: 0o640, Size: 5000, Link: "dir/file"})
	es[len(es)-1].ModTime = es[len(es)-2].ModTime // one inode
	add(Entry{Path: "link-rel", Mode: fs.ModeSymlink | 0o777, Target: "dir/file"})
	add(Entry{Path: "link-abs", Mode: fs.ModeSymlink | 0o777, Target: "/etc/passwd"})
	add(Entry{Path: "unicode", Mode: fs.ModeDir | 0o755})
	for _, n := range []string{"héllo wörld.txt", "日本語.txt", "emoji-😀.txt", "Ünïcödé"} {
		add(Entry{Path: "unicode/" + n, Mode: 0o644, Size: int64(len(n))})
	}
	p := "deep"
	add(Entry{Path: p, Mode: fs.ModeDir | 0o755})
	for i := 1; i <= 20; i++ {
		p += fmt.Sprintf("/d%02d", i)
		add(Entry{Path: p, Mode: fs.ModeDir | 0o755})
	}
	add(Entry{Path: p + "/leaf", Mode: 0o644, Size: 33})
	add(Entry{Path: "many", Mode: fs.ModeDir | 0o755})
	for i := range 10000 {
		add(Entry{Path: fmt.Sprintf("many/f%05d", i), Mode: 0o644})
	}
	return es
}

// Filter returns the entries keep keeps, and drops the entries under a
// directory it drops.
func Filter(entries []Entry, keep func(Entry) bool) []Entry {
	var out []Entry
	dropped := map[string]bool{}
	for _, e := range entries {
		if d := path.Dir(e.Path); d != "." && dropped[d] {
			dropped[e.Path] = true
			continue
		}
		if !keep(e) {
			dropped[e.Path] = true
			continue
		}
		out = append(out, e)
	}
	return out
}

// The content of every file is a window of one random table, shifted by
// a hash of its path. The table's length is a prime, so that a block read
// from the wrong place does not match.
const period = 65521

var table = sync.OnceValue(func() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 2*period+mib)
	for i := range b[:period] {
		b[i] = byte(r.Uint32())
	}
	for i := period; i < len(b); i++ {
		b[i] = b[i-period]
	}
	return b
})

func seed(p string) int64 {
	h := fnv.New64a()
	h.Write([]byte(p))
	return int64(h.Sum64() % period)
}

// Content fills p with the deterministic bytes of the file at path p,
// from offset off (holes not taken into account).
func Content(path string, off int64, p []byte) {
	t := table()
	s := seed(path)
	for len(p) > 0 {
		i := (s + off) % period
		n := copy(p, t[i:i+period+mib])
		p, off = p[n:], off+int64(n)
	}
}

// expected returns the bytes of e at off (holes as zeros).
func expected(e Entry, off int64, p []byte) {
	if e.Link != "" {
		Content(e.Link, off, p) // a hard link's content is its target's
	} else {
		Content(e.Path, off, p)
	}
	for _, h := range e.Holes {
		lo, hi := max(h[0], off), min(h[1], off+int64(len(p)))
		if lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
}

// Write materializes entries under dir, holes as holes, with their modes
// and mtimes (symbolic links' mtimes are not set).
func Write(t testing.TB, dir string, entries []Entry) {
	t.Helper()
	buf := make([]byte, mib)
	for _, e := range entries {
		name := filepath.Join(dir, filepath.FromSlash(e.Path))
		switch {
		case e.Mode.IsDir():
			if err := os.Mkdir(name, 0o755); err != nil {
				t.Fatal(err)
			}
		case e.Mode&fs.ModeSymlink != 0:
			if err := os.Symlink(e.Target, name); err != nil {
				t.Fatal(err)
			}
		case e.Link != "":
			if err := os.Link(filepath.Join(dir, filepath.FromSlash(e.Link)), name); err != nil {
				t.Fatal(err)
			}
		default:
			f, err := os.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			for off := int64(0); off < e.Size; off += int64(len(buf)) {
				n := min(int64(len(buf)), e.Size-off)
				if inHole(e, off, off+n) {
					continue
				}
				expected(e, off, buf[:n])
				if _, err := f.WriteAt(buf[:n], off); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(e.Size); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Modes and times last, children before parents, so that neither a
	// read-only directory nor a later write spoils them.
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Mode&fs.ModeSymlink != 0 {
			continue
		}
		name := filepath.Join(dir, filepath.FromSlash(e.Path))
		if err := os.Chmod(name, e.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(name, e.ModTime, e.ModTime); err != nil {
			t.Fatal(err)
		}
	}
}

// inHole reports whether [lo, hi) lies inside one of e's holes.
func inHole(e Entry, lo, hi int64) bool {
	for _, h := range e.Holes {
		if lo >= h[0] && hi <= h[1] {
			return true
		}
	}
	return false
}

// Check walks fsys and compares it with entries: every directory's
// listing (exactly, but for c.Ignore at the root), types, modes, sizes,
// contents (whole and at random offsets, concurrently), link targets,
// mtimes, hard links and holes, as far as c says the file system keeps
// them.
func Check(t testing.TB, fsys guest.FS, entries []Entry, c Caps) {
	t.Helper()
	root, err := fsys.Root()
	if err != nil {
		t.Fatalf("Root: %v", err)
	}
	byPath := map[string]Entry{}
	children := map[string][]string{"": nil}
	for _, e := range entries {
		byPath[e.Path] = e
		d := path.Dir(e.Path)
		if d == "." {
			d = ""
		}
		children[d] = append(children[d], path.Base(e.Path))
		if e.Mode.IsDir() {
			if _, ok := children[e.Path]; !ok {
				children[e.Path] = nil
			}
		}
	}
	ino := map[string]uint64{}
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(format, args...)
		}
	}
	var walk func(dir string, n guest.Node)
	walk = func(dir string, n guest.Node) {
		nodes, err := n.ReadDir()
		if err != nil {
			fail("ReadDir %q: %v", dir, err)
			return
		}
		var got []string
		for _, ch := range nodes {
			name := ch.Info().Name
			if dir == "" && slices.Contains(c.Ignore, name) {
				continue
			}
			got = append(got, name)
			p := name
			if dir != "" {
				p = dir + "/" + name
			}
			e, ok := byPath[p]
			if !ok {
				fail("%q: in the file system, not in the tree", p)
				continue
			}
			ino[p] = ch.Info().Ino
			checkNode(t, fail, ch, e, c)
			if e.Mode.IsDir() {
				walk(p, ch)
			}
		}
		want := children[dir]
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			fail("directory %q lists %d entries, want %d (first missing: %q, first extra: %q)",
				dir, len(got), len(want), firstNotIn(want, got), firstNotIn(got, want))
		}
	}
	if i := root.Info(); !i.Mode.IsDir() {
		fail("root is not a directory: %v", i.Mode)
	}
	walk("", root)
	if c.HardLinks {
		for _, e := range entries {
			if e.Link != "" && ino[e.Path] != ino[e.Link] {
				fail("%q: Ino %d, its hard link %q has %d", e.Path, ino[e.Path], e.Link, ino[e.Link])
			}
		}
	}
	if errs > 20 {
		t.Errorf("… and %d more", errs-20)
	}
}

func firstNotIn(a, b []string) string {
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			return s
		}
	}
	return ""
}

func checkNode(t testing.TB, fail func(string, ...any), n guest.Node, e Entry, c Caps) {
	t.Helper()
	i := n.Info()
	if i.Ino == 0 {
		fail("%q: Ino 0", e.Path)
	}
	if i.Mode.Type() != e.Mode.Type() {
		fail("%q: type %v, want %v", e.Path, i.Mode.Type(), e.Mode.Type())
		return
	}
	const permBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if c.Perm && e.Mode&fs.ModeSymlink == 0 && i.Mode&permBits != e.Mode&permBits {
		fail("%q: mode %v, want %v", e.Path, i.Mode, e.Mode)
	}
	if c.MTime > 0 && e.Mode&fs.ModeSymlink == 0 {
		if d := i.ModTime.Sub(e.ModTime).Abs(); d >= c.MTime {
			fail("%q: mtime %v, want %v (granularity %v)", e.Path, i.ModTime, e.ModTime, c.MTime)
		}
	}
	if c.HardLinks && e.Link != "" && i.Nlink < 2 {
		fail("%q: Nlink %d for a hard link", e.Path, i.Nlink)
	}
	switch {
	case e.Mode&fs.ModeSymlink != 0:
		got, err := n.Readlink()
		if err != nil || got != e.Target {
			fail("%q: Readlink = %q, %v; want %q", e.Path, got, err, e.Target)
		}
		if _, err := n.Open(); !errors.Is(err, guest.ErrNotRegular) {
			fail("%q: Open of a link: %v, want ErrNotRegular", e.Path, err)
		}
	case e.Mode.IsDir():
		if _, err := n.Open(); !errors.Is(err, guest.ErrNotRegular) {
			fail("%q: Open of a directory: %v, want ErrNotRegular", e.Path, err)
		}
	default:
		if i.Size != e.Size {
			fail("%q: size %d, want %d", e.Path, i.Size, e.Size)
			return
		}
		if _, err := n.ReadDir(); !errors.Is(err, guest.ErrNotDir) {
			fail("%q: ReadDir of a file: %v, want ErrNotDir", e.Path, err)
		}
		f, err := n.Open()
		if err != nil {
			fail("%q: Open: %v", e.Path, err)
			return
		}
		checkContent(fail, f, e)
		if c.Sparse && len(e.Holes) > 0 {
			checkSparse(fail, f, e)
		}
	}
}

func checkContent(fail func(string, ...any), f guest.File, e Entry) {
	if f.Size() != e.Size {
		fail("%q: File.Size %d, want %d", e.Path, f.Size(), e.Size)
		return
	}
	// The whole file in 1 MiB reads.
	got, want := make([]byte, min(mib, e.Size+2)), make([]byte, min(mib, e.Size+2))
	for off := int64(0); off < e.Size; off += mib {
		n := min(mib, e.Size-off)
		m, err := f.ReadAt(got[:n], off)
		if int64(m) != n || (err != nil && err != io.EOF) {
			fail("%q: ReadAt(%d bytes at %d) = %d, %v", e.Path, n, off, m, err)
			return
		}
		expected(e, off, want[:n])
		if !bytes.Equal(got[:n], want[:n]) {
			fail("%q: content differs in the MiB at %d", e.Path, off)
			return
		}
	}
	// At the end and past it.
	if n, err := f.ReadAt(got[:1], e.Size); n != 0 || err != io.EOF {
		fail("%q: ReadAt at the size = %d, %v; want 0, EOF", e.Path, n, err)
	}
	if e.Size > 0 {
		if n, err := f.ReadAt(got[:2], e.Size-1); n != 1 || err != io.EOF {
			fail("%q: ReadAt across the end = %d, %v; want 1, EOF", e.Path, n, err)
		}
	}
	if e.Size < 2 {
		return
	}
	// Random ranges, from several goroutines at once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), uint64(e.Size)))
			got, want := make([]byte, 70*kib), make([]byte, 70*kib)
			for range 8 {
				off := r.Int64N(e.Size - 1)
				n := min(int64(1+r.IntN(len(got))), e.Size-off)
				m, err := f.ReadAt(got[:n], off)
				expected(e, off, want[:n])
				if int64(m) != n || (err != nil && err != io.EOF) || !bytes.Equal(got[:n], want[:n]) {
					mu.Lock()
					fail("%q: concurrent ReadAt(%d bytes at %d) = %d, %v, equal %v", e.Path, n, off, m, err, bytes.Equal(got[:m], want[:m]))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
}

func checkSparse(fail func(string, ...any), f guest.File, e Entry) {
	s, ok := f.(guest.Sparse)
	if !ok {
		fail("%q: a sparse file's File does not implement guest.Sparse", e.Path)
		return
	}
	var stored int64
	var ranges [][2]int64
	for off, i := int64(0), 0; ; i++ {
		if i > 1<<16 {
			fail("%q: Data does not end", e.Path)
			return
		}
		start, end, err := s.Data(off)
		if err == io.EOF {
			break
		}
		if err != nil || start < off || end <= start || end > e.Size {
			fail("%q: Data(%d) = %d, %d, %v", e.Path, off, start, end, err)
			return
		}
		ranges = append(ranges, [2]int64{start, end})
		stored += end - start
		off = end
	}
	covered := func(lo, hi int64) bool {
		for _, r := range ranges {
			if lo >= r[0] && hi <= r[1] {
				return true
			}
		}
		return false
	}
	var data int64
	last := int64(0)
	holes := append(e.Holes, [2]int64{e.Size, e.Size})
	for _, h := range holes {
		if last < h[0] {
			data += h[0] - last
			if !covered(last, h[0]) {
				fail("%q: data [%d, %d) not in the ranges Data reports %v", e.Path, last, h[0], ranges)
			}
		}
		last = h[1]
	}
	if stored > data+64*kib {
		fail("%q: Data reports %d bytes stored, the file holds %d outside its holes", e.Path, stored, data)
	}
}

// Walk reads every node of fsys (listings, link targets, the first and a
// middle 64 KiB of every file, the first ranges of Data), stopping after
// budget nodes and bytes. It returns the first error, but goes on past it,
// so that a fuzz target reaches as much of a reader as it can. It detects
// directory loops by Ino and stops at a depth of 64.
func Walk(fsys guest.FS, budget int64) error {
	root, err := fsys.Root()
	if err != nil {
		return err
	}
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	buf := make([]byte, 64*kib)
	onPath := map[uint64]bool{}
	var walk func(n guest.Node, depth int)
	walk = func(n guest.Node, depth int) {
		if budget--; budget <= 0 || depth > 64 {
			return
		}
		i := n.Info()
		switch {
		case i.Mode.IsDir():
			if onPath[i.Ino] {
				note(fmt.Errorf("directory loop at %q", i.Name))
				return
			}
			onPath[i.Ino] = true
			defer delete(onPath, i.Ino)
			nodes, err := n.ReadDir()
			note(err)
			for _, ch := range nodes {
				if budget <= 0 {
					return
				}
				walk(ch, depth+1)
			}
		case i.Mode&fs.ModeSymlink != 0:
			_, err := n.Readlink()
			note(err)
		case i.Mode.IsRegular():
			f, err := n.Open()
			note(err)
			if err != nil {
				return
			}
			for _, off := range []int64{0, f.Size() / 2} {
				m, err := f.ReadAt(buf, off)
				if err == io.EOF {
					err = nil
				}
				note(err)
				budget -= int64(m)
			}
			if s, ok := f.(guest.Sparse); ok {
				off := int64(0)
				for range 4 {
					_, end, err := s.Data(off)
					if err != nil {
						if err != io.EOF {
							note(err)
						}
						break
					}
					if end <= off {
						note(fmt.Errorf("%q: Data(%d) ends at %d", i.Name, off, end))
						break
					}
					off = end
				}
			}
		}
	}
	walk(root, 0)
	return first
}

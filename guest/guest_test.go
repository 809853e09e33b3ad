package guest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
)

// memNode is a node of an in-memory file system, which may be as hostile
// as a test makes it: names with "/", two entries of one name, a
// directory that holds its parent.
type memNode struct {
	info     guest.Info
	data     []byte
	target   string
	children []guest.Node
}

func (m *memNode) Info() guest.Info { return m.info }

func (m *memNode) ReadDir() ([]guest.Node, error) {
	if !m.info.Mode.IsDir() {
		return nil, guest.ErrNotDir
	}
	return m.children, nil
}

func (m *memNode) Open() (guest.File, error) {
	if !m.info.Mode.IsRegular() {
		return nil, guest.ErrNotRegular
	}
	return memFile(m.data), nil
}

func (m *memNode) Readlink() (string, error) {
	if m.info.Mode&fs.ModeSymlink == 0 {
		return "", guest.ErrNotLink
	}
	return m.target, nil
}

type memFile []byte

func (f memFile) Size() int64 { return int64(len(f)) }

func (f memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(f)) {
		return 0, io.EOF
	}
	n := copy(p, f[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var ino uint64 = 100

var mtime = time.Date(2024, 6, 10, 6, 13, 20, 0, time.UTC)

func dir(name string, children ...guest.Node) *memNode {
	ino++
	return &memNode{info: guest.Info{Name: name, Mode: fs.ModeDir | 0o755, Ino: ino, Nlink: 2, ModTime: mtime}, children: children}
}

func file(name, data string, mode fs.FileMode) *memNode {
	ino++
	return &memNode{info: guest.Info{Name: name, Mode: mode, Size: int64(len(data)), Ino: ino, Nlink: 1, ModTime: mtime}, data: []byte(data)}
}

func link(name, target string) *memNode {
	ino++
	return &memNode{info: guest.Info{Name: name, Mode: fs.ModeSymlink | 0o777, Size: int64(len(target)), Ino: ino, Nlink: 1}, target: target}
}

// TestCopyOutHostile copies a tree whose names and links try to write
// outside DEST: nothing lands outside, what cannot be copied is named,
// and setuid is dropped.
func TestCopyOutHostile(t *testing.T) {
	outside := t.TempDir()
	root := dir("",
		file("ok", "fine", 0o644),
		file("../escape", "x", 0o644),
		file("a/b", "x", 0o644),
		file("..", "x", 0o644),
		file("", "x", 0o644),
		file("nul\x00name", "x", 0o644),
		file("ctl\x1b[31mred", "red", 0o644),
		file("suid", "s", 0o755|fs.ModeSetuid),
		// A link to outside, then a directory of the same name: the
		// directory must not be written through the link.
		link("evil", outside),
		dir("evil", file("planted", "x", 0o644)),
		link("abs", "/etc/passwd"),
		&memNode{info: guest.Info{Name: "dev", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Ino: 9999, Nlink: 1}},
	)
	dest := filepath.Join(t.TempDir(), "out")
	var notes []string
	skipped, err := guest.CopyOut(context.Background(), root, "/", dest, guest.CopyOptions{Recursive: true, Note: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("written outside DEST: %v", entries)
	}
	got, _ := os.ReadDir(dest)
	var names []string
	for _, e := range got {
		names = append(names, e.Name())
	}
	want := []string{"abs", "ctl\\x1b[31mred", "evil", "ok", "suid"}
	if !slices.Equal(names, want) {
		t.Errorf("copied %q, want %q", names, want)
	}
	if fi, err := os.Lstat(filepath.Join(dest, "evil")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("evil: %v %v, want the link", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "suid")); err != nil || fi.Mode()&fs.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("suid: %v %v, want 0755 without setuid", fi, err)
	}
	// ../escape, a/b, .., "", nul, the second evil, dev.
	if skipped != 7 {
		t.Errorf("skipped %d, want 7: %q", skipped, notes)
	}
	for _, n := range notes {
		if strings.ContainsAny(n, "\x00\x1b") {
			t.Errorf("a note holds a control character: %q", n)
		}
	}
	// Copying a file onto a link of an earlier copy replaces the link,
	// never writes through it.
	target := filepath.Join(outside, "target")
	os.WriteFile(target, []byte("keep"), 0o644)
	os.Symlink(target, filepath.Join(dest, "f"))
	if _, err := guest.CopyOut(context.Background(), file("f", "new", 0o644), "/f", filepath.Join(dest, "f"), guest.CopyOptions{}); err == nil {
		t.Error("a copy onto a symbolic link succeeded")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("written through a link: %q", b)
	}
}

// TestCopyOutClashes: guest names that could land on one host name do
// not (an invalid byte and its escaped spelling), a repeated directory
// is refused even after its first copy's entries, and a conflict with the
// host skips the entry, not the copy.
func TestCopyOutClashes(t *testing.T) {
	root := dir("",
		file("x\\xff", "literal", 0o644),
		file("x\xff", "invalid byte", 0o644),
		dir("sub", link("evil", "/etc")),
		dir("sub", dir("evil", file("planted", "x", 0o644))),
		file("z", "last", 0o644),
	)
	dest := filepath.Join(t.TempDir(), "out")
	var notes []string
	skipped, err := guest.CopyOut(context.Background(), root, "/", dest, guest.CopyOptions{Recursive: true, Note: func(m string) { notes = append(notes, m) }})
	if err != nil || skipped != 1 || !slices.Contains(notes, "/sub: not copied: a second entry of that name in its directory") {
		t.Fatalf("CopyOut: %d skipped, %v, notes %q", skipped, err, notes)
	}
	for name, want := range map[string]string{`x\\xff`: "literal", `x\xff`: "invalid byte", "z": "last"} {
		if b, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	// A directory in DEST where the guest has a file: that entry is
	// skipped, the rest copied; DEST's own mode is left alone.
	dest2 := t.TempDir()
	os.Chmod(dest2, 0o751)
	os.Mkdir(filepath.Join(dest2, "z"), 0o755)
	skipped, err = guest.CopyOut(context.Background(), root, "/", dest2, guest.CopyOptions{Recursive: true})
	if err != nil || skipped != 2 {
		t.Errorf("CopyOut over a directory: %d skipped, %v", skipped, err)
	}
	if fi, _ := os.Stat(dest2); fi.Mode().Perm() != 0o751 {
		t.Errorf("DEST's mode changed to %v", fi.Mode())
	}
}

// TestWalkLoop walks a directory that holds its own parent (as a
// hostile file system's hard-linked directory does): the loop is
// reported, once, and the walk ends.
func TestWalkLoop(t *testing.T) {
	a := dir("a")
	root := dir("", a)
	up := &memNode{info: root.info, children: root.children} // root's inode, under another name
	up.info.Name = "up"
	a.children = []guest.Node{file("f", "x", 0o644), up}
	var visited []string
	var loops int
	err := guest.Walk(root, "/", func(p string, n guest.Node, err error) error {
		if err != nil {
			if !errors.Is(err, guest.ErrCorrupt) {
				t.Errorf("%s: %v, want ErrCorrupt", p, err)
			}
			loops++
			return nil
		}
		visited = append(visited, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if loops != 1 || strings.Join(visited, " ") != "/ /a /a/f /a/up" {
		t.Errorf("visited %q with %d loops", visited, loops)
	}
	// Diff of the looping tree against itself ends too.
	n := 0
	err = guest.Diff(context.Background(), root, root, "/", guest.DiffOptions{}, func(c guest.Change) error { n++; return nil })
	if err != nil || n != 1 {
		t.Errorf("Diff: %d changes (want the loop), %v", n, err)
	}
}

// TestWalkDAG: 40 directories, each holding the next twice (hard links):
// 2^40 paths, walked once each directory, every second meeting reported.
func TestWalkDAG(t *testing.T) {
	next := dir("d40", file("f", "x", 0o644))
	for i := 39; i >= 0; i-- {
		d := dir(fmt.Sprintf("d%d", i))
		a := &memNode{info: next.info, children: next.children}
		b := &memNode{info: next.info, children: next.children}
		a.info.Name, b.info.Name = "a", "b"
		d.children = []guest.Node{a, b}
		next = d
	}
	visits, errs := 0, 0
	runaway := errors.New("more than 1000 visits: the walk runs away")
	err := guest.Walk(next, "/", func(p string, n guest.Node, err error) error {
		if err != nil {
			errs++
		} else {
			visits++
		}
		if visits > 1000 {
			return runaway
		}
		return nil
	})
	if err != nil || visits > 200 || errs != 40 {
		t.Errorf("Walk: %d visits, %d errors, %v", visits, errs, err)
	}
	n := 0
	// A Diff that walks every path reports nothing more: a deadline ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = guest.Diff(ctx, next, next, "/", guest.DiffOptions{}, func(c guest.Change) error {
		if n++; n > 1000 {
			return runaway
		}
		return nil
	})
	if err != nil || n != 40 {
		t.Errorf("Diff: %d changes (want the 40 second meetings), %v", n, err)
	}
}

// TestWalkDepth: a chain deeper than MaxDepth is cut with an error.
func TestWalkDepth(t *testing.T) {
	root := dir("")
	d := root
	for range guest.MaxDepth + 10 {
		c := dir("d")
		d.children = []guest.Node{c}
		d = c
	}
	errs := 0
	err := guest.Walk(root, "/", func(p string, n guest.Node, err error) error {
		if err != nil {
			errs++
		}
		return nil
	})
	if err != nil || errs != 1 {
		t.Errorf("Walk: %d errors, %v", errs, err)
	}
}

// TestDiffMem checks each kind of change Diff reports.
func TestDiffMem(t *testing.T) {
	a := dir("",
		file("same", "abc", 0o644),
		file("content", "abc", 0o644),
		file("size", "abc", 0o644),
		file("mode", "abc", 0o644),
		link("target", "x"),
		dir("gone", file("inside", "x", 0o644)),
		file("becomes-dir", "x", 0o644),
	)
	b := dir("",
		file("same", "abc", 0o644),
		file("content", "abd", 0o644),
		file("size", "abcd", 0o644),
		file("mode", "abc", 0o600),
		link("target", "y"),
		dir("becomes-dir", file("child", "y", 0o644)),
		file("new", "x", 0o644),
	)
	var got []string
	err := guest.Diff(context.Background(), a, b, "/", guest.DiffOptions{}, func(c guest.Change) error {
		got = append(got, fmt.Sprintf("%c %s %v", c.Op, c.Path, c.What))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"- /becomes-dir []", "+ /becomes-dir []", "+ /becomes-dir/child []",
		"M /content [content]", "- /gone []", "- /gone/inside []", "M /mode [mode]", "+ /new []",
		"M /size [size]", "M /target [target]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Diff:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		"héllo wörld":   "héllo wörld",
		"a\nb":          `a\nb`,
		"\x1b[2J":       `\x1b[2J`,
		"back\\slash":   `back\\slash`,
		"bad\xffutf8":   `bad\xffutf8`,
		"rtl\u202eevil": `rtl\u202eevil`,
		"c1\u009bcsi":   `c1\u009bcsi`,
		"tab\there":     `tab\there`,
		"日本語":           "日本語",
		"emoji-😀":       "emoji-😀",
	} {
		if got := guest.Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReadDataSparse reads a file through ReadData and WriteTo, holes
// left out of ReadData and written as zeros by WriteTo.
func TestReadDataSparse(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 5<<20)
	clear(data[1<<20 : 3<<20])
	f := sparseFile{memFile(data), [][2]int64{{0, 1 << 20}, {3 << 20, 5 << 20}}}
	var read int64
	err := guest.ReadData(context.Background(), f, func(off int64, p []byte) error {
		if !bytes.Equal(p, data[off:off+int64(len(p))]) {
			return fmt.Errorf("chunk at %d differs", off)
		}
		read += int64(len(p))
		return nil
	})
	if err != nil || read != 3<<20 {
		t.Fatalf("ReadData: %d bytes, %v", read, err)
	}
	var b bytes.Buffer
	if n, err := guest.WriteTo(context.Background(), f, &b); err != nil || n != int64(len(data)) || !bytes.Equal(b.Bytes(), data) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
	// A data map that goes backwards is an error, not a hang.
	bad := stuckFile{memFile(data)}
	if err := guest.ReadData(context.Background(), bad, func(int64, []byte) error { return nil }); err == nil {
		t.Error("ReadData of a backwards map succeeded")
	}
}

// sparseFile reports its data ranges.
type sparseFile struct {
	memFile
	ranges [][2]int64
}

func (s sparseFile) Data(off int64) (int64, int64, error) {
	for _, r := range s.ranges {
		if r[1] > off {
			return max(r[0], off), r[1], nil
		}
	}
	return 0, 0, io.EOF
}

// stuckFile reports the same range whatever it is asked.
type stuckFile struct{ memFile }

func (s stuckFile) Data(off int64) (int64, int64, error) { return 0, 1 << 20, nil }

// slowSparse reports its data 64 KiB at a time, slowly.
type slowSparse struct{ memFile }

func (s slowSparse) Data(off int64) (int64, int64, error) {
	time.Sleep(200 * time.Microsecond)
	if off >= s.Size() {
		return 0, 0, io.EOF
	}
	return off, min(off+64<<10, s.Size()), nil
}

// TestReadDataCancel: a read cancelled at any point fails, never ends as
// if the file ended there (cp would keep a zero-padded file).
func TestReadDataCancel(t *testing.T) {
	f := slowSparse{memFile(make([]byte, 16<<20))}
	for i := range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Duration(i%10)*time.Millisecond, cancel)
		var read int64
		err := guest.ReadData(ctx, f, func(off int64, p []byte) error { read += int64(len(p)); return nil })
		cancel()
		if err == nil && read < f.Size() {
			t.Fatalf("ReadData cancelled after %d of %d bytes returned nil", read, f.Size())
		}
	}
}

// TestCopyOutPreserve: with Preserve, run as root, files, directories and
// links keep their owners, setuid survives the chown, and links keep their
// own mtimes.
func TestCopyOutPreserve(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners are set only by root")
	}
	f := file("suid", "s", 0o755|fs.ModeSetuid)
	f.info.UID, f.info.GID = 1234, 5678
	l := link("l", "suid")
	l.info.UID, l.info.GID, l.info.ModTime = 4321, 8765, mtime
	d := dir("", f, l)
	d.info.UID, d.info.GID = 11, 22
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := guest.CopyOut(context.Background(), d, "/", dest, guest.CopyOptions{Recursive: true, Preserve: true}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]uint32{"": {11, 22}, "suid": {1234, 5678}, "l": {4321, 8765}} {
		fi, err := os.Lstat(filepath.Join(dest, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%q: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
		}
		if name == "suid" && fi.Mode()&fs.ModeSetuid == 0 {
			t.Error("setuid lost to the chown")
		}
		if name == "l" && !fi.ModTime().Equal(mtime) {
			t.Errorf("link mtime %v, want %v", fi.ModTime(), mtime)
		}
	}
}

// TestCopyOutLinkedDir: a directory met a second time (hard-linked under
// another name) is copied once; no empty directory is left for the second
// name, and the second meeting is noted.
func TestCopyOutLinkedDir(t *testing.T) {
	d := dir("a", file("f", "x", 0o644))
	b := &memNode{info: d.info, children: d.children}
	b.info.Name = "b"
	dest := filepath.Join(t.TempDir(), "out")
	skipped, err := guest.CopyOut(context.Background(), dir("", d, b), "/", dest, guest.CopyOptions{Recursive: true})
	if err != nil || skipped != 1 {
		t.Fatalf("CopyOut: %d skipped, %v", skipped, err)
	}
	if _, err := os.Stat(filepath.Join(dest, "a", "f")); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("b: %v, want it not made", err)
	}
}

package iso9660

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

var tmpDir string

func TestMain(m *testing.M) { guesttest.MainTempDir(m, &tmpDir, "", "iso9660-test-") }

// needXorriso skips the test without xorriso, or fails it under CI=true.
func needXorriso(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("xorriso not found (Debian package xorriso)")
		}
		t.Skip("xorriso not found (Debian package xorriso)")
	}
}

// tree writes entries under a new directory once per name.
var (
	treeMu   sync.Mutex
	trees    = map[string]string{}
	imagesMu sync.Mutex
	images   = map[string]*imageOnce{}
)

type imageOnce struct {
	once sync.Once
	path string
	err  error
}

func writeTree(t testing.TB, name string, entries []guesttest.Entry) string {
	t.Helper()
	treeMu.Lock()
	defer treeMu.Unlock()
	if d, ok := trees[name]; ok {
		return d
	}
	d := filepath.Join(tmpDir, "tree-"+name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	guesttest.Write(t, d, entries)
	trees[name] = d
	return d
}

// buildISO runs xorriso -as mkisofs with args over dir once per key and
// returns the image's path.
func buildISO(t testing.TB, key, dir string, args ...string) string {
	t.Helper()
	return buildXorriso(t, key, dir, append([]string{"-as", "mkisofs", "-quiet"}, args...)...)
}

// buildXorriso runs xorriso with args, then -o and dir, once per key, and
// returns the image's path.
func buildXorriso(t testing.TB, key, dir string, args ...string) string {
	t.Helper()
	needXorriso(t)
	imagesMu.Lock()
	im, ok := images[key]
	if !ok {
		im = &imageOnce{}
		images[key] = im
	}
	imagesMu.Unlock()
	im.once.Do(func() {
		im.path = filepath.Join(tmpDir, key+".iso")
		a := slices.Concat(args, []string{"-o", im.path, dir})
		out, err := exec.Command("xorriso", a...).CombinedOutput()
		if err != nil {
			im.err = fmt.Errorf("xorriso %s: %v\n%s", strings.Join(a, " "), err, out)
		}
	})
	if im.err != nil {
		t.Fatal(im.err)
	}
	return im.path
}

// openISO opens the image at path.
func openISO(t testing.TB, path string) *FS {
	t.Helper()
	return guesttest.OpenFile(t, path, func(r io.ReaderAt, size int64) (*FS, error) {
		if got := Probe(r, size); got != Name {
			return nil, fmt.Errorf("Probe = %q, want %q", got, Name)
		}
		return Open(r, size)
	})
}

func standard(t testing.TB) string { return writeTree(t, "standard", guesttest.Standard()) }

func TestRockRidge(t *testing.T) {
	t.Parallel()
	img := buildISO(t, "rr", standard(t), "-R", "-J", "--hardlinks")
	f := openISO(t, img)
	if !f.rr || f.joliet {
		t.Fatalf("rr %v joliet %v, want Rock Ridge", f.rr, f.joliet)
	}
	checkStandard(t, f, guesttest.Standard(), guesttest.Caps{
		Perm: true, Symlinks: true, HardLinks: true, MTime: time.Second,
		Ignore: []string{"rr_moved"},
	})
}

// TestRockRidgeDefault checks what xorriso's defaults keep, on a small
// tree: hard links share their extent (and the Ino made of it) and PX's
// link count even without --hardlinks.
func TestRockRidgeDefault(t *testing.T) {
	t.Parallel()
	img := buildISO(t, "rr-default", writeTree(t, "fuzz", fuzzTree()), "-R", "-J")
	f := openISO(t, img)
	checkStandard(t, f, fuzzTree(), guesttest.Caps{
		Perm: true, Symlinks: true, HardLinks: true, MTime: time.Second,
	})
}

func TestJoliet(t *testing.T) {
	t.Parallel()
	// Without the 10,000 files of "many" (TestRockRidge reads them):
	// guesttest.Check costs 2 MiB of allocation per file.
	img := buildISO(t, "joliet", standard(t), "--norock", "-J", "-joliet-long", "-joliet-utf16", "-m", "many")
	f := openISO(t, img)
	if f.rr || !f.joliet {
		t.Fatalf("rr %v joliet %v, want Joliet", f.rr, f.joliet)
	}
	es := guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		return e.Mode&fs.ModeSymlink == 0 && e.Path != "many"
	})
	checkStandard(t, f, es, guesttest.Caps{MTime: time.Second})
	root, _ := f.Root()
	if m := root.Info().Mode; m != fs.ModeDir|0o555 {
		t.Errorf("root mode %v, want dr-xr-xr-x", m)
	}
	if m := guesttest.Lookup(t, f, "dir/file").Info().Mode; m != 0o444 {
		t.Errorf("dir/file mode %v, want -r--r--r--", m)
	}
}

func TestNotDirNotLink(t *testing.T) {
	t.Parallel()
	f := openISO(t, buildISO(t, "rr", standard(t), "-R", "-J", "--hardlinks"))
	n := guesttest.Lookup(t, f, "small")
	if _, err := n.ReadDir(); !errors.Is(err, guest.ErrNotDir) {
		t.Errorf("ReadDir of a file: %v", err)
	}
	if _, err := n.Readlink(); !errors.Is(err, guest.ErrNotLink) {
		t.Errorf("Readlink of a file: %v", err)
	}
}

// hideFS hides one entry from Check, and checkLink checks that entry
// apart: guesttest expects a hard link's content and mtime of its own
// path, while a hard link has its target's.
type hideFS struct {
	guest.FS
	dir, name string
}

type hideNode struct {
	guest.Node
	h    *hideFS
	path string
}

func (h *hideFS) Root() (guest.Node, error) {
	n, err := h.FS.Root()
	if err != nil {
		return nil, err
	}
	return &hideNode{Node: n, h: h}, nil
}

func (n *hideNode) ReadDir() ([]guest.Node, error) {
	nodes, err := n.Node.ReadDir()
	out := make([]guest.Node, 0, len(nodes))
	for _, c := range nodes {
		name := c.Info().Name
		if n.path == n.h.dir && name == n.h.name {
			continue
		}
		p := name
		if n.path != "" {
			p = n.path + "/" + name
		}
		out = append(out, &hideNode{Node: c, h: n.h, path: p})
	}
	return out, err
}

// checkStandard checks f against the standard tree es (filtered), with
// the hard link "dir/hard" checked apart when hard links are kept, and
// hidden when they are not.
func checkStandard(t *testing.T, f guest.FS, es []guesttest.Entry, c guesttest.Caps) {
	t.Helper()
	es = guesttest.Filter(es, func(e guesttest.Entry) bool { return e.Link == "" })
	guesttest.Check(t, &hideFS{FS: f, dir: "dir", name: "hard"}, es, c)
	file, hard := guesttest.Lookup(t, f, "dir/file"), guesttest.Lookup(t, f, "dir/hard")
	fi, hi := file.Info(), hard.Info()
	if c.HardLinks && (fi.Ino != hi.Ino || fi.Nlink != 2 || hi.Nlink != 2) {
		t.Errorf("dir/file Ino %d Nlink %d, dir/hard Ino %d Nlink %d: want one Ino, Nlink 2", fi.Ino, fi.Nlink, hi.Ino, hi.Nlink)
	}
	if hi.Size != fi.Size || (c.MTime > 0 && !hi.ModTime.Equal(fi.ModTime)) {
		t.Errorf("dir/hard: size %d mtime %v, dir/file: %d %v", hi.Size, hi.ModTime, fi.Size, fi.ModTime)
	}
	a, b := readAll(t, file), readAll(t, hard)
	if string(a) != string(b) {
		t.Errorf("dir/hard's content differs from dir/file's")
	}
}

func readAll(t testing.TB, n guest.Node) []byte {
	t.Helper()
	f, err := n.Open()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, f.Size())
	if m, err := f.ReadAt(b, 0); m != len(b) || (err != nil && err != io.EOF) {
		t.Fatalf("%s: ReadAt = %d, %v", n.Info().Name, m, err)
	}
	return b
}

// deepTree is the standard tree's deep path and a few files.
func deepTree() []guesttest.Entry {
	return guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		return strings.HasPrefix(e.Path, "deep") || e.Path == "small" || e.Path == "link-rel" || e.Path == "dir" || e.Path == "dir/file"
	})
}

func TestRelocation(t *testing.T) {
	t.Parallel()
	dir := writeTree(t, "deep", deepTree())
	for _, v := range []struct {
		name   string
		args   []string
		ignore []string
	}{
		{"root", []string{"-compliance", "deep_paths_off", "-as", "mkisofs", "-R"}, nil},
		{"rr_moved", []string{"-as", "mkisofs", "-R", "-rr_reloc_dir", "rr_moved"}, []string{"rr_moved"}},
		{"hidden", []string{"-as", "mkisofs", "-R", "-hide-rr-moved"}, []string{".rr_moved"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			img := buildXorriso(t, "reloc-"+v.name, dir, v.args...)
			raw, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(raw), "CL\x0c\x01") || !strings.Contains(string(raw), "RE\x04\x01") {
				t.Fatal("xorriso relocated no directory (no CL or RE entry)")
			}
			f := openISO(t, img)
			guesttest.Check(t, f, deepTree(), guesttest.Caps{
				Perm: true, Symlinks: true, MTime: time.Second, Ignore: v.ignore,
			})
		})
	}
}

// plainTree is a tree whose names ISO 9660 level 1 keeps.
func plainTree() []guesttest.Entry {
	var es []guesttest.Entry
	add := func(p string, m fs.FileMode, size int64) {
		es = append(es, guesttest.Entry{Path: p, Mode: m, Size: size,
			ModTime: guesttest.Epoch.Add(time.Duration(len(es)) * time.Second)})
	}
	add("EMPTY", 0o444, 0)
	add("NOEXT", 0o444, 3000)
	add("SMALL.TXT", 0o444, 100)
	add("LARGE.BIN", 0o444, 3<<20+17)
	add("DIR", fs.ModeDir|0o555, 0)
	add("DIR/FILE.TXT", 0o444, 5000)
	p := "DEEP"
	add(p, fs.ModeDir|0o555, 0)
	for i := 1; i <= 6; i++ {
		p += fmt.Sprintf("/D%02d", i)
		add(p, fs.ModeDir|0o555, 0)
	}
	add(p+"/LEAF.DAT", 0o444, 33)
	return es
}

func TestPlain(t *testing.T) {
	t.Parallel()
	dir := writeTree(t, "plain", plainTree())
	for _, level := range []string{"1", "3"} {
		t.Run("level"+level, func(t *testing.T) {
			t.Parallel()
			img := buildISO(t, "plain"+level, dir, "--norock", "-iso-level", level)
			f := openISO(t, img)
			if f.rr || f.joliet {
				t.Fatalf("rr %v joliet %v, want neither", f.rr, f.joliet)
			}
			guesttest.Check(t, f, plainTree(), guesttest.Caps{Perm: true, MTime: time.Second})
		})
	}
}

// BenchmarkReadLarge reads an 8 MiB file in 1 MiB reads.
func BenchmarkReadLarge(b *testing.B) {
	dir := writeTree(b, "large", guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool { return e.Path == "large" }))
	f := openISO(b, buildISO(b, "large", dir, "-R"))
	file, err := guesttest.Lookup(b, f, "large").Open()
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 1<<20)
	b.SetBytes(file.Size())
	b.ReportAllocs()
	for b.Loop() {
		for off := int64(0); off < file.Size(); off += int64(len(p)) {
			if _, err := file.ReadAt(p, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

var tmpRoot string

func TestMain(m *testing.M) {
	// mkfs.ext4 -d writes faster to memory where there is some.
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	guesttest.MainTempDir(m, &tmpRoot, base, "ext4test")
}

// needTools skips (or, under CI=true, fails) when e2fsprogs is missing.
func needTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found (Debian package e2fsprogs): %v", tool, err)
			}
			t.Skipf("%s not found: install the Debian package e2fsprogs", tool)
		}
	}
}

func runTool(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// farEntry is a 66 MiB sparse file with data only in its last 64 KiB: on
// 1 KiB blocks, that reaches the triple indirect block.
var farEntry = guesttest.Entry{Path: "far", Mode: 0o644, Size: 66 << 20,
	Holes: [][2]int64{{0, 66<<20 - 64<<10}}, ModTime: guesttest.Epoch}

// tree writes a source tree once per name.
var trees sync.Map

func tree(t testing.TB, name string, entries []guesttest.Entry) string {
	t.Helper()
	v, _ := trees.LoadOrStore(name, &sync.Once{})
	dir := filepath.Join(tmpRoot, "tree-"+name)
	v.(*sync.Once).Do(func() {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		guesttest.Write(t, dir, entries)
	})
	if _, err := os.Stat(filepath.Join(dir, entries[0].Path)); err != nil {
		t.Fatalf("tree %s not written: %v", name, err)
	}
	return dir
}

type variant struct {
	name  string
	probe string
	args  []string
	// all keeps 1,000 of the 10,000 files of "many", else 300 (mkfs -d
	// takes seconds per few thousand files in one directory, and the
	// test budget is 25 s); far adds farEntry; index runs e2fsck -D
	// to index the directories (htree); inline truncates "sparse" after
	// its last data (mkfs -O inline_data loses a trailing hole's size).
	all, far, index, inline bool
}

var variants = []variant{
	{name: "ext4", probe: "ext4", all: true, index: true},
	{name: "ext3", probe: "ext3", args: []string{"-t", "ext3", "-O", "^extent,^flex_bg,^64bit"}},
	{name: "ext2", probe: "ext2", args: []string{"-t", "ext2"}},
	{name: "ext2-1k", probe: "ext2", args: []string{"-t", "ext2", "-b", "1024"}, far: true, index: true},
	{name: "inline", probe: "ext4", args: []string{"-O", "inline_data"}, inline: true},
	{name: "1k", probe: "ext4", args: []string{"-b", "1024"}},
	{name: "metabg", probe: "ext4", args: []string{"-O", "64bit,meta_bg,^resize_inode"}},
	{name: "64k", probe: "ext4", args: []string{"-b", "65536"}},
	{name: "nojournal-128", probe: "ext4", args: []string{"-O", "^has_journal", "-I", "128"}, index: true},
}

func (v variant) entries() []guesttest.Entry {
	es := guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		return !strings.HasPrefix(e.Path, "many/f") || e.Path < "many/f00300" || v.all && e.Path < "many/f01000"
	})
	if v.inline {
		for i, e := range es {
			if e.Path == "sparse" {
				es[i].Size = 2<<20 + 64<<10
				es[i].Holes = es[i].Holes[:1]
			}
		}
	}
	if v.far {
		es = append(es, farEntry)
	}
	return es
}

// image builds the variant's image (once) and returns its path.
var images sync.Map

func image(t testing.TB, v variant) string {
	t.Helper()
	needTools(t)
	type result struct {
		once sync.Once
		path string
		err  string
	}
	r, _ := images.LoadOrStore(v.name, &result{})
	res := r.(*result)
	res.once.Do(func() {
		src := tree(t, fmt.Sprint(v.all, v.far, v.inline), v.entries())
		img := filepath.Join(tmpRoot, v.name+".img")
		args := append([]string{"-q", "-F", "-N", "12000", "-d", src}, v.args...)
		if !slices.Contains(args, "-b") {
			// mke2fs would choose 1 KiB blocks for a small file system.
			args = append(args, "-b", "4096")
		}
		args = append(args, img, "128M")
		out, err := exec.Command("mkfs.ext4", args...).CombinedOutput()
		if err != nil {
			res.err = fmt.Sprintf("mkfs.ext4 %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		if v.index {
			// Exit status 1: the file system was modified.
			out, err := exec.Command("e2fsck", "-fyD", img).CombinedOutput()
			var ee *exec.ExitError
			if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
				res.err = fmt.Sprintf("e2fsck -fyD %s: %v\n%s", img, err, out)
				return
			}
		}
		res.path = img
	})
	if res.err != "" {
		t.Fatal(res.err)
	}
	return res.path
}

func TestVariants(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			img := image(t, v)
			fsys := guesttest.OpenFile(t, img, func(r io.ReaderAt, size int64) (guest.FS, error) {
				if got := Probe(r, size); got != v.probe {
					t.Errorf("Probe = %q, want %q", got, v.probe)
				}
				return Open(r, size)
			})
			if v.index {
				// e2fsck -D made "many" an htree, read linearly.
				if in := guesttest.Lookup(t, fsys, "many").(*node).in; in.flags&0x1000 == 0 {
					t.Errorf("many: not indexed (flags %#x)", in.flags)
				}
			}
			guesttest.Check(t, fsys, v.entries(), guesttest.Caps{
				Perm: true, Symlinks: true, HardLinks: true, MTime: time.Second, Sparse: true,
				Ignore: []string{"lost+found"},
			})
		})
	}
}

// TestInodeFields sets 32-bit ids, nanosecond and post-2038 times, a
// device node and a slow symbolic link with debugfs, and reads them back.
func TestInodeFields(t *testing.T) {
	t.Parallel()
	needTools(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(src, "b"), []byte("world"), 0o644)
	long := strings.Repeat("x/", 100) + "end"
	os.Symlink(long, filepath.Join(src, "slow"))
	for _, extra := range [][]string{nil, {"-t", "ext2"}, {"-O", "inline_data"}, {"-t", "ext2", "-O", "^filetype"}, {"-t", "ext2", "-r", "0"}} {
		// Revision 0 has 128-byte inodes: no nanoseconds (the high id bits
		// are in the 128 bytes).
		rev0 := slices.Contains(extra, "-r")
		img := filepath.Join(dir, fmt.Sprint("img", len(extra), extra))
		runTool(t, "mkfs.ext4", append(append([]string{"-q", "-F", "-d", src}, extra...), img, "8M")...)
		cmds := strings.Join([]string{
			"set_inode_field /a uid 123456",
			"set_inode_field /a gid 654321",
			"set_inode_field /a mtime 0x65000000",
			"set_inode_field /a mtime_extra 0x12345678",
			"set_inode_field /b mtime 0x10",
			"set_inode_field /b mtime_extra 0x5", // epoch bits 1: 2^32+16 s, 1 ns
			"mknod cdev c 4 300",
			"mknod bdev b 8 1",
		}, "\n")
		cf := filepath.Join(dir, "cmds")
		os.WriteFile(cf, []byte(cmds+"\n"), 0o644)
		runTool(t, "debugfs", "-w", "-f", cf, img)
		fsys := guesttest.OpenFile(t, img, Open)
		a := guesttest.Lookup(t, fsys, "a").Info()
		if rev0 {
			if want := time.Unix(0x65000000, 0); a.UID != 123456 || !a.ModTime.Equal(want) {
				t.Errorf("%v: a: uid %d mtime %v", extra, a.UID, a.ModTime)
			}
		} else if a.UID != 123456 || a.GID != 654321 {
			t.Errorf("%v: a: uid %d gid %d, want 123456 654321", extra, a.UID, a.GID)
		}
		if want := time.Unix(0x65000000, 0x12345678>>2); !rev0 && !a.ModTime.Equal(want) {
			t.Errorf("%v: a: mtime %v, want %v", extra, a.ModTime, want)
		}
		if got, want := guesttest.Lookup(t, fsys, "b").Info().ModTime, time.Unix(1<<32+16, 1); !rev0 && !got.Equal(want) {
			t.Errorf("%v: b: mtime %v, want %v", extra, got, want)
		}
		c := guesttest.Lookup(t, fsys, "cdev").Info()
		// glibc's makedev(4, 300).
		if want := uint64(4<<8 | 300&0xff | (300&^0xff)<<12); c.Rdev != want || c.Mode.Type() != os.ModeDevice|os.ModeCharDevice {
			t.Errorf("%v: cdev: rdev %#x mode %v, want %#x", extra, c.Rdev, c.Mode, want)
		}
		if b := guesttest.Lookup(t, fsys, "bdev").Info(); b.Rdev != 8<<8|1 || b.Mode.Type() != os.ModeDevice {
			t.Errorf("%v: bdev: rdev %#x mode %v", extra, b.Rdev, b.Mode)
		}
		if got, err := guesttest.Lookup(t, fsys, "slow").Readlink(); err != nil || got != long {
			t.Errorf("%v: slow link: %q, %v", extra, got, err)
		}
		r := guesttest.Lookup(t, fsys, "a")
		f, err := r.Open()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		if n, err := f.ReadAt(buf, 0); n != 5 || err != io.EOF || string(buf[:n]) != "hello" {
			t.Errorf("%v: a: ReadAt = %d %v %q", extra, n, err, buf[:n])
		}
		if _, err := r.ReadDir(); !errors.Is(err, guest.ErrNotDir) {
			t.Errorf("%v: ReadDir of a file: %v", extra, err)
		}
		if _, err := r.Readlink(); !errors.Is(err, guest.ErrNotLink) {
			t.Errorf("%v: Readlink of a file: %v", extra, err)
		}
		root, _ := fsys.Root()
		if _, err := root.Open(); !errors.Is(err, guest.ErrNotRegular) {
			t.Errorf("%v: Open of a directory: %v", extra, err)
		}
	}
}

// TestUnwritten preallocates blocks with debugfs's fallocate: they read
// as zeros and are no data.
func TestUnwritten(t *testing.T) {
	t.Parallel()
	needTools(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	data := bytes.Repeat([]byte("abcdefgh"), 512) // one 4 KiB block
	os.WriteFile(filepath.Join(src, "pre"), data, 0o644)
	img := filepath.Join(dir, "img")
	runTool(t, "mkfs.ext4", "-q", "-F", "-d", src, img, "8M")
	cf := filepath.Join(dir, "cmds")
	os.WriteFile(cf, []byte("fallocate /pre 1 15\nset_inode_field /pre size 65536\n"), 0o644)
	runTool(t, "debugfs", "-w", "-f", cf, img)
	fsys := guesttest.OpenFile(t, img, Open)
	f, err := guesttest.Lookup(t, fsys, "pre").Open()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 65536)
	if n, err := f.ReadAt(got, 0); n != len(got) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	want := append(append([]byte(nil), data...), make([]byte, 65536-len(data))...)
	if !bytes.Equal(got, want) {
		t.Errorf("preallocated blocks do not read as zeros")
	}
	s := f.(guest.Sparse)
	if a, b, err := s.Data(0); a != 0 || b != 4096 || err != nil {
		t.Errorf("Data(0) = %d, %d, %v, want 0, 4096", a, b, err)
	}
	if _, _, err := s.Data(4096); err != io.EOF {
		t.Errorf("Data(4096): %v, want EOF", err)
	}
}

func TestProbeAndOpenErrors(t *testing.T) {
	t.Parallel()
	zero := make([]byte, 8192)
	if got := Probe(bytes.NewReader(zero), int64(len(zero))); got != "" {
		t.Errorf("Probe(zeros) = %q", got)
	}
	if _, err := Open(bytes.NewReader(zero), int64(len(zero))); !errors.Is(err, guest.ErrCorrupt) {
		t.Errorf("Open(zeros): %v", err)
	}
	if _, err := Open(bytes.NewReader(zero[:100]), 100); !errors.Is(err, guest.ErrCorrupt) {
		t.Errorf("Open(short): %v", err)
	}
	needTools(t)
	img := filepath.Join(t.TempDir(), "img")
	runTool(t, "mkfs.ext4", "-q", "-F", "-O", "encrypt", img, "4M")
	b, _ := os.ReadFile(img)
	if _, err := Open(bytes.NewReader(b), int64(len(b))); err == nil || !strings.Contains(err.Error(), "encrypt") {
		t.Errorf("Open(encrypt): %v", err)
	}
	// A needs_recovery journal: read anyway.
	runTool(t, "mkfs.ext4", "-q", "-F", img, "4M")
	b, _ = os.ReadFile(img)
	b[1024+0x60] |= incompatRecover
	fsys, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Open(needs_recovery): %v", err)
	}
	if err := guesttest.Walk(fsys, 1<<20); err != nil {
		t.Errorf("Walk(needs_recovery): %v", err)
	}
}

// seeds are small images for FuzzOpen.
func seeds(t testing.TB) [][]byte {
	needTools(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "d", "e"), 0o755)
	os.WriteFile(filepath.Join(src, "small"), []byte("hello"), 0o644)
	os.WriteFile(filepath.Join(src, "d", "big"), bytes.Repeat([]byte("0123456789"), 3000), 0o644)
	os.Symlink("d/big", filepath.Join(src, "l"))
	os.Symlink(strings.Repeat("y", 80), filepath.Join(src, "slow"))
	for i := range 20 {
		os.WriteFile(filepath.Join(src, "d", "e", fmt.Sprintf("file-with-a-long-name-%03d", i)), nil, 0o644)
	}
	var out [][]byte
	for i, extra := range [][]string{
		{"-b", "1024", "-O", "^has_journal"},
		{"-t", "ext2", "-b", "1024"},
		{"-b", "1024", "-O", "^has_journal,inline_data"},
		{"-b", "1024", "-O", "^has_journal,64bit,meta_bg,^resize_inode"},
	} {
		img := filepath.Join(dir, fmt.Sprint(i))
		runTool(t, "mkfs.ext4", append(append([]string{"-q", "-F", "-N", "48", "-I", "256", "-d", src}, extra...), img, "96K")...)
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		// Without its zero tail (reads past the end are errors), a
		// smaller input for the fuzzer.
		n := len(bytes.TrimRight(b, "\x00"))
		out = append(out, b[:(n+1023)&^1023])
	}
	return out
}

func TestSeedsWalk(t *testing.T) {
	t.Parallel()
	for i, b := range seeds(t) {
		fsys, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if err := guesttest.Walk(fsys, 1<<22); err != nil {
			t.Errorf("seed %d: Walk: %v", i, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, b := range seeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		Probe(r, int64(len(b)))
		fsys, err := Open(r, int64(len(b)))
		if err != nil {
			return
		}
		guesttest.Walk(fsys, 1<<16)
	})
}

// countReader counts the reads of the device.
type countReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(1)
	if os.Getenv("LOGREADS") != "" {
		fmt.Println("read", off, len(p))
	}
	return c.r.ReadAt(p, off)
}

// TestReadCoalesced checks that a read over contiguous extents is one
// read of the device, and that the run cache serves sequential reads.
func TestReadCoalesced(t *testing.T) {
	t.Parallel()
	for _, v := range []variant{variants[0], variants[1]} {
		img := image(t, v)
		var c *countReader
		fsys := guesttest.OpenFile(t, img, func(r io.ReaderAt, size int64) (guest.FS, error) {
			c = &countReader{r: r}
			return Open(c, size)
		})
		ln := guesttest.Lookup(t, fsys, "large")
		file, err := ln.Open()
		if err != nil {
			t.Fatal(err)
		}
		// The data runs, from a mapper of its own.
		m := newMapper(ln.(*node).fs, ln.(*node).in)
		runs := int64(0)
		for l := uint64(0); l < uint64(file.Size()/m.fs.bs); runs++ {
			r, err := m.lookup(l)
			if err != nil {
				t.Fatal(err)
			}
			l += r.n
		}
		buf := make([]byte, file.Size())
		before := c.n.Load()
		if n, err := file.ReadAt(buf, 0); n != len(buf) || err != nil {
			t.Fatalf("%s: ReadAt = %d, %v", v.name, n, err)
		}
		reads := c.n.Load() - before
		// ext4: one read per extent (the extent root is in the inode);
		// ext3: one per run and at most 3 indirect blocks.
		max := map[string]int64{"ext4": runs, "ext3": 4 * runs}[v.name]
		if reads > max || v.name == "ext4" && runs > 4 {
			t.Errorf("%s: reading 8 MiB in %d runs took %d device reads, want at most %d", v.name, runs, reads, max)
		}
		want := make([]byte, len(buf))
		guesttest.Content("large", 0, want)
		if !bytes.Equal(buf, want) {
			t.Errorf("%s: content differs", v.name)
		}
	}
}

// BenchmarkReadLarge reads a 64 MiB file from an image file in 1 MiB
// reads ("ext4"), and as many bytes of the image file itself ("device"):
// the two should run at the same speed.
func BenchmarkReadLarge(b *testing.B) {
	needTools(b)
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	const size = 64 << 20
	guesttest.Write(b, src, []guesttest.Entry{{Path: "big", Mode: 0o644, Size: size, ModTime: guesttest.Epoch}})
	img := filepath.Join(dir, "img")
	runTool(b, "mkfs.ext4", "-q", "-F", "-d", src, img, "128M")
	var dev io.ReaderAt
	fsys := guesttest.OpenFile(b, img, func(r io.ReaderAt, size int64) (guest.FS, error) {
		dev = r
		return Open(r, size)
	})
	f, err := guesttest.Lookup(b, fsys, "big").Open()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	read := func(b *testing.B, r io.ReaderAt) {
		b.SetBytes(size)
		for range b.N {
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("ext4", func(b *testing.B) { read(b, f) })
	// The same bytes read straight from the image, for comparison.
	b.Run("device", func(b *testing.B) { read(b, dev) })
}

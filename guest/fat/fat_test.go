package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

var tmpDir string

func TestMain(m *testing.M) { guesttest.MainTempDir(m, &tmpDir, "", "fattest") }

// need skips the test when tool is missing (fails under CI=true).
func need(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: install the Debian package %s", tool, pkg)
		}
		t.Skipf("%s not found: install the Debian package %s", tool, pkg)
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C.UTF-8", "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// image is a test image built once.
type image struct {
	once    sync.Once
	path    string
	entries []guesttest.Entry
	err     string
}

var images = map[string]*image{"fat12": {}, "fat16": {}, "fat32": {}, "fat16-4k": {}}

// fatTree is the standard tree less what FAT cannot hold: symbolic and
// hard links; FAT12 also drops the 10,000-entry directory and the large
// file.
func fatTree(typ string) []guesttest.Entry {
	return guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		if e.Mode&fs.ModeSymlink != 0 || e.Link != "" {
			return false
		}
		// mcopy stores only the low 16 bits of characters outside the
		// BMP (U+1F600 becomes U+F600): TestSurrogates covers them.
		for _, r := range e.Path {
			if r > 0xFFFF {
				return false
			}
		}
		if typ == "fat12" || typ == "fat16-4k" {
			return e.Path != "many" && e.Path != "large"
		}
		return true
	})
}

// build returns the image of typ, made with mkfs.vfat and mcopy from the
// standard tree, with the directories' mtimes set (mcopy does not keep
// them).
func build(t testing.TB, typ string) (string, []guesttest.Entry) {
	t.Helper()
	need(t, "mkfs.vfat", "dosfstools")
	need(t, "mcopy", "mtools")
	im := images[typ]
	im.once.Do(func() {
		tt := &onceT{TB: t}
		func() {
			defer func() { recover() }()
			im.entries = fatTree(typ)
			src := filepath.Join(tmpDir, typ+"-src")
			if err := os.Mkdir(src, 0o755); err != nil {
				tt.Fatal(err)
			}
			guesttest.Write(tt, src, im.entries)
			im.path = filepath.Join(tmpDir, typ+".img")
			switch typ {
			case "fat12":
				run(tt, "mkfs.vfat", "-F", "12", "-C", im.path, "8000")
			case "fat16":
				run(tt, "mkfs.vfat", "-F", "16", "-C", im.path, "32000")
			case "fat16-4k":
				run(tt, "mkfs.vfat", "-F", "16", "-S", "4096", "-s", "1", "-C", im.path, "40000")
			case "fat32":
				run(tt, "mkfs.vfat", "-F", "32", "-s", "1", "-C", im.path, "66000")
			}
			names, _ := filepath.Glob(filepath.Join(src, "*"))
			run(tt, "mcopy", append([]string{"-s", "-m", "-i", im.path}, append(names, "::")...)...)
			setDirTimes(tt, im.path, im.entries)
		}()
		im.err = tt.msg
	})
	if im.err != "" {
		t.Fatal(im.err)
	}
	return im.path, im.entries
}

// onceT records the first failure of a build shared by several tests.
type onceT struct {
	testing.TB
	msg string
}

func (o *onceT) Fatal(args ...any) { o.msg = fmt.Sprint(args...); panic(o) }
func (o *onceT) Fatalf(f string, args ...any) {
	o.msg = fmt.Sprintf(f, args...)
	panic(o)
}
func (o *onceT) Helper() {}

// setDirTimes writes the directories' mtimes into their entries, found
// by Ino (the entry's byte offset).
func setDirTimes(t testing.TB, img string, entries []guesttest.Entry) {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	fsys, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Mode.IsDir() {
			continue
		}
		n := guesttest.Lookup(t, fsys, e.Path)
		u := e.ModTime.UTC()
		var b [4]byte
		binary.LittleEndian.PutUint16(b[0:], uint16(u.Hour()<<11|u.Minute()<<5|u.Second()/2))
		binary.LittleEndian.PutUint16(b[2:], uint16((u.Year()-1980)<<9|int(u.Month())<<5|u.Day()))
		if _, err := f.WriteAt(b[:], int64(n.Info().Ino)+22); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStandard(t *testing.T) {
	for _, typ := range []string{"fat12", "fat16", "fat32", "fat16-4k"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			img, entries := build(t, typ)
			want := strings.TrimSuffix(typ, "-4k")
			fsys := guesttest.OpenFile(t, img, func(r io.ReaderAt, size int64) (*FS, error) {
				if got := Probe(r, size); got != want {
					t.Errorf("Probe = %q, want %q", got, want)
				}
				return Open(r, size)
			})
			if fsys.Type() != want {
				t.Errorf("Type = %q, want %q", fsys.Type(), want)
			}
			guesttest.Check(t, fsys, entries, guesttest.Caps{MTime: 2 * time.Second})
		})
	}
}

// TestMtools compares the listing and contents with mdir and mtype.
func TestMtools(t *testing.T) {
	t.Parallel()
	need(t, "mdir", "mtools")
	img, _ := build(t, "fat16")
	fsys := guesttest.OpenFile(t, img, Open)
	root, _ := fsys.Root()
	cmd := exec.Command("mdir", "-/", "-b", "-i", img, "::")
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C.UTF-8", "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mdir: %v", err)
	}
	want := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		want[strings.TrimSuffix(strings.TrimPrefix(l, "::/"), "/")] = true
	}
	got := map[string]bool{}
	var walk func(string, guest.Node)
	walk = func(dir string, n guest.Node) {
		kids, err := n.ReadDir()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kids {
			p := dir + k.Info().Name
			got[p] = true
			if k.Info().Mode.IsDir() {
				walk(p+"/", k)
			}
		}
	}
	walk("", root)
	for p := range want {
		if !got[p] {
			t.Errorf("mdir lists %q, the reader does not", p)
		}
	}
	for p := range got {
		if !want[p] {
			t.Errorf("the reader lists %q, mdir does not", p)
		}
	}
	n := guesttest.Lookup(t, fsys, "dir/file")
	cmd = exec.Command("mtype", "-i", img, "::/dir/file")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	wantData, err := cmd.Output()
	if err != nil {
		t.Fatalf("mtype: %v", err)
	}
	f, _ := n.Open()
	data := make([]byte, f.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, wantData) {
		t.Error("dir/file differs from mtype's")
	}
}

// countingReader counts ReadAt calls.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(1)
	return c.r.ReadAt(p, off)
}

// TestCoalesce checks that a contiguous file is read with one device read.
func TestCoalesce(t *testing.T) {
	t.Parallel()
	img, _ := build(t, "fat32")
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{r: bytes.NewReader(data)}
	fsys, err := Open(cr, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	n := guesttest.Lookup(t, fsys, "large")
	f, err := n.Open()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, f.Size())
	before := cr.n.Load()
	if k, err := f.ReadAt(buf, 0); k != len(buf) || err != nil {
		t.Fatalf("ReadAt = %d, %v", k, err)
	}
	// 16,384 clusters of 512 bytes: 64 KiB of FAT (4 cache pieces) and
	// one read of the data.
	if got := cr.n.Load() - before; got > 6 {
		t.Errorf("reading 8 MiB took %d device reads, want at most 6", got)
	}
	want := make([]byte, len(buf))
	guesttest.Content("large", 0, want)
	if !bytes.Equal(buf, want) {
		t.Error("large: wrong content")
	}
	// Random reads backwards use the checkpoints and stay correct.
	for _, off := range []int64{7 << 20, 3<<20 + 17, 100, 5<<20 - 1} {
		p := make([]byte, 70000)
		if _, err := f.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, want[off:off+70000]) {
			t.Errorf("read at %d: wrong content", off)
		}
	}
}

func BenchmarkReadLarge(b *testing.B) {
	img, _ := build(b, "fat32")
	fsys := guesttest.OpenFile(b, img, Open)
	n := guesttest.Lookup(b, fsys, "large")
	f, err := n.Open()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(f.Size())
	for b.Loop() {
		for off := int64(0); off < f.Size(); off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

// smallImg is a small image built with mkfs.vfat and mcopy: long
// names, a subdirectory, a few clusters of data, a read-only file.
type smallImg struct {
	once sync.Once
	data []byte
	err  string
}

var smalls = map[string]*smallImg{"12": {}, "12tiny": {}, "32": {}}

// small returns a FAT12 image of 256 KiB (bits "12"), a dense FAT12 one
// of 48 KiB with one FAT and 32 root entries (bits "12tiny", for the
// fuzzer), or an empty FAT32 one of 400 KiB with 512-byte clusters
// (bits "32").
func small(t testing.TB, bits string) []byte {
	t.Helper()
	need(t, "mkfs.vfat", "dosfstools")
	need(t, "mcopy", "mtools")
	si := smalls[bits]
	si.once.Do(func() {
		tt := &onceT{TB: t}
		func() {
			defer func() { recover() }()
			dir := filepath.Join(tmpDir, "small"+bits+"-src")
			if err := os.Mkdir(dir, 0o755); err != nil {
				tt.Fatal(err)
			}
			guesttest.Write(tt, dir, []guesttest.Entry{
				{Path: "a long name.txt", Mode: 0o644, Size: 3000, ModTime: guesttest.Epoch},
				{Path: "sub", Mode: fs.ModeDir | 0o755, ModTime: guesttest.Epoch},
				{Path: "sub/Ünïcödé", Mode: 0o644, Size: 10, ModTime: guesttest.Epoch},
				{Path: "sub/f", Mode: 0o644, Size: 0, ModTime: guesttest.Epoch},
				{Path: "sub/deeper", Mode: fs.ModeDir | 0o755, ModTime: guesttest.Epoch},
				{Path: "sub/deeper/x", Mode: 0o644, Size: 1200, ModTime: guesttest.Epoch},
				{Path: "UPPER.TXT", Mode: 0o444, Size: 5, ModTime: guesttest.Epoch},
			})
			img := filepath.Join(tmpDir, "small"+bits+".img")
			if bits == "32" {
				// mtools reads FAT32 volumes of fewer than 65,525
				// clusters as FAT16, so this one stays empty but for
				// its label.
				run(tt, "mkfs.vfat", "-F", "32", "-s", "1", "-n", "LABEL", "-C", img, "400")
				si.data, _ = os.ReadFile(img)
				return
			}
			if bits == "12tiny" {
				run(tt, "mkfs.vfat", "-F", "12", "-f", "1", "-r", "32", "-s", "1", "-n", "LABEL", "-C", img, "48")
			} else {
				run(tt, "mkfs.vfat", "-F", "12", "-n", "LABEL", "-C", img, "256")
			}
			names, _ := filepath.Glob(filepath.Join(dir, "*"))
			run(tt, "mcopy", append([]string{"-s", "-m", "-i", img}, append(names, "::")...)...)
			run(tt, "mattrib", "-i", img, "+r", "::/UPPER.TXT")
			si.data, _ = os.ReadFile(img)
		}()
		si.err = tt.msg
	})
	if si.err != "" {
		t.Fatal(si.err)
	}
	return bytes.Clone(si.data)
}

func FuzzOpen(f *testing.F) {
	// The seeds are cut to their first 64 KiB (the metadata and the
	// files: reads past the end are errors), so that the fuzzer's
	// mutations land on structures.
	for _, bits := range []string{"12", "12tiny", "32"} {
		img := small(f, bits)
		f.Add(img[:min(len(img), 64<<10)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		Probe(r, int64(len(data)))
		fsys, err := Open(r, int64(len(data)))
		if err != nil {
			return
		}
		_ = guesttest.Walk(fsys, 4<<20)
	})
}

// entryOf returns the byte offset of the 8.3 entry of p in img.
func entryOf(t *testing.T, img []byte, p string) (guest.Node, int64) {
	t.Helper()
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	n := guesttest.Lookup(t, fsys, p)
	return n, int64(n.Info().Ino)
}

func readAll(img []byte, p string) error {
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		return err
	}
	n, err := guesttest.LookupErr(fsys, p)
	if err != nil {
		return err
	}
	if n.Info().Mode.IsDir() {
		_, err = n.ReadDir()
		return err
	}
	fl, err := n.Open()
	if err != nil {
		return err
	}
	_, err = fl.ReadAt(make([]byte, fl.Size()), 0)
	return err
}

// setFAT12 sets FAT12 entry c in every FAT of img.
func setFAT12(img []byte, c, val uint32) {
	bps := int(binary.LittleEndian.Uint16(img[11:]))
	fatOff := int(binary.LittleEndian.Uint16(img[14:])) * bps
	fatLen := int(binary.LittleEndian.Uint16(img[22:])) * bps
	for k := range int(img[16]) {
		o := fatOff + k*fatLen + int(c+c/2)
		w := binary.LittleEndian.Uint16(img[o:])
		if c&1 == 0 {
			w = w&0xF000 | uint16(val)
		} else {
			w = w&0x000F | uint16(val)<<4
		}
		binary.LittleEndian.PutUint16(img[o:], w)
	}
}

// TestSmallFAT32 reads a FAT32 volume of fewer than 65,525 clusters.
func TestSmallFAT32(t *testing.T) {
	t.Parallel()
	img := small(t, "32")
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if fsys.Type() != "fat32" {
		t.Errorf("Type %q", fsys.Type())
	}
	root, _ := fsys.Root()
	if kids, err := root.ReadDir(); err != nil || len(kids) != 0 {
		t.Errorf("root: %d entries, %v; want none (the label is skipped)", len(kids), err)
	}
}

func TestSmall(t *testing.T) {
	t.Parallel()
	img, typ := small(t, "12"), "fat12"
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if fsys.Type() != typ {
		t.Errorf("Type %q, want %q", fsys.Type(), typ)
	}
	root, _ := fsys.Root()
	kids, err := root.ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range kids {
		names = append(names, k.Info().Name)
	}
	// The volume label is skipped.
	if got := strings.Join(names, ","); got != "a long name.txt,sub,UPPER.TXT" && got != "a long name.txt,UPPER.TXT,sub" &&
		got != "UPPER.TXT,a long name.txt,sub" && got != "UPPER.TXT,sub,a long name.txt" &&
		got != "sub,a long name.txt,UPPER.TXT" && got != "sub,UPPER.TXT,a long name.txt" {
		t.Errorf("root lists %q", got)
	}
	n, _ := guesttest.LookupErr(fsys, "UPPER.TXT")
	if m := n.Info().Mode; m != 0o444 {
		t.Errorf("read-only file: mode %v", m)
	}
	if mt := n.Info().ModTime; !mt.Equal(guesttest.Epoch) {
		t.Errorf("mtime %v, want %v", mt, guesttest.Epoch)
	}
	if _, err := n.Readlink(); !errors.Is(err, guest.ErrNotLink) {
		t.Errorf("Readlink: %v", err)
	}
	if err := guesttest.Walk(fsys, 1<<20); err != nil {
		t.Error(err)
	}
	registered := false
	for _, f := range guest.Filesystems() {
		if f.Name == "fat" {
			registered = true
			if p := f.Probe(bytes.NewReader(img), int64(len(img))); p != "fat12" {
				t.Errorf("registered Probe = %q", p)
			}
			if _, err := f.Open(bytes.NewReader(img), int64(len(img))); err != nil {
				t.Errorf("registered Open: %v", err)
			}
			if fs, err := f.Open(bytes.NewReader(img[:100]), 100); err == nil || fs != nil {
				t.Errorf("registered Open of 100 bytes: %v, %v", fs, err)
			}
		}
	}
	if !registered {
		t.Error("fat is not registered")
	}
}

func TestCorrupt(t *testing.T) {
	t.Parallel()
	base := small(t, "12")
	_, _ = entryOf(t, base, "a long name.txt")
	clusterOf := func(img []byte, off int64) uint32 { return uint32(binary.LittleEndian.Uint16(img[off+26:])) }

	t.Run("loop", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "a long name.txt")
		c := clusterOf(img, off)
		setFAT12(img, c, c) // cluster follows itself
		if err := readAll(img, "a long name.txt"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("looping chain: %v", err)
		} else {
			t.Log(err)
		}
	})
	t.Run("long", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "UPPER.TXT")
		c := clusterOf(img, off)
		setFAT12(img, c, 100)
		setFAT12(img, 100, 0xFFF)
		if err := readAll(img, "UPPER.TXT"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("chain longer than the size: %v", err)
		} else {
			t.Log(err)
		}
	})
	t.Run("short", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "a long name.txt")
		setFAT12(img, clusterOf(img, off), 0xFFF)
		if err := readAll(img, "a long name.txt"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("chain shorter than the size: %v", err)
		} else {
			t.Log(err)
		}
	})
	t.Run("free", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "a long name.txt")
		setFAT12(img, clusterOf(img, off), 0)
		if err := readAll(img, "a long name.txt"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("free cluster in a chain: %v", err)
		}
	})
	t.Run("size", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "a long name.txt")
		binary.LittleEndian.PutUint32(img[off+28:], 0xFFFFFFFF)
		if err := readAll(img, "a long name.txt"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("size past the cluster count: %v", err)
		} else {
			t.Log(err)
		}
	})
	t.Run("dirloop", func(t *testing.T) {
		img := bytes.Clone(base)
		_, subOff := entryOf(t, img, "sub")
		_, off := entryOf(t, img, "sub/deeper")
		copy(img[off+26:off+28], img[subOff+26:subOff+28]) // deeper is sub
		if err := readAll(img, "sub/deeper"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("directory loop: %v", err)
		} else {
			t.Log(err)
		}
	})
	t.Run("dirchain", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "sub")
		c := clusterOf(img, off)
		// Fill the directory with deleted entries, then make it loop.
		fsys, _ := Open(bytes.NewReader(img), int64(len(img)))
		co := fsys.v.clusterOff(c)
		for i := co; i < co+fsys.v.cs; i += 32 {
			img[i] = 0xE5
		}
		setFAT12(img, c, c)
		if err := readAll(img, "sub"); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("looping directory chain: %v", err)
		} else {
			t.Log(err)
		}
	})
	t.Run("checksum", func(t *testing.T) {
		img := bytes.Clone(base)
		_, off := entryOf(t, img, "a long name.txt")
		img[off-32+13]++ // the last long-name slot's checksum
		fsys, _ := Open(bytes.NewReader(img), int64(len(img)))
		root, _ := fsys.Root()
		kids, _ := root.ReadDir()
		found := false
		for _, k := range kids {
			if k.Info().Ino == uint64(off) {
				found = true
				if name := k.Info().Name; name != "ALONGN~1.TXT" {
					t.Errorf("checksum mismatch: name %q, want the short name", name)
				}
			}
		}
		if !found {
			t.Error("entry lost")
		}
	})
	t.Run("bpb", func(t *testing.T) {
		for _, c := range []struct {
			off int
			val []byte
		}{
			{11, []byte{0, 3}},       // 768 bytes per sector
			{11, []byte{0, 0x20}},    // 8192
			{13, []byte{3}},          // sectors per cluster
			{14, []byte{0, 0}},       // reserved
			{16, []byte{0}},          // FATs
			{17, []byte{0, 0}},       // root entries on FAT12
			{19, []byte{0, 0}},       // total sectors
			{22, []byte{0, 0}},       // FAT size
			{22, []byte{0xff, 0}},    // FAT bigger than the disk
			{19, []byte{0xff, 0xff}}, // data area past the end
		} {
			img := bytes.Clone(base)
			copy(img[c.off:], c.val)
			if _, err := Open(bytes.NewReader(img), int64(len(img))); !errors.Is(err, guest.ErrCorrupt) {
				t.Errorf("bytes %x at %d: %v", c.val, c.off, err)
			}
			if p := Probe(bytes.NewReader(img), int64(len(img))); p != "" {
				t.Errorf("bytes %x at %d: Probe = %q", c.val, c.off, p)
			}
		}
	})
	t.Run("probe", func(t *testing.T) {
		for _, c := range []struct {
			off int
			val string
		}{{3, "EXFAT   "}, {3, "NTFS    "}, {510, "\x00\x00"}, {21, "\x12"}} {
			img := bytes.Clone(base)
			copy(img[c.off:], c.val)
			if p := Probe(bytes.NewReader(img), int64(len(img))); p != "" {
				t.Errorf("%q at %d: Probe = %q", c.val, c.off, p)
			}
		}
		if p := Probe(bytes.NewReader(base), int64(len(base))); p != "fat12" {
			t.Errorf("Probe = %q", p)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		img := base[:len(base)/2]
		fsys, err := Open(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			return
		}
		if err := guesttest.Walk(fsys, 1<<20); err != nil && !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("truncated: %v", err)
		}
	})
}

func TestDosTime(t *testing.T) {
	// 2024-06-10 06:13:21.37: date (44<<9 | 6<<5 | 10), time (6<<11 | 13<<5 | 10), 10 ms count 137.
	got := dosTime(44<<9|6<<5|10, 6<<11|13<<5|10, 137)
	if want := time.Date(2024, 6, 10, 6, 13, 21, 370e6, time.UTC); !got.Equal(want) {
		t.Errorf("dosTime = %v, want %v", got, want)
	}
	if !dosTime(0, 0, 0).IsZero() || !dosTime(44<<9|13<<5|1, 0, 0).IsZero() {
		t.Error("invalid dates are not zero")
	}
}

func TestShortName(t *testing.T) {
	e := make([]byte, 32)
	copy(e, "README  TXT")
	e[12] = 0x08
	if got := shortName(e); got != "readme.TXT" {
		t.Errorf("got %q", got)
	}
	e[12] = 0x18
	if got := shortName(e); got != "readme.txt" {
		t.Errorf("got %q", got)
	}
	copy(e, "\x05\x82T     A  ")
	e[12] = 0
	if got := shortName(e); got != "σéT.A" {
		t.Errorf("got %q", got)
	}
}

func Example() {
	img, err := os.Open("disk.img")
	if err != nil {
		return
	}
	defer img.Close()
	st, _ := img.Stat()
	fsys, err := Open(img, st.Size())
	if err != nil {
		fmt.Println(err)
		return
	}
	root, _ := fsys.Root()
	nodes, err := root.ReadDir()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range nodes {
		fmt.Println(n.Info().Name, n.Info().Size)
	}
}

// TestSurrogates checks a long name outside the BMP, its slots written
// here (mtools cannot).
func TestSurrogates(t *testing.T) {
	short := []byte("EMOJI-~1TXT")
	sum := checksum(short)
	u := utf16.Encode([]rune("emoji-😀-long.txt"))
	u = append(u, 0)
	for len(u)%13 != 0 {
		u = append(u, 0xFFFF)
	}
	var dir []byte
	nslots := len(u) / 13
	for s := nslots; s >= 1; s-- {
		e := make([]byte, 32)
		e[0] = byte(s)
		if s == nslots {
			e[0] |= 0x40
		}
		e[11], e[13] = attrLFN, sum
		c := u[(s-1)*13 : s*13]
		for k := range 5 {
			binary.LittleEndian.PutUint16(e[1+2*k:], c[k])
		}
		for k := range 6 {
			binary.LittleEndian.PutUint16(e[14+2*k:], c[5+k])
		}
		for k := range 2 {
			binary.LittleEndian.PutUint16(e[28+2*k:], c[11+k])
		}
		dir = append(dir, e...)
	}
	e := make([]byte, 32)
	copy(e, short)
	dir = append(dir, e...)
	v := &volume{typ: "fat32", bits: 32}
	d := dirParser{n: &node{v: v, path: "/", root: true}}
	if err := d.parse(dir, 1000); err != nil {
		t.Fatal(err)
	}
	if len(d.nodes) != 1 || d.nodes[0].Info().Name != "emoji-😀-long.txt" {
		t.Fatalf("nodes %v", d.nodes)
	}
	if ino := d.nodes[0].Info().Ino; ino != 1000+uint64(nslots)*32 {
		t.Errorf("Ino %d", ino)
	}
	// Slots out of order: the short name.
	dir[0], dir[32] = dir[32]|0x40, dir[0]&^0x40
	d = dirParser{n: d.n}
	if err := d.parse(dir, 1000); err != nil {
		t.Fatal(err)
	}
	if len(d.nodes) != 1 || d.nodes[0].Info().Name != "EMOJI-~1.TXT" {
		t.Fatalf("slots out of order: %q", d.nodes[0].Info().Name)
	}
}

// TestFAT32Loop makes the FAT32 root directory's chain loop, with the
// reserved top 4 bits of the FAT entry set (they are ignored).
func TestFAT32Loop(t *testing.T) {
	t.Parallel()
	img := small(t, "32")
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	v := fsys.v
	co := v.clusterOff(v.rootClu)
	for i := co; i < co+v.cs; i += 32 {
		img[i] = 0xE5
	}
	binary.LittleEndian.PutUint32(img[v.fatOff+4*int64(v.rootClu):], 0xF0000000|v.rootClu)
	fsys, _ = Open(bytes.NewReader(img), int64(len(img)))
	root, _ := fsys.Root()
	if _, err := root.ReadDir(); !errors.Is(err, guest.ErrCorrupt) {
		t.Errorf("looping root chain: %v", err)
	} else {
		t.Log(err)
	}
	// A root cluster past the clusters is refused at Open.
	binary.LittleEndian.PutUint32(img[44:], v.nclu+2)
	if _, err := Open(bytes.NewReader(img), int64(len(img))); !errors.Is(err, guest.ErrCorrupt) {
		t.Errorf("root cluster past the end: %v", err)
	}
}

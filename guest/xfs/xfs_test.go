package xfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// needTool skips the test when a tool is missing, or fails it under CI.
func needTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: install the Debian package %s", tool, pkg)
		}
		t.Skipf("%s not found: install the Debian package %s", tool, pkg)
	}
}

// imageDir holds the images the tests build, once each.
var (
	imageDir     string
	imageDirOnce sync.Once
	imageDirErr  error
	imageMu      sync.Mutex
	imageOnce    = map[string]*imageResult{}
)

type imageResult struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

// makeImageDir creates imageDir, once: on a memory file system where
// there is one, as mkfs.xfs writes its images with O_DIRECT.
func makeImageDir() error {
	imageDirOnce.Do(func() {
		tmp := ""
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			tmp = "/dev/shm"
		}
		imageDir, imageDirErr = os.MkdirTemp(tmp, "xfs-test-")
	})
	return imageDirErr
}

// owner returns the uid and gid the test images give the entry at p.
func owner(p string) (uint32, uint32) {
	var h uint32
	for _, c := range []byte(p) {
		h = h*31 + uint32(c)
	}
	return 1000 + h%7, 100 + h%5
}

// protoName reports whether a name can be written in a protofile, whose
// tokens are separated by white space and where ':' starts a comment.
func protoName(name string) bool {
	return name != "$" && !strings.ContainsAny(name, " \t\n:")
}

// protofile writes the mkfs.xfs protofile for entries materialized under
// src, plus extra lines (a protofile fragment) at the root.
func protofile(entries []guesttest.Entry, src, extra string) string {
	children := map[string][]guesttest.Entry{}
	for _, e := range entries {
		d := path.Dir(e.Path)
		if d == "." {
			d = ""
		}
		children[d] = append(children[d], e)
	}
	var b strings.Builder
	b.WriteString("vmaconv\n0 0\nd--755 0 0\n")
	var dir func(d string, depth int)
	dir = func(d string, depth int) {
		ind := strings.Repeat(" ", depth)
		for _, e := range children[d] {
			uid, gid := owner(e.Path)
			perm := e.Mode
			u, g := "-", "-"
			if perm&fs.ModeSetuid != 0 {
				u = "u"
			}
			if perm&fs.ModeSetgid != 0 {
				g = "g"
			}
			mode := fmt.Sprintf("%s%s%03o %d %d", u, g, perm&0o777, uid, gid)
			name := path.Base(e.Path)
			switch {
			case e.Mode.IsDir():
				fmt.Fprintf(&b, "%s%s d%s\n", ind, name, mode)
				dir(e.Path, depth+1)
				fmt.Fprintf(&b, "%s$\n", ind)
			case e.Mode&fs.ModeSymlink != 0:
				fmt.Fprintf(&b, "%s%s l%s %s\n", ind, name, mode, e.Target)
			default:
				fmt.Fprintf(&b, "%s%s -%s %s\n", ind, name, mode, filepath.Join(src, filepath.FromSlash(e.Path)))
			}
		}
	}
	dir("", 1)
	b.WriteString(extra)
	b.WriteString("$\n")
	return b.String()
}

// sources holds the source trees written, by their first entry's path
// and their length.
var sources = map[string]*imageResult{}

// source writes entries to a host directory, once, and returns it.
func source(t testing.TB, entries []guesttest.Entry) (string, error) {
	key := fmt.Sprintf("%s-%d", entries[0].Path, len(entries))
	imageMu.Lock()
	r := sources[key]
	if r == nil {
		r = &imageResult{}
		sources[key] = r
	}
	imageMu.Unlock()
	r.once.Do(func() {
		if r.err = makeImageDir(); r.err != nil {
			return
		}
		r.path = filepath.Join(imageDir, fmt.Sprintf("src%d", len(sources)))
		if r.err = os.Mkdir(r.path, 0o755); r.err == nil {
			guesttest.Write(t, r.path, entries)
		}
	})
	return r.path, r.err
}

// image builds (once) an XFS image named name from entries with the
// given mkfs.xfs options and returns its path.
func image(t testing.TB, name string, entries []guesttest.Entry, extra string, opts ...string) string {
	t.Helper()
	needTool(t, "mkfs.xfs", "xfsprogs")
	imageMu.Lock()
	r := imageOnce[name]
	if r == nil {
		r = &imageResult{}
		imageOnce[name] = r
	}
	imageMu.Unlock()
	r.once.Do(func() {
		src, err := source(t, entries)
		if err != nil {
			r.err = err
			return
		}
		proto := filepath.Join(imageDir, name+".proto")
		if err := os.WriteFile(proto, []byte(protofile(entries, src, extra)), 0o644); err != nil {
			r.err = err
			return
		}
		img := filepath.Join(imageDir, name+".img")
		f, err := os.Create(img)
		if err == nil {
			err = f.Truncate(300 << 20)
			f.Close()
		}
		if err != nil {
			r.err = err
			return
		}
		args := append([]string{"-q", "-f", "-p", proto}, opts...)
		if out, err := exec.Command("mkfs.xfs", append(args, img)...).CombinedOutput(); err != nil {
			r.err = fmt.Errorf("mkfs.xfs %s: %v: %s", strings.Join(opts, " "), err, out)
			return
		}
		r.path = img
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}

// openImage opens the image at p.
func openImage(t testing.TB, p string) *FS {
	t.Helper()
	return guesttest.OpenFile(t, p, func(r io.ReaderAt, size int64) (*FS, error) {
		if got := Probe(r, size); got != "xfs" {
			return nil, fmt.Errorf("Probe = %q, want \"xfs\"", got)
		}
		return Open(r, size)
	})
}

// dirSizes are extra directories sized for each directory format.
var dirSizes = map[string]int{"fmt-sf": 3, "fmt-block": 40, "fmt-leaf": 300, "fmt-node": 1200}

// standard returns the standard tree as a protofile can hold it (no hard
// links, no names with spaces), plus directories of every format and long
// symbolic links (remote, over one and two blocks of 1 KiB).
func standard() []guesttest.Entry {
	es := guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		return e.Link == "" && protoName(path.Base(e.Path))
	})
	for _, d := range []string{"fmt-sf", "fmt-block", "fmt-leaf", "fmt-node"} {
		es = append(es, guesttest.Entry{Path: d, Mode: fs.ModeDir | 0o750})
		for i := range dirSizes[d] {
			es = append(es, guesttest.Entry{Path: fmt.Sprintf("%s/entry-with-a-longer-name-%04d", d, i), Mode: 0o644})
		}
	}
	es = append(es,
		guesttest.Entry{Path: "link-600", Mode: fs.ModeSymlink | 0o777, Target: strings.Repeat("0123456789/", 55)[:600]},
		guesttest.Entry{Path: "link-1500", Mode: fs.ModeSymlink | 0o777, Target: strings.Repeat("abcdefghi/", 150)},
		guesttest.Entry{Path: "setgid", Mode: fs.ModeSetgid | 0o750, Size: 3})
	return es
}

// devices is a protofile fragment with device nodes and a fifo, under
// "devs" at the root.
const devices = " devs d--755 0 0\n  null c--666 0 0 1 3\n  sda b--660 0 6 8 0\n  big c--600 0 0 300 70000\n  fifo p--644 0 0\n $\n"

// variants are the mkfs.xfs option sets the tests cover.
var variants = []struct {
	name string
	opts []string
}{
	{"v5", []string{"-i", "nrext64=1"}},
	{"v5-1k", []string{"-b", "size=1024", "-m", "bigtime=0", "-i", "nrext64=0"}},
	{"v4-dir8k", []string{"-m", "crc=0", "-n", "size=8192"}},
}

var caps = guesttest.Caps{Perm: true, Symlinks: true, Ignore: []string{"devs"}}

func TestStandard(t *testing.T) {
	es := standard()
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			fsys := openImage(t, image(t, v.name, es, devices, v.opts...))
			c := caps
			c.Ignore = slices.Concat(c.Ignore, bigDirs)
			for _, d := range bigDirs {
				checkListing(t, fsys, es, d)
			}
			guesttest.Check(t, fsys, guesttest.Filter(es, func(e guesttest.Entry) bool {
				return !slices.Contains(bigDirs, e.Path)
			}), c)
			checkOwners(t, fsys)
			checkDevices(t, fsys)
		})
	}
}

// bigDirs are the directories of empty files that TestStandard checks
// with checkListing rather than guesttest.Check, which costs 2 MiB of
// allocations for each file.
var bigDirs = []string{"many", "fmt-leaf", "fmt-node"}

// checkListing checks the listing of directory dir, whose entries are
// empty files with mode 0644.
func checkListing(t *testing.T, fsys guest.FS, es []guesttest.Entry, dir string) {
	want := map[string]bool{}
	for _, e := range es {
		if path.Dir(e.Path) == dir {
			want[path.Base(e.Path)] = true
		}
	}
	nodes, err := guesttest.Lookup(t, fsys, dir).ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		i := n.Info()
		if i.Size != 0 || i.Mode != 0o644 || seen[i.Name] || !want[i.Name] {
			t.Fatalf("%s/%s: %v %d", dir, i.Name, i.Mode, i.Size)
		}
		seen[i.Name] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("%s: %d entries, want %d", dir, len(seen), len(want))
	}
}

// checkOwners checks every node's uid and gid.
func checkOwners(t *testing.T, fsys guest.FS) {
	root, err := fsys.Root()
	if err != nil {
		t.Fatal(err)
	}
	var walk func(dir string, n guest.Node)
	walk = func(dir string, n guest.Node) {
		nodes, err := n.ReadDir()
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range nodes {
			i := ch.Info()
			p := path.Join(dir, i.Name)
			if p == "devs" {
				continue
			}
			if uid, gid := owner(p); i.UID != uid || i.GID != gid {
				t.Fatalf("%s: uid %d gid %d, want %d %d", p, i.UID, i.GID, uid, gid)
			}
			if i.Ino == 0 || i.Nlink == 0 || i.ModTime.IsZero() {
				t.Fatalf("%s: %+v", p, i)
			}
			if i.Mode.IsDir() {
				walk(p, ch)
			}
		}
	}
	walk("", root)
}

// checkDevices checks the device nodes and fifo under "devs".
func checkDevices(t *testing.T, fsys guest.FS) {
	n := guesttest.Lookup(t, fsys, "devs")
	nodes, err := n.ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		mode fs.FileMode
		rdev uint64
		gid  uint32
	}{
		"null": {fs.ModeDevice | fs.ModeCharDevice | 0o666, 1<<8 | 3, 0},
		"sda":  {fs.ModeDevice | 0o660, 8 << 8, 6},
		"big":  {fs.ModeDevice | fs.ModeCharDevice | 0o600, (300&0xfff)<<8 | (70000&0xff | (70000&^0xff)<<12), 0},
		"fifo": {fs.ModeNamedPipe | 0o644, 0, 0},
	}
	if len(nodes) != len(want) {
		t.Fatalf("devs: %d entries, want %d", len(nodes), len(want))
	}
	for _, ch := range nodes {
		i := ch.Info()
		w := want[i.Name]
		if i.Mode != w.mode || i.Rdev != w.rdev || i.GID != w.gid {
			t.Errorf("devs/%s: mode %v rdev %#x gid %d, want %v %#x %d", i.Name, i.Mode, i.Rdev, i.GID, w.mode, w.rdev, w.gid)
		}
		if _, err := ch.Open(); !errors.Is(err, guest.ErrNotRegular) {
			t.Errorf("devs/%s: Open: %v", i.Name, err)
		}
		if _, err := ch.ReadDir(); !errors.Is(err, guest.ErrNotDir) {
			t.Errorf("devs/%s: ReadDir: %v", i.Name, err)
		}
		if _, err := ch.Readlink(); !errors.Is(err, guest.ErrNotLink) {
			t.Errorf("devs/%s: Readlink: %v", i.Name, err)
		}
	}
}

// dirFormat names the format of directory ino: "shortform", "block",
// "leaf" or "node", with "+btree" when its data fork is a B+tree.
func dirFormat(f *FS, ino uint64) (string, error) {
	ip, err := f.inode(ino)
	if err != nil {
		return "", err
	}
	if ip.format == fmtLocal {
		return "shortform", nil
	}
	suffix := ""
	if ip.format == fmtBtree {
		suffix = "+btree"
	}
	m := &bmap{fs: f, ip: ip}
	fb := uint64(leafOffset) >> f.sb.blockLog
	e, ok, err := m.find(fb)
	if err != nil {
		return "", err
	}
	if !ok || e.off > fb {
		return "block" + suffix, nil
	}
	b := make([]byte, 16)
	phys, _ := f.sb.fsbPos(e.blk, e.n)
	if err := f.read(b, phys+int64(fb-e.off)<<f.sb.blockLog); err != nil {
		return "", err
	}
	switch be.Uint16(b[8:]) {
	case 0x3df1, 0xd2f1:
		return "leaf" + suffix, nil
	case 0x3ebe, 0xfebe:
		return "node" + suffix, nil
	}
	return "", fmt.Errorf("leaf block magic %#x", be.Uint16(b[8:]))
}

// TestDirFormats checks that the test images hold directories of every
// format, and a B+tree data fork.
func TestDirFormats(t *testing.T) {
	es := standard()
	seen := map[string]bool{}
	for _, v := range variants {
		fsys := openImage(t, image(t, v.name, es, devices, v.opts...))
		for _, p := range []string{"dir", "fmt-sf", "fmt-block", "fmt-leaf", "fmt-node", "many"} {
			f, err := dirFormat(fsys, guesttest.Lookup(t, fsys, p).Info().Ino)
			if err != nil {
				t.Fatalf("%s: %s: %v", v.name, p, err)
			}
			t.Logf("%s: %s: %s", v.name, p, f)
			seen[strings.TrimSuffix(f, "+btree")] = true
			seen["btree"] = seen["btree"] || strings.HasSuffix(f, "+btree")
		}
	}
	for _, f := range []string{"shortform", "block", "leaf", "node", "btree"} {
		if !seen[f] {
			t.Errorf("no directory in %s format", f)
		}
	}
}

// TestBmapXfsDB compares the block map of B+tree format directories with
// what xfs_db reports.
func TestBmapXfsDB(t *testing.T) {
	needTool(t, "xfs_db", "xfsprogs")
	es := standard()
	re := regexp.MustCompile(`data offset (\d+) startblock (\d+) \(\d+/\d+\) count (\d+) flag (\d)`)
	tested := 0
	for _, v := range variants {
		img := image(t, v.name, es, devices, v.opts...)
		fsys := openImage(t, img)
		for _, p := range []string{"many", "fmt-node", "large"} {
			ino := guesttest.Lookup(t, fsys, p).Info().Ino
			ip, err := fsys.inode(ino)
			if err != nil {
				t.Fatal(err)
			}
			if ip.format != fmtBtree && p != "large" {
				continue
			}
			tested++
			out, err := exec.Command("xfs_db", "-r", "-c", "inode "+strconv.FormatUint(ino, 10), "-c", "bmap", img).CombinedOutput()
			if err != nil {
				t.Fatalf("xfs_db: %v: %s", err, out)
			}
			m := &bmap{fs: fsys, ip: ip}
			var fb uint64
			for _, l := range re.FindAllStringSubmatch(string(out), -1) {
				off, _ := strconv.ParseUint(l[1], 10, 64)
				blk, _ := strconv.ParseUint(l[2], 10, 64)
				n, _ := strconv.ParseUint(l[3], 10, 64)
				want := extent{off: off, blk: blk, n: n, unwritten: l[4] == "1"}
				for _, q := range []uint64{fb, off, off + n - 1} {
					got, ok, err := m.find(q)
					if err != nil || !ok || got != want {
						t.Fatalf("%s: %s: find(%d) = %+v %v %v, want %+v", v.name, p, q, got, ok, err, want)
					}
				}
				fb = off + n
			}
			if _, ok, err := m.find(fb); ok || err != nil {
				t.Fatalf("%s: %s: find(%d) past the last extent: %v %v", v.name, p, fb, ok, err)
			}
		}
	}
	if tested < 2 {
		t.Fatalf("no B+tree format inode in the images")
	}
}

// TestErrors checks the errors on a damaged superblock.
func TestErrors(t *testing.T) {
	es := standard()
	f, err := os.Open(image(t, variants[0].name, es, devices, variants[0].opts...))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := make([]byte, 1<<20) // the superblock and the root inode
	if _, err := f.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"magic", func(b []byte) { b[0] = 'Y' }, "bad magic"},
		{"incompat", func(b []byte) { be.PutUint32(b[216:], be.Uint32(b[216:])|0x8000) }, "unsupported incompatible features 0x8000"},
		{"needsrepair", func(b []byte) { be.PutUint32(b[216:], be.Uint32(b[216:])|incompatRepair) }, "xfs_repair"},
		{"blocksize", func(b []byte) { be.PutUint32(b[4:], 3000) }, "block size 3000"},
		{"agblocks", func(b []byte) { be.PutUint32(b[84:], 7) }, "blocks per allocation group"},
		{"version", func(b []byte) { b[101] = b[101]&0xf0 | 6 }, "version 6"},
		{"rootino", func(b []byte) { be.PutUint64(b[56:], 1<<60) }, "outside the file system"},
	} {
		b := bytes.Clone(img)
		c.edit(b)
		_, err := Open(bytes.NewReader(b), 300<<20)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "xfs: ") || strings.Count(err.Error(), "xfs:") != 1 {
			t.Errorf("%s: Open: %v, want an error with %q", c.name, err, c.want)
		}
		if !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("%s: %v does not wrap ErrCorrupt", c.name, err)
		}
	}
	if Probe(bytes.NewReader(make([]byte, 4096)), 4096) != "" {
		t.Error("Probe of zeros is not \"\"")
	}
	if Probe(bytes.NewReader(nil), 0) != "" {
		t.Error("Probe of nothing is not \"\"")
	}
}

// TestReadAtOneDeviceRead checks that a large read of a contiguous file is
// one read of the device.
func TestReadAtOneDeviceRead(t *testing.T) {
	es := standard()
	var cr *countingReader
	fsys := guesttest.OpenFile(t, image(t, variants[0].name, es, devices, variants[0].opts...), func(r io.ReaderAt, size int64) (*FS, error) {
		cr = &countingReader{r: r}
		return Open(cr, size)
	})
	file, err := guesttest.Lookup(t, fsys, "large").Open()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, file.Size())
	file.ReadAt(buf[:1], 0) // warm the metadata
	cr.mu.Lock()
	cr.n, cr.big = 0, 0
	cr.mu.Unlock()
	if n, err := file.ReadAt(buf, 0); n != len(buf) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if cr.n != 1 || cr.big != int64(len(buf)) {
		t.Fatalf("ReadAt of %d bytes: %d device reads of %d bytes, want one", len(buf), cr.n, cr.big)
	}
	want := make([]byte, len(buf))
	guesttest.Content("large", 0, want)
	if !bytes.Equal(buf, want) {
		t.Fatal("large: wrong content")
	}
	if s, e, err := file.(guest.Sparse).Data(100); s != 100 || e != file.Size() || err != nil {
		t.Fatalf("Data(100) = %d, %d, %v", s, e, err)
	}
	if _, _, err := file.(guest.Sparse).Data(file.Size()); err != io.EOF {
		t.Fatalf("Data(size) = %v, want io.EOF", err)
	}
	if n, err := file.ReadAt(buf[:10], file.Size()-4); n != 4 || err != io.EOF {
		t.Fatalf("ReadAt across the end: %d, %v", n, err)
	}
	if _, err := file.ReadAt(buf[:10], -1); err == nil {
		t.Fatal("ReadAt(-1) did not fail")
	}
}

type countingReader struct {
	r   io.ReaderAt
	mu  sync.Mutex
	n   int
	big int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.n++
	c.big += int64(len(p))
	c.mu.Unlock()
	return c.r.ReadAt(p, off)
}

func BenchmarkReadLarge(b *testing.B) {
	es := standard()
	fsys := openImage(b, image(b, variants[0].name, es, devices, variants[0].opts...))
	file, err := guesttest.Lookup(b, fsys, "large").Open()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(file.Size())
	b.ResetTimer()
	for b.Loop() {
		for off := int64(0); off < file.Size(); off += int64(len(buf)) {
			if _, err := file.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

func Example() {
	f, err := os.Open("disk.xfs")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	fsys, err := Open(f, st.Size())
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
		i := n.Info()
		fmt.Println(i.Mode, i.Size, i.Name)
	}
}

// overlay reads r with some bytes replaced: patches by offset.
type overlay struct {
	r       io.ReaderAt
	patches map[int64][]byte
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.r.ReadAt(p, off)
	for at, b := range o.patches {
		for i := range b {
			if j := at + int64(i) - off; j >= 0 && j < int64(n) {
				p[j] = b[i]
			}
		}
	}
	return n, err
}

// TestRemoteSymlinkHeader reads remote symbolic links with the header
// the kernel writes on version 5 (mkfs.xfs 6.x protofiles leave it out),
// over one block and over two.
func TestRemoteSymlinkHeader(t *testing.T) {
	es := standard()
	v := variants[1] // 1 KiB blocks: link-1500 spans two
	f, err := os.Open(image(t, v.name, es, devices, v.opts...))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	plain := openImage(t, f.Name())
	for _, name := range []string{"link-600", "link-1500"} {
		n := guesttest.Lookup(t, plain, name)
		target, err := n.Readlink()
		if err != nil {
			t.Fatal(err)
		}
		ip, err := plain.inode(n.Info().Ino)
		if err != nil {
			t.Fatal(err)
		}
		m := &bmap{fs: plain, ip: ip}
		e, ok, err := m.find(0)
		if err != nil || !ok || e.off != 0 {
			t.Fatalf("%s: find(0) = %+v, %v, %v", name, e, ok, err)
		}
		bs := int(plain.sb.blockSize)
		nblocks := (len(target) + bs - 57) / (bs - 56)
		if e.n < uint64(nblocks) {
			t.Skipf("%s: %d blocks allocated, the header needs %d", name, e.n, nblocks)
		}
		phys, _ := plain.sb.fsbPos(e.blk, e.n)
		blocks := make([]byte, nblocks*bs)
		for i := range nblocks {
			b := blocks[i*bs : (i+1)*bs]
			chunk := target[i*(bs-56) : min(len(target), (i+1)*(bs-56))]
			copy(b, "XSLM")
			be.PutUint32(b[4:], uint32(i*(bs-56)))
			be.PutUint32(b[8:], uint32(len(chunk)))
			be.PutUint64(b[16:], ip.ino)
			copy(b[56:], chunk)
		}
		fsys, err := Open(&overlay{r: f, patches: map[int64][]byte{phys: blocks}}, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		got, err := guesttest.Lookup(t, fsys, name).Readlink()
		if err != nil || got != target {
			t.Fatalf("%s: Readlink with headers = %q, %v", name, got, err)
		}
		// A header that does not match is corrupt.
		be.PutUint32(blocks[8:], 7)
		fsys, _ = Open(&overlay{r: f, patches: map[int64][]byte{phys: blocks}}, st.Size())
		if _, err := guesttest.Lookup(t, fsys, name).Readlink(); !errors.Is(err, guest.ErrCorrupt) {
			t.Fatalf("%s: Readlink with a bad header: %v", name, err)
		}
	}
}

// TestTimesXfsDB compares inode timestamps (bigtime and not) with what
// xfs_db prints.
func TestTimesXfsDB(t *testing.T) {
	needTool(t, "xfs_db", "xfsprogs")
	es := standard()
	re := regexp.MustCompile(`core\.([amc])time\.(sec|nsec) = (.*)`)
	for _, v := range variants {
		img := image(t, v.name, es, devices, v.opts...)
		fsys := openImage(t, img)
		for _, p := range []string{"small", "dir"} {
			i := guesttest.Lookup(t, fsys, p).Info()
			cmd := exec.Command("xfs_db", "-r", "-c", "inode "+strconv.FormatUint(i.Ino, 10), "-c",
				"p core.mtime.sec core.mtime.nsec core.atime.sec core.atime.nsec core.ctime.sec core.ctime.nsec", img)
			cmd.Env = append(os.Environ(), "TZ=UTC")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("xfs_db: %v: %s", err, out)
			}
			want := map[string]time.Time{}
			for _, m := range re.FindAllStringSubmatch(string(out), -1) {
				if m[2] == "sec" {
					tm, err := time.Parse("Mon Jan _2 15:04:05 2006", m[3])
					if err != nil {
						t.Fatal(err)
					}
					want[m[1]] = tm
				} else {
					ns, _ := strconv.Atoi(m[3])
					want[m[1]] = want[m[1]].Add(time.Duration(ns))
				}
			}
			if len(want) != 3 || !i.ModTime.Equal(want["m"]) || !i.ATime.Equal(want["a"]) || !i.CTime.Equal(want["c"]) {
				t.Errorf("%s: %s: times m %v a %v c %v, xfs_db says %v", v.name, p, i.ModTime, i.ATime, i.CTime, want)
			}
		}
	}
}

// TestRegistered checks the registration with package guest.
func TestRegistered(t *testing.T) {
	for _, f := range guest.Filesystems() {
		if f.Name != "xfs" {
			continue
		}
		fsys, err := f.Open(bytes.NewReader(make([]byte, 4096)), 4096)
		if err == nil || fsys != nil {
			t.Fatalf("Open of zeros = %v, %v", fsys, err)
		}
		return
	}
	t.Fatal("xfs is not registered")
}

// TestBtreeFile turns "large" into a file with a two-level block map
// B+tree (written, unwritten extents and a hole, the next extent after a
// hole in the next leaf) and reads it.
func TestBtreeFile(t *testing.T) {
	es := standard()
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			f, err := os.Open(image(t, v.name, es, devices, v.opts...))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			plain := openImage(t, f.Name())
			ino := guesttest.Lookup(t, plain, "large").Info().Ino
			ip, err := plain.inode(ino)
			if err != nil {
				t.Fatal(err)
			}
			e, ok, err := (&bmap{fs: plain, ip: ip}).find(0)
			bl := plain.sb.blockLog
			nblk := uint64(ip.size) >> bl
			if err != nil || !ok || e.n != nblk {
				t.Skipf("large: first extent %+v, %v, %v, want one of %d blocks", e, ok, err, nblk)
			}
			sb := &plain.sb
			bs := int(sb.blockSize)
			// Three blocks at the end of the last allocation group.
			ag := uint64(sb.agCount - 1)
			last := (sb.dblocks - 1) - ag*uint64(sb.agBlocks)
			node, leaf1, leaf2 := ag<<sb.agBlkLog|(last-2), ag<<sb.agBlkLog|(last-1), ag<<sb.agBlkLog|last
			hdr, magic := 24, "BMAP"
			if sb.version == 5 {
				hdr, magic = 72, "BMA3"
			}
			block := func(level int, recs [][2]uint64) []byte {
				b := make([]byte, bs)
				copy(b, magic)
				be.PutUint16(b[4:], uint16(level))
				be.PutUint16(b[6:], uint16(len(recs)))
				be.PutUint64(b[8:], ^uint64(0))
				be.PutUint64(b[16:], ^uint64(0))
				if sb.version == 5 {
					be.PutUint64(b[56:], ino)
				}
				maxrecs := (bs - hdr) / 16
				for i, r := range recs {
					if level == 0 {
						be.PutUint64(b[hdr+16*i:], r[0])
						be.PutUint64(b[hdr+16*i+8:], r[1])
					} else {
						be.PutUint64(b[hdr+8*i:], r[0])
						be.PutUint64(b[hdr+8*maxrecs+8*i:], r[1])
					}
				}
				return b
			}
			pack := func(off, blk, n uint64, unwritten bool) [2]uint64 {
				l0 := off<<9 | blk>>43
				if unwritten {
					l0 |= 1 << 63
				}
				return [2]uint64{l0, blk<<21 | n}
			}
			// Blocks [0,100) written, [100,200) a hole, [200,300)
			// unwritten, [300,n) written.
			patches := map[int64][]byte{}
			put := func(fsb uint64, b []byte) {
				pos, ok := sb.fsbPos(fsb, 1)
				if !ok {
					t.Fatalf("block %d outside", fsb)
				}
				patches[pos] = b
			}
			put(leaf1, block(0, [][2]uint64{pack(0, e.blk, 100, false)}))
			put(leaf2, block(0, [][2]uint64{pack(200, e.blk+200, 100, true), pack(300, e.blk+300, nblk-300, false)}))
			put(node, block(1, [][2]uint64{{0, leaf1}, {200, leaf2}}))
			pos, _, _ := sb.inoPos(ino)
			core := int64(100)
			if sb.version == 5 {
				core = 176
			}
			forkSize := len(ip.fork)
			root := make([]byte, forkSize)
			maxrecs := (forkSize - 4) / 16
			be.PutUint16(root[0:], 2)
			be.PutUint16(root[2:], 1)
			be.PutUint64(root[4:], 0)
			be.PutUint64(root[4+8*maxrecs:], node)
			patches[pos+5] = []byte{fmtBtree}
			patches[pos+core] = root

			fsys, err := Open(&overlay{r: f, patches: patches}, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			file, err := guesttest.Lookup(t, fsys, "large").Open()
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, ip.size)
			guesttest.Content("large", 0, want)
			clear(want[100<<bl : 300<<bl])
			got := make([]byte, ip.size)
			if n, err := file.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt: %d, %v", n, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("content differs")
			}
			for _, off := range []int64{0, 99 << bl, 150 << bl, 250<<bl + 7, 300 << bl, ip.size - 5} {
				n := min(int64(3<<bl), ip.size-off)
				if m, err := file.ReadAt(got[:n], off); int64(m) != n || (err != nil && err != io.EOF) || !bytes.Equal(got[:n], want[off:off+n]) {
					t.Fatalf("ReadAt(%d bytes at %d): %d, %v", n, off, m, err)
				}
			}
			sp := file.(guest.Sparse)
			for _, c := range []struct{ off, start, end int64 }{
				{0, 0, 100 << bl}, {5, 5, 100 << bl}, {100 << bl, 300 << bl, ip.size},
				{150 << bl, 300 << bl, ip.size}, {250 << bl, 300 << bl, ip.size}, {ip.size - 1, ip.size - 1, ip.size},
			} {
				if s, e, err := sp.Data(c.off); s != c.start || e != c.end || err != nil {
					t.Errorf("Data(%d) = %d, %d, %v; want %d, %d", c.off, s, e, err, c.start, c.end)
				}
			}
			// A loop: the node pointing at itself is a level mismatch.
			put(leaf1, block(1, [][2]uint64{{0, leaf1}}))
			fsys, _ = Open(&overlay{r: f, patches: patches}, st.Size())
			file, _ = guesttest.Lookup(t, fsys, "large").Open()
			if _, err := file.ReadAt(got[:10], 0); !errors.Is(err, guest.ErrCorrupt) {
				t.Errorf("ReadAt through a looping tree: %v", err)
			}
		})
	}
}

package ntfs

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
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// need returns the path of a tool, skipping the test (failing it under
// CI=true) when the tool is missing.
func need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(d, tool)); err == nil {
				return filepath.Join(d, tool)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: install the Debian package ntfs-3g", tool)
		}
		t.Skipf("%s not found: install the Debian package ntfs-3g", tool)
	}
	return p
}

func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(need(t, name), args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out.String()
}

// mkntfs makes an empty NTFS image of size bytes in dir.
func mkntfs(t testing.TB, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "ntfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	runTool(t, "mkntfs", "-q", "-F", "-f", "-s", "512", "-L", "test", img)
	return img
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// entries is the root-only tree the tests copy in with ntfscp (which
// cannot make directories).
func entries() []guesttest.Entry {
	var es []guesttest.Entry
	for _, e := range guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		return !strings.Contains(e.Path, "/") && e.Mode.IsRegular() && len(e.Holes) == 0
	}) {
		e.Mode = 0o644
		es = append(es, e)
	}
	add := func(e guesttest.Entry) {
		e.ModTime = guesttest.Epoch.Add(time.Duration(len(es)) * time.Second)
		es = append(es, e)
	}
	for _, n := range []string{"héllo wörld.txt", "日本語.txt", "emoji-😀.txt", "Ünïcödé", "a name longer than the eight dot three form.text"} {
		add(guesttest.Entry{Path: n, Mode: 0o644, Size: int64(len(n))})
	}
	// 4 MiB with data only in the first 64 KiB: ntfstruncate extends it
	// with a sparse run.
	add(guesttest.Entry{Path: "sparse", Mode: 0o644, Size: 4 * mib, Holes: [][2]int64{{64 * kib, 4 * mib}}})
	// An alternate data stream of "small".
	for _, e := range es {
		if e.Path == "small" {
			add(guesttest.Entry{Path: "small:alt", Mode: 0o644, Size: 3000})
			es[len(es)-1].ModTime = e.ModTime
		}
	}
	// Enough names to make the root index a B-tree of several blocks.
	for i := range 100 {
		add(guesttest.Entry{Path: fmt.Sprintf("f%05d", i), Mode: 0o644, Size: int64(i % 7)})
	}
	return es
}

// imageDir holds the image that image builds, removed by TestMain.
var imageDir string

var image = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ntfstest")
	if err != nil {
		return "", err
	}
	imageDir = dir
	return buildImage(dir)
})

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

// buildImage writes entries() to an NTFS image under dir.
func buildImage(dir string) (img string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	ft := &panicTB{}
	src := filepath.Join(dir, "src")
	es := entries()
	var plain []guesttest.Entry
	for _, e := range es {
		if len(e.Holes) > 0 {
			e.Size = e.Holes[0][0]
			e.Holes = nil
		}
		plain = append(plain, e)
	}
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", err
	}
	guesttest.Write(ft, src, plain)
	img = mkntfs(ft, dir, 32*mib)
	for _, e := range es {
		host := filepath.Join(src, e.Path)
		if base, stream, ok := strings.Cut(e.Path, ":"); ok {
			runTool(ft, "ntfscp", "-q", "-N", stream, img, host, "/"+base)
			continue
		}
		runTool(ft, "ntfscp", "-q", "-t", img, host, "/"+e.Path)
		if len(e.Holes) > 0 {
			ino := inode(ft, img, e.Path)
			runTool(ft, "ntfstruncate", img, strconv.FormatUint(ino, 10), strconv.FormatInt(e.Size, 10))
		}
	}
	return img, nil
}

// panicTB is a testing.TB for work done once outside any test.
type panicTB struct{ testing.TB }

func (panicTB) Helper()                           {}
func (panicTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (panicTB) Skipf(format string, args ...any)  { panic("skip: " + fmt.Sprintf(format, args...)) }
func (panicTB) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (p panicTB) TempDir() string {
	d, err := os.MkdirTemp(imageDir, "tmp")
	if err != nil {
		panic(err)
	}
	return d
}

// inode returns the MFT record of a root file, from ntfsls.
func inode(t testing.TB, img, name string) uint64 {
	for _, l := range strings.Split(runTool(t, "ntfsls", "-i", img), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), f[0])) == name {
			n, _ := strconv.ParseUint(f[0], 10, 64)
			return n
		}
	}
	t.Fatalf("ntfsls: no %q", name)
	return 0
}

func openImage(t testing.TB, img string) guest.FS {
	t.Helper()
	return guesttest.OpenFile(t, img, probeOpen)
}

// probeOpen opens r after checking that Probe sees NTFS in it.
func probeOpen(r io.ReaderAt, size int64) (guest.FS, error) {
	if got := Probe(r, size); got != "ntfs" {
		return nil, fmt.Errorf("Probe = %q, want ntfs", got)
	}
	return Open(r, size)
}

func testImage(t *testing.T) string {
	t.Helper()
	need(t, "mkntfs")
	need(t, "ntfscp")
	need(t, "ntfstruncate")
	need(t, "ntfsls")
	img, err := image()
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}
	return img
}

func TestStandard(t *testing.T) {
	t.Parallel()
	img := testImage(t)
	fsys := openImage(t, img)
	guesttest.Check(t, fsys, entries(), guesttest.Caps{MTime: time.Second, Sparse: true})
}

func TestNodes(t *testing.T) {
	t.Parallel()
	img := testImage(t)
	fsys := openImage(t, img)
	root, err := fsys.Root()
	if err != nil {
		t.Fatal(err)
	}
	if i := root.Info(); i.Ino != rootRecord || i.Mode != fs.ModeDir|0o755 || i.Name != "" {
		t.Errorf("root: %+v", i)
	}
	nodes, err := root.ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]guest.Node{}
	for _, n := range nodes {
		byName[n.Info().Name] = n
	}
	small, alt := byName["small"].Info(), byName["small:alt"].Info()
	if small.Ino >= firstUserRecord<<8 || alt.Ino != 1<<63|small.Ino<<16|1 || small.Nlink != 1 {
		t.Errorf("small: Ino %d Nlink %d, small:alt: Ino %#x", small.Ino, small.Nlink, alt.Ino)
	}
	// Names as ntfsls lists them (it hides the system files too).
	var want []string
	for _, l := range strings.Split(runTool(t, "ntfsls", img), "\n") {
		if l != "" {
			want = append(want, l)
		}
	}
	var got []string
	for _, n := range nodes {
		if !strings.Contains(n.Info().Name, ":") {
			got = append(got, n.Info().Name)
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("root lists\n%q\nntfsls lists\n%q", got, want)
	}
	if _, err := byName["small"].Readlink(); !errors.Is(err, guest.ErrNotLink) {
		t.Errorf("Readlink of a file: %v", err)
	}
	if r, err := fsys.(*volume).record(rootRecord); err != nil || r.first(atIndexAlloc, "$I30") == nil {
		t.Errorf("the root index has no index allocation (%v): the B-tree is not tested", err)
	}
	// The $Extend directory, hidden from the root, holds the system
	// indexes.
	v := fsys.(*volume)
	r, err := v.record(11)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := v.stat(r, "$Extend")
	if err != nil {
		t.Fatal(err)
	}
	ext, err := ns[0].ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range ext {
		names = append(names, n.Info().Name)
	}
	want = nil
	for _, l := range strings.Split(runTool(t, "ntfsls", "-s", "-a", "-p", "/$Extend", img), "\n") {
		if l != "" && l != "." && l != ".." {
			want = append(want, l)
		}
	}
	sort.Strings(names)
	sort.Strings(want)
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("$Extend lists %q, ntfsls %q", names, want)
	}
}

// TestWindowsImage reads go-ntfs's test image, made by Windows: nested
// directories, POSIX names, an alternate data stream and an LZNT1
// compressed file, against ntfsls and ntfscat.
// countingReader counts the reads on a device.
type countingReader struct {
	io.ReaderAt
	mu sync.Mutex
	n  int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.ReaderAt.ReadAt(p, off)
}

// TestOneReadPerRun checks that a large read turns into one device read
// per run.
func TestOneReadPerRun(t *testing.T) {
	t.Parallel()
	img := testImage(t)
	var c *countingReader
	fsys := guesttest.OpenFile(t, img, func(r io.ReaderAt, size int64) (guest.FS, error) {
		if _, err := probeOpen(r, size); err != nil {
			return nil, err
		}
		c = &countingReader{ReaderAt: r}
		return Open(c, size)
	})
	root, _ := fsys.Root()
	nodes, err := root.ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Info().Name != "large" {
			continue
		}
		file, err := n.Open()
		if err != nil {
			t.Fatal(err)
		}
		runs := len(file.(*stream).runs)
		buf := make([]byte, file.Size())
		c.n = 0
		if m, err := file.ReadAt(buf, 0); m != len(buf) || err != nil {
			t.Fatalf("ReadAt = %d, %v", m, err)
		}
		if c.n != runs {
			t.Errorf("reading %d bytes in %d runs took %d device reads", len(buf), runs, c.n)
		}
		return
	}
	t.Fatal("no file large")
}

func TestWindowsImage(t *testing.T) {
	t.Parallel()
	img := windowsImage(t)
	fsys := openImage(t, img)
	root, err := fsys.Root()
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	var walk func(dir string, n guest.Node)
	walk = func(dir string, n guest.Node) {
		nodes, err := n.ReadDir()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		var got, want []string
		for _, c := range nodes {
			name := c.Info().Name
			p := path.Join(dir, name)
			if !strings.Contains(name, ":") {
				got = append(got, name)
			}
			switch {
			case c.Info().Mode.IsDir():
				walk(p, c)
			case c.Info().Mode.IsRegular():
				files++
				args := []string{img, p}
				if base, stream, ok := strings.Cut(p, ":"); ok {
					args = []string{"-n", stream, img, base}
				}
				want := runTool(t, "ntfscat", args...)
				f, err := c.Open()
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				b := make([]byte, f.Size()+10)
				m, err := f.ReadAt(b, 0)
				if err != io.EOF || m != len(want) || string(b[:m]) != want {
					t.Errorf("%s: read %d bytes, %v; ntfscat reads %d bytes, equal %v", p, m, err, len(want), string(b[:m]) == want)
				}
			}
		}
		for _, l := range strings.Split(runTool(t, "ntfsls", "-p", dir, img), "\n") {
			if l != "" && l != "." && l != ".." {
				want = append(want, l)
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s lists %q, ntfsls %q", dir, got, want)
		}
	}
	walk("/", root)
	if files < 5 {
		t.Errorf("%d files", files)
	}
}

// windowsImage returns the path of go-ntfs's test image, in the module
// cache.
func windowsImage(t *testing.T) string {
	need(t, "ntfscat")
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skipf("go env GOMODCACHE: %v", err)
	}
	img := filepath.Join(strings.TrimSpace(string(out)), "www.velocidex.com/golang/go-ntfs@v0.2.1/parser/test_data/test.ntfs.dd")
	if _, err := os.Stat(img); err != nil {
		t.Skipf("go-ntfs's test image: %v (go mod download www.velocidex.com/golang/go-ntfs)", err)
	}
	return img
}

// geometries are the mkntfs options of TestGeometries: 64 KiB clusters
// (index blocks smaller than a cluster, addressed in 512-byte units), 4
// KiB sectors (4 KiB MFT records) and 2 KiB clusters.
var geometries = [][]string{{"-c", "65536"}, {"-s", "4096"}, {"-c", "2048"}}

func geometryEntries() []guesttest.Entry {
	var es []guesttest.Entry
	for i := range 40 {
		es = append(es, guesttest.Entry{Path: fmt.Sprintf("some longer file name %02d", i), Mode: 0o644, Size: int64(i * 1000)})
	}
	return es
}

// geometryImages builds the images of TestGeometries once.
var geometryImages = sync.OnceValues(func() (imgs []string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	image() // makes imageDir
	ft := &panicTB{}
	src := ft.TempDir()
	es := geometryEntries()
	guesttest.Write(ft, src, es)
	for k, opt := range geometries {
		img := filepath.Join(imageDir, fmt.Sprintf("geometry%d.img", k))
		f, err := os.Create(img)
		if err != nil {
			return nil, err
		}
		f.Truncate(64 * mib)
		f.Close()
		runTool(ft, "mkntfs", append([]string{"-q", "-F", "-f"}, append(opt, img)...)...)
		for _, e := range es {
			runTool(ft, "ntfscp", "-q", img, filepath.Join(src, e.Path), "/"+e.Path)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
})

// TestGeometries reads images of other cluster and record sizes.
func TestGeometries(t *testing.T) {
	t.Parallel()
	testImage(t)
	imgs, err := geometryImages()
	if err != nil {
		t.Fatalf("building the images: %v", err)
	}
	for k, img := range imgs {
		t.Run(strings.Join(geometries[k], ""), func(t *testing.T) {
			t.Parallel()
			fsys := openImage(t, img)
			guesttest.Check(t, fsys, geometryEntries(), guesttest.Caps{})
		})
	}
}

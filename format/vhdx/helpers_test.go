package vhdx

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// shared holds what tests make once per test binary (go test -cpu=1,4
// runs each test twice), in a directory TestMain removes.
var shared struct {
	once sync.Once
	dir  string
	err  error
	// qemu-img-made images, by case, each with path+".oracle": what
	// qemu-img convert -O raw reads from it.
	images map[string]string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// oracleRuns remembers the qemu-img checks made: they give the same
// answers on the second run of a test (go test -cpu=1,4), and qemu-img's
// start costs more than the rest of most tests.
var oracleRuns sync.Map

// firstRun reports whether the check named key has not been made yet in
// this test binary.
func firstRun(key string) bool {
	_, done := oracleRuns.LoadOrStore(key, true)
	return !done
}

// memo returns what f returns, calling it once per key in this test
// binary (f's error fails every test that asks).
func memo[T any](t testing.TB, key string, f func() (T, error)) T {
	t.Helper()
	type result struct {
		once sync.Once
		v    T
		err  error
	}
	r, _ := oracleRuns.LoadOrStore("memo/"+key, &result{})
	res := r.(*result)
	res.once.Do(func() { res.v, res.err = f() })
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res.v
}

// qemuOutput runs qemu-img once per binary for the same arguments and
// returns its output; a failure is an error.
func qemuOutput(t testing.TB, args ...string) []byte {
	t.Helper()
	return memo(t, fmt.Sprint(args), func() ([]byte, error) {
		out, err := exec.Command("qemu-img", args...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("qemu-img %v: %v\n%s", args, err, out)
		}
		return out, nil
	})
}

// builder runs qemu-img in dir and keeps the first error.
type builder struct {
	dir string
	err error
}

func (b *builder) run(args ...string) {
	if b.err != nil {
		return
	}
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		b.err = fmt.Errorf("qemu-img %v: %v\n%s", args, err, out)
	}
}

// convert writes data as a raw file and converts it to VHDX with
// qemu-img, with -o opts, and what qemu-img reads of it to name.oracle.
func (b *builder) convert(name string, data []byte, opts string) string {
	raw := filepath.Join(b.dir, name+".raw")
	if err := os.WriteFile(raw, data, 0o644); err != nil && b.err == nil {
		b.err = err
	}
	out := filepath.Join(b.dir, name+".vhdx")
	args := []string{"convert", "-f", "raw", "-O", "vhdx"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	b.run(append(args, raw, out)...)
	b.run("convert", "-f", "vhdx", "-O", "raw", out, out+".oracle")
	return out
}

// fixtures makes the qemu-img images once: dynamic images of the
// smallest, default and largest block sizes, with zero blocks recorded
// either way, fixed ones (qemu-img's default, which records blocks as
// ZERO and appends data, and block_state_zero=off), odd sizes, holes.
func fixtures(t testing.TB) map[string]string {
	t.Helper()
	testutil.RequireTool(t, "qemu-img")
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "vmaconv-vhdx-")
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = dir
		b := &builder{dir: dir}
		mixed := testutil.GenDisk(1, 6<<20, "mixed")
		odd := testutil.GenDisk(2, 3<<20+7*512+100, "mixed") // neither blocks nor sectors
		sparse := make([]byte, 20<<20)
		copy(sparse[17<<20:], testutil.GenDisk(3, 300000, "data"))
		// Three blocks of 1 MiB, 8 KiB of data at the start of each: the
		// image the hostile tests patch (mostly holes, cheap to copy).
		few := make([]byte, 3<<20)
		for off := 0; off < len(few); off += 1 << 20 {
			copy(few[off:], testutil.GenDisk(uint64(off), 8192, "data"))
		}
		im := map[string]string{
			"few-1m":          b.convert("few", few, "block_size=1M"),
			"dynamic-1m":      b.convert("d1m", mixed, "block_size=1M"),
			"dynamic-256m":    b.convert("d256m", odd, "block_size=256M"),
			"dynamic-nozero":  b.convert("dnz", odd, "block_size=2M,block_state_zero=off,log_size=2M"),
			"odd-size":        b.convert("odd", odd, "block_size=1M"),
			"fixed":           b.convert("fixed", odd, "subformat=fixed,block_size=1M"),
			"fixed-allocated": b.convert("fixedoff", odd, "subformat=fixed,block_state_zero=off,block_size=2M"),
			"sparse":          b.convert("sparse", sparse, ""), // 8 MiB blocks, as qemu-img chooses
		}
		empty := filepath.Join(dir, "empty.vhdx")
		b.run("create", "-q", "-f", "vhdx", empty, "2M")
		b.run("convert", "-O", "raw", empty, empty+".oracle")
		im["empty"] = empty
		shared.images, shared.err = im, b.err
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.images
}

// oracle returns what qemu-img read of a fixture.
func oracle(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path + ".oracle")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openPath opens an image through the driver.
func openPath(t testing.TB, path string, o format.OpenOptions) (*Source, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return Open(f, o)
}

// readAll reads a source whole.
func readAll(t testing.TB, s format.Source) []byte {
	t.Helper()
	b := make([]byte, s.Size())
	if n, err := s.ReadAt(b, 0); n != len(b) || err != nil && err != io.EOF {
		t.Fatalf("ReadAt(all %d bytes) = %d, %v", len(b), n, err)
	}
	return b
}

// fileLayout parses the image at path without loading it, and returns a
// function that reads n bytes of it at off.
func fileLayout(t testing.TB, path string) (*layout, func(off, n uint64) []byte, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	l, err := parse(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return l, func(off, n uint64) []byte {
		b := make([]byte, n)
		if err := readAt(f, fi.Size(), b, int64(off)); err != nil {
			t.Fatal(err)
		}
		return b
	}, fi.Size()
}

// image is a VHDX file's bytes, to patch.
type image []byte

func loadImage(t testing.TB, path string) image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// save writes m to a new file at path, its zero 4 KiB blocks as holes
// (an image is mostly zeros).
func (m image) save(t testing.TB, path string) string {
	t.Helper()
	os.Remove(path)
	f, err := os.Create(path)
	if err == nil {
		err = zero.WriteNonZero(f, m, 0)
	}
	if err == nil {
		err = f.Truncate(int64(len(m)))
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// layout parses m.
func (m image) layout(t testing.TB) *layout {
	t.Helper()
	l, err := parse(readerAt(m), int64(len(m)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type readerAt []byte

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r)) {
		return 0, io.EOF
	}
	n := copy(p, r[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var le32, le64 = binary.LittleEndian.PutUint32, binary.LittleEndian.PutUint64

// fixHeader recomputes the checksum of the header at at.
func (m image) fixHeader(at int64) {
	le32(m[at+4:], checksum(m[at:at+headerBytes], 4))
}

// fixRegions recomputes the checksums of both region tables.
func (m image) fixRegions() {
	for _, at := range []int64{region1Offset, region2Offset} {
		le32(m[at+4:], checksum(m[at:at+regionTableBytes], 4))
	}
}

// metaItem returns the file offset of the value of metadata item id.
func (m image) metaItem(t testing.TB, id guid) int64 {
	t.Helper()
	l := m.layout(t)
	n := int(binary.LittleEndian.Uint16(m[l.meta.off+10:]))
	for i := range n {
		e := m[l.meta.off+32+32*uint64(i):]
		if guid(e[:16]) == id {
			return int64(l.meta.off) + int64(binary.LittleEndian.Uint32(e[16:]))
		}
	}
	t.Fatalf("no metadata item %s", id)
	return 0
}

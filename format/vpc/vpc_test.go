package vpc_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/vpc"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// fixtures holds the images qemu-img makes, and what it reads from each,
// made once per test binary (go test -cpu=1,4 runs the tests twice) in a
// directory TestMain removes.
var fixtures struct {
	once  sync.Once
	dir   string
	cases map[string]string // name -> image; image+".oracle": qemu-img's read of it
	raws  map[string]string // name -> raw disk the writer tests convert
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

// builder runs qemu-img and qemu-io in dir and keeps the first error.
type builder struct {
	dir string
	err error
}

func (b *builder) run(name string, args ...string) {
	if b.err != nil {
		return
	}
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.err = fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
}

func (b *builder) at(name string) string { return filepath.Join(b.dir, name) }

// raw writes data as a raw file.
func (b *builder) raw(name string, data []byte) string {
	if err := os.WriteFile(b.at(name+".raw"), data, 0o644); err != nil && b.err == nil {
		b.err = err
	}
	return b.at(name + ".raw")
}

// convert converts a raw file with qemu-img convert -O vpc.
func (b *builder) convert(name, raw string, opts ...string) string {
	out := b.at(name + ".vhd")
	b.run("qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "vpc"}, opts...), raw, out)...)
	return out
}

// qemuIO creates an image and runs qemu-io commands on it.
func (b *builder) qemuIO(name, size string, create []string, cmds ...string) string {
	p := b.at(name + ".vhd")
	b.run("qemu-img", append(append([]string{"create", "-q", "-f", "vpc"}, create...), p, size)...)
	args := []string{"-f", "vpc"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	b.run("qemu-io", append(args, p)...)
	return p
}

// patch copies an image with its footers (both copies where there are
// two) changed by f and their checksums recomputed.
func (b *builder) patch(name, from string, f func(foot []byte)) string {
	img, err := os.ReadFile(from)
	if err != nil {
		b.err = err
		return ""
	}
	fixFooters(img, f)
	p := b.at(name + ".vhd")
	if err := os.WriteFile(p, img, 0o644); err != nil && b.err == nil {
		b.err = err
	}
	return p
}

// fixFooters changes the footer at the end of img, and its copy at the
// start if there is one, by f, and recomputes their checksums.
func fixFooters(img []byte, f func(foot []byte)) {
	for _, off := range []int{0, len(img) - 512} {
		foot := img[off : off+512]
		if string(foot[:8]) != "conectix" {
			continue
		}
		f(foot)
		fixSum(foot, 64)
	}
}

// fixSum recomputes a VHD checksum at b[at:at+4] over b.
func fixSum(b []byte, at int) {
	clear(b[at : at+4])
	var s uint32
	for _, c := range b {
		s += uint32(c)
	}
	binary.BigEndian.PutUint32(b[at:], ^s)
}

// shrink returns qemu-img's dynamic disk img (blocks of 2 MiB, its BAT
// after its header at 0x200) with blocks of 4 KiB: the same footer, the
// BAT grown to cover the disk, block i of 2 MiB become block 512·i of
// 4 KiB, cut to its bitmap and first 4 KiB of data, in the same order.
// Its metadata is qemu-img's, its files tiny: for tests that make many
// images of one.
func shrink(img []byte) []byte {
	be := binary.BigEndian
	out := bytes.Clone(img[:0x600])
	size := be.Uint64(out[48:])
	n := (size + 4095) / 4096
	hdr := out[0x200:0x600]
	old := int(be.Uint32(hdr[28:]))
	be.PutUint32(hdr[28:], uint32(n))
	be.PutUint32(hdr[32:], 4096)
	fixSum(hdr, 36)
	out = append(out, bytes.Repeat([]byte{0xff}, int((4*n+511)&^511))...)
	type block struct{ i, at int }
	var blocks []block
	for i := range old {
		if e := be.Uint32(img[0x600+4*i:]); e != 0xffffffff {
			blocks = append(blocks, block{i, int(e) * 512})
		}
	}
	slices.SortFunc(blocks, func(a, b block) int { return a.at - b.at })
	for _, b := range blocks {
		be.PutUint32(out[0x600+4*512*b.i:], uint32(len(out)/512))
		out = append(out, img[b.at:b.at+512+4096]...) // bitmap, 4 KiB of data
	}
	return append(out, img[len(img)-512:]...)
}

// Disks of the fixtures: several blocks of 2 MiB, an odd size.
var (
	mixedDisk = func() []byte { return testutil.GenDisk(1, 5<<20+7*512+100, "mixed") }
	smallDisk = func() []byte { return testutil.GenDisk(2, 300000, "mixed") }
)

// makeFixtures makes the images once: qemu-img's dynamic and fixed
// disks, with and without force_size, of sizes that need rounding to a
// CHS geometry; blocks allocated out of order and overwritten with
// zeros; a fixed disk whose file has holes; images other creators made
// (their footers' creator application and sizes changed), sized by their
// geometry or their current size as qemu-img sizes them.
func makeFixtures() error {
	fixtures.once.Do(func() {
		dir, err := os.MkdirTemp("", "vmaconv-vpc-")
		if err != nil {
			fixtures.err = err
			return
		}
		fixtures.dir = dir
		b := &builder{dir: dir}
		sparse := make([]byte, 7<<20)
		copy(sparse[4<<20+5000:], testutil.GenDisk(3, 100000, "data"))
		copy(sparse[7<<20-12345:], "the end")
		raws := map[string]string{
			"mixed":  b.raw("mixed", mixedDisk()),
			"small":  b.raw("small", smallDisk()),
			"sparse": b.raw("sparse", sparse),
		}
		cases := map[string]string{
			"dynamic":            b.convert("dynamic", raws["mixed"]),
			"dynamic-small":      b.convert("dynamic-small", raws["small"]),
			"dynamic-sparse":     b.convert("dynamic-sparse", raws["sparse"]),
			"dynamic-force-size": b.convert("dynamic-force", raws["mixed"], "-o", "force_size=on"),
			"fixed":              b.convert("fixed", raws["mixed"], "-o", "subformat=fixed"),
			"fixed-small":        b.convert("fixed-small", raws["small"], "-o", "subformat=fixed"),
			"fixed-force-size":   b.convert("fixed-force", raws["small"], "-o", "subformat=fixed,force_size=on"),
			"dynamic-out-of-order": b.qemuIO("order", "7M", nil, "write -P 0x5a 5M 300k", "write -P 0x11 1M 4k",
				"write -z 5M 64k", "write -P 0x22 3M 1536k", "write -P 0x33 0 512", "write -P 0x44 6M 4k"),
			"fixed-holes": b.qemuIO("fixholes", "6M", []string{"-o", "subformat=fixed"}, "write -P 3 2M 4k", "write -P 4 5M 1k"),
		}
		// Virtual PC sizes a disk by its geometry, however large its
		// current size; Hyper-V by its current size, however large its
		// geometry.
		be := binary.BigEndian
		cases["creator-vpc"] = b.patch("creator-vpc", cases["dynamic"], func(f []byte) {
			copy(f[28:], "vpc ")
			be.PutUint64(f[48:], be.Uint64(f[48:])+1<<20)
		})
		cases["creator-hyperv"] = b.patch("creator-hyperv", cases["dynamic"], func(f []byte) {
			copy(f[28:], "win ")
			be.PutUint64(f[48:], be.Uint64(f[48:])-64<<10)
		})
		cases["creator-hyperv-fixed"] = b.patch("creator-hyperv-fixed", cases["fixed"], func(f []byte) {
			copy(f[28:], "win ")
			be.PutUint64(f[48:], be.Uint64(f[48:])-3*512)
		})
		for _, path := range cases {
			b.run("qemu-img", "convert", "-f", "vpc", "-O", "raw", path, path+".oracle")
		}
		fixtures.cases, fixtures.raws, fixtures.err = cases, raws, b.err
	})
	return fixtures.err
}

// memo holds the outputs of the commands once runs.
var memo sync.Map // command line -> *memoRun

type memoRun struct {
	once sync.Once
	out  []byte
	err  error
}

// once runs a command once per test binary (go test -cpu=1,4 runs each
// test twice) and returns its combined output: for qemu-img's verdicts
// on files that stay the same, in the fixtures' directory.
func once(name string, args ...string) ([]byte, error) {
	v, _ := memo.LoadOrStore(name+"\x00"+strings.Join(args, "\x00"), &memoRun{})
	r := v.(*memoRun)
	r.once.Do(func() { r.out, r.err = exec.Command(name, args...).CombinedOutput() })
	return r.out, r.err
}

// mustOnce is once, failing the test if the command fails.
func mustOnce(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := once(name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// keep returns where a test writes an output it keeps for the test's
// later passes (in the fixtures' directory, under key), and, on a later
// pass, the output kept by the first, which the new one must equal; ""
// on the first pass.
func keep(t *testing.T, key string) (path, first string) {
	t.Helper()
	path = filepath.Join(fixtures.dir, "kept", key)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err == nil {
		return filepath.Join(t.TempDir(), filepath.Base(key)), path
	}
	return path, ""
}

// sameAsFirst fails the test if a later pass's output differs from the
// first's: the same input gives the same bytes.
func sameAsFirst(t *testing.T, path, first string) {
	t.Helper()
	if first == "" {
		return
	}
	a, err1 := os.ReadFile(path)
	b, err2 := os.ReadFile(first)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		t.Fatalf("%s differs from the first pass's output (%v, %v)", filepath.Base(path), err1, err2)
	}
}

func needFixtures(t *testing.T) {
	t.Helper()
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	if err := makeFixtures(); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, path string, o format.OpenOptions) (*vpc.Source, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return vpc.Open(f, o)
}

// suite are the fixtures formattest.TestSource reads (over 200 MiB, in
// parallel: a cost under -race): blocks out of order, and serially, a
// fixed disk with holes. The others are read whole and their zero maps
// walked.
var suite = map[string]func(*testing.T, format.Source, []byte){
	"dynamic-out-of-order": formattest.TestSource, "fixed-holes": formattest.TestSourceSerial,
}

// TestConformance: every image qemu-img makes reads as qemu-img reads
// it, at any offset, in parallel, with a zero map that tiles the disk and
// never calls data zero; opened as a file, and as a view that is not one.
func TestConformance(t *testing.T) {
	needFixtures(t)
	for name, path := range fixtures.cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(path + ".oracle")
			if err != nil {
				t.Fatal(err)
			}
			src, err := open(t, path, format.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if test := suite[name]; test != nil {
				test(t, src, want)
			} else {
				readWhole(t, src, want)
			}
			// Through OpenAt: without a file's hole map.
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			at, err := vpc.OpenAt(io.NewSectionReader(f, 0, fi.Size()), fi.Size(), format.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer at.Close()
			readWhole(t, at, want)
		})
	}
}

// readWhole reads src whole and walks its zero map.
func readWhole(t *testing.T, src format.Source, want []byte) {
	t.Helper()
	if src.Size() != int64(len(want)) {
		t.Fatalf("Size() = %d, want %d", src.Size(), len(want))
	}
	got := make([]byte, len(want))
	if n, err := src.ReadAt(got, 0); n != len(got) || err != nil && err != io.EOF {
		t.Fatalf("ReadAt(all %d bytes) = %d, %v", len(got), n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the disk read whole differs from qemu-img's, from %#x", firstDiff(got, want))
	}
	zm := src.(format.ZeroMapper)
	for pos := int64(0); pos < src.Size(); {
		r, err := zm.Region(pos, src.Size()-pos)
		if err != nil || r.Start != pos || r.Length <= 0 || r.Start+r.Length > src.Size() {
			t.Fatalf("Region(%d) = %+v, %v", pos, r, err)
		}
		if r.Zero && !testutil.AllZero(want[pos:pos+r.Length]) {
			t.Fatalf("region %+v is reported zero but is not", r)
		}
		pos += r.Length
	}
}

// TestSizes: the virtual size follows the footer's creator as qemu-img
// reads it (the fixtures), and the rule of QEMU 10 for creators QEMU 9.2
// sized by their geometry: Azure's and every other but Virtual PC's and
// qemu-img's own.
func TestSizes(t *testing.T) {
	needFixtures(t)
	img, err := os.ReadFile(fixtures.cases["dynamic"])
	if err != nil {
		t.Fatal(err)
	}
	img = shrink(img)
	be := binary.BigEndian
	chs := int64(be.Uint16(img[56:])) * int64(img[58]) * int64(img[59]) * 512
	cur := int64(be.Uint64(img[48:]))
	if chs != cur {
		t.Fatalf("qemu-img's image: geometry %d bytes, current size %d", chs, cur)
	}
	for _, tc := range []struct {
		app   string
		delta int64 // to the current size
		geom  bool  // sized by the geometry
	}{
		{"vpc ", 1 << 20, true}, {"qemu", 1 << 20, true},
		{"qem2", -4096, false}, {"win ", -4096, false}, {"d2v ", -4096, false}, {"CTXS", -4096, false},
		{"tap\x00", -4096, false}, {"wa\x00\x00", -4096, false}, {"vs  ", -4096, false}, {"vbox", -4096, false},
	} {
		c := bytes.Clone(img)
		fixFooters(c, func(f []byte) {
			copy(f[28:], tc.app)
			be.PutUint64(f[48:], uint64(cur+tc.delta))
		})
		src, err := vpc.OpenAt(bytes.NewReader(c), int64(len(c)), format.OpenOptions{})
		if err != nil {
			t.Errorf("%q: %v", tc.app, err)
			continue
		}
		want := cur + tc.delta
		if tc.geom {
			want = chs
		}
		if src.Size() != want {
			t.Errorf("creator %q: size %d, want %d", tc.app, src.Size(), want)
		}
	}
	// The largest geometry: the current size, whoever made the image.
	c := bytes.Clone(img)
	fixFooters(c, func(f []byte) {
		be.PutUint16(f[56:], 65535)
		f[58], f[59] = 16, 255
		be.PutUint64(f[48:], uint64(cur-4096))
	})
	if src, err := vpc.OpenAt(bytes.NewReader(c), int64(len(c)), format.OpenOptions{}); err != nil || src.Size() != cur-4096 {
		t.Errorf("largest geometry: %v, size %v; want the current size %d", err, src, cur-4096)
	}
}

// TestMap: vmaconv map of every image is qemu-img map's, entry for entry.
func TestMap(t *testing.T) {
	needFixtures(t)
	for name, path := range fixtures.cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out := mustOnce(t, "qemu-img", "map", "-f", "vpc", "--output", "json", path)
			var want []map[string]any
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatal(err)
			}
			src, err := open(t, path, format.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			var got []map[string]any
			err = pipeline.Map(context.Background(), src, src.Size(), pipeline.MapOptions{End: src.Size()}, func(m format.Mapping, _ bool) error {
				var e map[string]any
				if err := json.Unmarshal([]byte(m.JSON()), &e); err != nil {
					return err
				}
				delete(e, "compressed") // qemu-img 8.1 and later
				got = append(got, e)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("map:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestInfo: info of every image is qemu-img info -f vpc's, key for key.
func TestInfo(t *testing.T) {
	needFixtures(t)
	reg := all.Registry()
	for name, path := range fixtures.cases {
		// Asked again on every pass: the disk size of a file written a
		// moment ago still changes (the file system's own blocks).
		out, err := exec.Command("qemu-img", "info", "-f", "vpc", "--output", "json", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		json.Unmarshal(out, &want)
		in, err := input.Describe(context.Background(), reg, path, input.Options{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		json.Unmarshal(b, &got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: info\n got %v\nwant %v", name, got, want)
		}
	}
}

// TestProbe: a dynamic disk is recognised by its head, a fixed disk by
// its footer (which qemu-img does only with -f vpc); a raw disk is not
// taken for a VHD by a footer that almost is one.
func TestProbe(t *testing.T) {
	needFixtures(t)
	reg := all.Registry()
	probe := func(path string) string {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fm, _, fallback, err := input.Probe(reg, f)
		if err != nil {
			return "error: " + err.Error()
		}
		if fallback {
			return "raw (fallback)"
		}
		return fm.Name
	}
	for _, name := range []string{"dynamic", "fixed", "fixed-holes", "fixed-force-size", "creator-hyperv-fixed"} {
		if got := probe(fixtures.cases[name]); got != "vpc" {
			t.Errorf("%s: probed as %s", name, got)
		}
	}
	fixed, err := os.ReadFile(fixtures.cases["fixed-small"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	be := binary.BigEndian
	for name, change := range map[string]func(b []byte){
		"checksum": func(b []byte) { b[len(b)-512+100]++ }, // a byte of the footer, the checksum not
		"dynamic":  func(b []byte) { f := b[len(b)-512:]; be.PutUint32(f[60:], 3); fixSum(f, 64) },
		"too-big": func(b []byte) {
			f := b[len(b)-512:]
			be.PutUint64(f[48:], uint64(len(b))) // no room for the footer
			fixSum(f, 64)
		},
		"cookie": func(b []byte) { b[len(b)-512] = 'C' },
	} {
		c := bytes.Clone(fixed)
		change(c)
		p := filepath.Join(dir, name+".img")
		os.WriteFile(p, c, 0o644)
		if got := probe(p); got != "raw (fallback)" {
			t.Errorf("%s: probed as %s", name, got)
		}
	}
}

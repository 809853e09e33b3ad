package qcow2_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// image writes data as a raw file and converts it with qemu-img.
func image(t *testing.T, dir, name string, data []byte, args ...string) string {
	t.Helper()
	rawPath := filepath.Join(dir, name+".raw")
	if err := os.WriteFile(rawPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".qcow2")
	testutil.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), rawPath, out)...)
	return out
}

// oracle returns what qemu-img reads from an image.
func oracle(t *testing.T, path string) []byte {
	t.Helper()
	out := path + ".oracle"
	testutil.Run(t, "qemu-img", "convert", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func open(t *testing.T, path string, o format.OpenOptions) (*qcow2.Source, error) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return qcow2.Open(f, o)
}

// conformance holds TestConformance's images and what qemu-img reads from
// each, made once per test binary (go test -cpu=1,4 runs the test twice)
// in a directory TestMain removes.
var conformance struct {
	once  sync.Once
	dir   string
	cases map[string]string // name -> image, checked by formattest.TestSource
	whole map[string]string // name -> image, read whole and mapped
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if conformance.dir != "" {
		os.RemoveAll(conformance.dir)
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

// image writes data as a raw file and converts it with qemu-img.
func (b *builder) image(name string, data []byte, args ...string) string {
	rawPath := filepath.Join(b.dir, name+".raw")
	if err := os.WriteFile(rawPath, data, 0o644); err != nil && b.err == nil {
		b.err = err
	}
	out := filepath.Join(b.dir, name+".qcow2")
	b.run("qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), rawPath, out)...)
	return out
}

// qemuIO creates an image (of the backing file's size if size is empty)
// and runs qemu-io commands on it.
func (b *builder) qemuIO(name, size string, create []string, cmds ...string) string {
	p := filepath.Join(b.dir, name+".qcow2")
	args := append(append([]string{"create", "-q", "-f", "qcow2"}, create...), p)
	if size != "" {
		args = append(args, size)
	}
	b.run("qemu-img", args...)
	args = []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	b.run("qemu-io", append(args, p)...)
	return p
}

// conformanceImages makes the images once. Compressed images and images
// whose reads go through the library (a backing file under extended L2
// entries) cost many times more per byte under -race than the
// rest, and formattest.TestSource reads each disk over 100 MiB in all
// (less for disks under 1 MiB): they are checked by it at 256 KiB (4
// clusters, 128 subclusters), and at the full 8 MiB by a whole read and an
// extent walk.
func conformanceImages() error {
	conformance.once.Do(func() {
		dir, err := os.MkdirTemp("", "vmaconv-qcow2-conformance-")
		if err != nil {
			conformance.err = err
			return
		}
		conformance.dir = dir
		b := &builder{dir: dir}
		mixed := testutil.GenDisk(1, 8<<20, "mixed")
		small := testutil.GenDisk(1, 256<<10, "mixed")
		odd := testutil.GenDisk(2, 3<<20+512*7, "mixed") // not a multiple of 64 KiB
		sparse := make([]byte, 64<<20)
		copy(sparse[40<<20:], testutil.GenDisk(3, 100000, "data"))
		cases := map[string]string{
			"plain":     b.image("plain", mixed),
			"zlib":      b.image("zlib", small, "-c"),
			"zstd":      b.image("zstd", small, "-c", "-o", "compression_type=zstd"),
			"odd-size":  b.image("odd", odd),
			"sparse":    b.image("sparse", sparse),
			"cluster4k": b.image("c4k", odd, "-o", "cluster_size=4096"),
			"cluster2m": b.image("c2m", mixed, "-o", "cluster_size=2M"),
		}
		whole := map[string]string{
			"zlib-8m": b.image("zlib8m", mixed, "-c"),
			"zstd-8m": b.image("zstd8m", mixed, "-c", "-o", "compression_type=zstd"),
		}
		// A backing chain: top holds only what was written over base, the
		// rest reads through. (qemu-img convert -B would store every
		// cluster in top, and nothing would be read from base.)
		b.image("base", mixed)
		b.image("smallbase", small)
		whole["backing-8m"] = b.qemuIO("top8m", "", []string{"-b", "base.qcow2", "-F", "qcow2"},
			"write -P 0x5a 1M 300000", "write -z 5M 1M")
		cases["backing"] = b.qemuIO("top", "", []string{"-b", "smallbase.qcow2", "-F", "qcow2"},
			"write -P 0x5a 100k 150000", "write -z 192k 32k")
		// Extended L2 entries (subclusters), from a conversion and from
		// writes that leave subclusters allocated, zero and unallocated, over
		// nothing and over a backing file.
		cases["extended-l2"] = b.image("ext", mixed, "-o", "extended_l2=on")
		cases["extended-l2-zstd"] = b.image("extz", small, "-c", "-o", "extended_l2=on,compression_type=zstd")
		whole["extended-l2-zstd-8m"] = b.image("extz8m", mixed, "-c", "-o", "extended_l2=on,compression_type=zstd")
		subWrites := []string{"write -P 0x11 4k 2k", "write -P 0x22 70k 5000", "write -z 72k 6k", "write -P 0x33 1M 200k",
			"write -z 1100k 4k", "discard 1040k 8k", "write -P 0x44 3M 64k", "write -z 3M 2k"}
		cases["extended-l2-writes"] = b.qemuIO("extw", "8M", []string{"-o", "extended_l2=on"}, subWrites...)
		whole["extended-l2-backing-8m"] = b.qemuIO("extb8m", "", []string{"-o", "extended_l2=on", "-b", "base.qcow2", "-F", "qcow2"}, subWrites...)
		// The same kinds of writes within 256 KiB, over a 256 KiB backing
		// file.
		cases["extended-l2-backing"] = b.qemuIO("extb", "", []string{"-o", "extended_l2=on", "-b", "smallbase.qcow2", "-F", "qcow2"},
			"write -P 0x11 4k 2k", "write -P 0x22 70k 5000", "write -z 72k 6k", "write -P 0x33 100k 60k",
			"write -z 130k 4k", "discard 110k 8k", "write -P 0x44 192k 64k", "write -z 192k 2k")
		cases["extended-l2-32k"] = b.qemuIO("ext32k", "5M", []string{"-o", "extended_l2=on,cluster_size=32k"}, subWrites...)
		// Zero clusters over allocated ones, discards, a version 2 image, the
		// smallest clusters, and preallocation (clusters allocated in the
		// file's holes, or in allocated but unwritten space).
		cases["zero-clusters"] = b.qemuIO("zc", "8M", nil, "write -P 0x55 0 8M", "write -z 1M 2M", "discard 5M 1M", "write -z 7M 4k")
		cases["version2"] = b.qemuIO("v2", "8M", []string{"-o", "compat=0.10"}, "write -P 0x66 100k 3M", "write -z 2M 64k")
		cases["cluster512"] = b.image("c512", odd, "-o", "cluster_size=512")
		cases["prealloc-metadata"] = b.qemuIO("pm", "64M", []string{"-o", "preallocation=metadata"}, "write -P 0x77 10M 1M", "write -z 20M 64k", "write -P 0x78 63M 4k")
		cases["prealloc-falloc"] = b.qemuIO("pf", "16M", []string{"-o", "preallocation=falloc"}, "write -P 0x79 1M 100k")
		// What qemu-img reads from each: path + ".oracle".
		for _, m := range []map[string]string{cases, whole} {
			for _, path := range m {
				b.run("qemu-img", "convert", "-O", "raw", path, path+".oracle")
			}
		}
		conformance.cases, conformance.whole, conformance.err = cases, whole, b.err
	})
	return conformance.err
}

// serialOnly are the conformance cases read without formattest's reads in
// parallel: compressed clusters under extended L2 entries are read by the
// library, which decodes an L2 table per cluster (with encoding/binary,
// slow under -race: 15 s of the two passes); reads in parallel through
// the library are checked on extended-l2-backing, of zstd clusters on
// zstd.
var serialOnly = map[string]bool{"extended-l2-zstd": true}

func TestConformance(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	if err := conformanceImages(); err != nil {
		t.Fatal(err)
	}
	for name, path := range conformance.cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(path + ".oracle")
			if err != nil {
				t.Fatal(err)
			}
			src, err := open(t, path, format.OpenOptions{AllowBacking: true})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if serialOnly[name] {
				formattest.TestSourceSerial(t, src, want)
				return
			}
			formattest.TestSource(t, src, want)
		})
	}
	for name, path := range conformance.whole {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(path + ".oracle")
			if err != nil {
				t.Fatal(err)
			}
			src, err := open(t, path, format.OpenOptions{AllowBacking: true})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.Size() != int64(len(want)) {
				t.Fatalf("Size() = %d, want %d", src.Size(), len(want))
			}
			got := make([]byte, len(want))
			if n, err := src.ReadAt(got, 0); n != len(got) || err != nil && err != io.EOF {
				t.Fatalf("ReadAt(all %d bytes) = %d, %v", len(got), n, err)
			}
			if !bytes.Equal(got, want) {
				t.Error("the disk read whole differs from qemu-img's")
			}
			for pos := int64(0); pos < src.Size(); {
				e, err := src.Region(pos, src.Size()-pos)
				if err != nil || e.Start != pos || e.Length <= 0 || e.Start+e.Length > src.Size() {
					t.Fatalf("Region(%d, %d) = %+v, %v", pos, src.Size()-pos, e, err)
				}
				if e.Zero && !testutil.AllZero(want[pos:pos+e.Length]) {
					t.Errorf("extent %+v is reported zero but is not", e)
				}
				pos += e.Length
			}
		})
	}
}

func TestBackingPolicy(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	image(t, dir, "base", testutil.GenDisk(5, 1<<20, "data"))
	top := filepath.Join(dir, "top.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	// qemu-img no longer creates a backing link without its format; drop
	// the format by renaming its header extension to an unknown type.
	noFmt := filepath.Join(dir, "nofmt.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", noFmt)
	nb, _ := os.ReadFile(noFmt)
	i := bytes.Index(nb, []byte{0xe2, 0x79, 0x2a, 0xca})
	if i < 0 {
		t.Fatal("backing format extension not found")
	}
	copy(nb[i:], []byte{0x7f, 0x00, 0x00, 0x01})
	os.WriteFile(noFmt, nb, 0o644)
	missing := filepath.Join(dir, "missing.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", missing, "1M")
	loopA, loopB := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", loopA, "1M")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", loopB, "1M")
	// A chain of 17 distinct images, and a chain whose L1 tables add up
	// to more than 64 MiB (three of 24 MiB: 96 GiB at 512-byte clusters).
	deep := filepath.Join(dir, "deep0.qcow2")
	testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", deep, "1M")
	for i := 1; i <= 17; i++ {
		next := filepath.Join(dir, fmt.Sprintf("deep%d.qcow2", i))
		testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", filepath.Base(deep), "-F", "qcow2", next, "1M")
		deep = next
	}
	// widen gives an image a 24 MiB L1 table of zeros (a sparse tail).
	widen := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint32(b[36:], 3<<20)
		l1 := int64(binary.BigEndian.Uint64(b[40:]))
		clear(b[l1:min(int64(len(b)), l1+64<<10)])
		os.WriteFile(path, b, 0o644)
		os.Truncate(path, l1+24<<20)
	}
	wide := filepath.Join(dir, "wide0.qcow2")
	testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", wide, "1M")
	widen(wide)
	for i := 1; i <= 2; i++ {
		next := filepath.Join(dir, fmt.Sprintf("wide%d.qcow2", i))
		testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", filepath.Base(wide), "-F", "qcow2", next, "1M")
		widen(next)
		wide = next
	}
	fifoTop := filepath.Join(dir, "fifo.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-u", "-b", "fifo", "-F", "raw", fifoTop, "1M")
	testutil.Run(t, "mkfifo", filepath.Join(dir, "fifo"))

	tests := []struct {
		path  string
		o     format.OpenOptions
		match string
	}{
		{top, format.OpenOptions{}, "pass --allow-backing"},
		{noFmt, format.OpenOptions{AllowBacking: true}, "does not record the backing file's format"},
		{missing, format.OpenOptions{AllowBacking: true}, "gone.qcow2"},
		{loopA, format.OpenOptions{AllowBacking: true}, "backing file loop: " + loopA + " is already in the chain"},
		{deep, format.OpenOptions{AllowBacking: true}, "deeper than 16"},
		{wide, format.OpenOptions{AllowBacking: true}, "L1 tables need more than 64 MiB"},
		{top, format.OpenOptions{Forced: true}, "pass --allow-backing"}, // -f qcow2 is no consent
		{fifoTop, format.OpenOptions{AllowBacking: true}, "not a regular file"},
	}
	for _, tc := range tests {
		src, err := open(t, tc.path, tc.o)
		if err == nil {
			src.Close()
			t.Errorf("%s opened", filepath.Base(tc.path))
			continue
		}
		if !errors.Is(err, qcow2.ErrBacking) || !strings.Contains(err.Error(), tc.match) {
			t.Errorf("%s: %v; want ErrBacking mentioning %q", filepath.Base(tc.path), err, tc.match)
		}
	}
	var notes []string
	src, err := open(t, top, format.OpenOptions{AllowBacking: true, Note: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	if want := top + ": reading backing file " + filepath.Join(dir, "base.qcow2") + " (qcow2)"; len(notes) != 1 || notes[0] != want {
		t.Errorf("notes %q, want [%q]", notes, want)
	}
}

// TestHostileHeader: header fields the library would trust are checked
// first, as strictly as qemu-img checks them (each image here is refused
// by qemu-img info too), with errors that name the field; and a corrupt
// backing image does not panic.
func TestHostileHeader(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	good := image(t, dir, "good", testutil.GenDisk(6, 1<<20, "data"))
	b, _ := os.ReadFile(good)
	patch := func(name string, f func(h []byte)) string {
		c := append([]byte(nil), b...)
		f(c)
		p := filepath.Join(dir, name)
		os.WriteFile(p, c, 0o644)
		return p
	}
	be := binary.BigEndian
	short := filepath.Join(dir, "short")
	os.WriteFile(short, b[:30], 0o644)
	tests := []struct {
		path  string
		kind  error
		match string
	}{
		{patch("l1huge", func(h []byte) { be.PutUint32(h[36:], 0x7fffffff) }), qcow2.ErrCorrupt, "l1_size 2147483647: an L1 table of 16383 MiB (qemu's limit is 32 MiB)"},
		{patch("l1offset", func(h []byte) { be.PutUint64(h[40:], 1<<50) }), qcow2.ErrCorrupt, "L1 table at 0x4000000000000 (8 bytes) runs past the end of the file"},
		{patch("l1align", func(h []byte) { be.PutUint64(h[40:], be.Uint64(h[40:])+8) }), qcow2.ErrCorrupt, "is not aligned to a cluster"},
		{patch("clusterbits", func(h []byte) { be.PutUint32(h[20:], 40) }), qcow2.ErrCorrupt, "cluster_bits 40: unsupported cluster size"},
		{patch("size", func(h []byte) { be.PutUint64(h[24:], 1<<60) }), qcow2.ErrCorrupt, "virtual size"},
		{patch("version4", func(h []byte) { be.PutUint32(h[4:], 4) }), qcow2.ErrUnsupported, "qcow version 4"},
		{patch("version1", func(h []byte) { be.PutUint32(h[4:], 1) }), qcow2.ErrUnsupported, "qcow version 1 (the original qcow format); convert it with qemu-img convert -O qcow2"},
		{patch("headerlen", func(h []byte) { be.PutUint32(h[100:], 96) }), qcow2.ErrCorrupt, "header too short: header_length 96, at least 104 for version 3"},
		{patch("extension", func(h []byte) { be.PutUint32(h[112:], 0x12345678); be.PutUint32(h[116:], 70000) }), qcow2.ErrCorrupt, "header extension 0x12345678 at 0x70: 70000 bytes run past the end of the first cluster"},
		{patch("refcountorder", func(h []byte) { be.PutUint32(h[96:], 7) }), qcow2.ErrCorrupt, "refcount_order 7: reference count entries are at most 64 bits"},
		{patch("reftablesize", func(h []byte) { be.PutUint32(h[56:], 200) }), qcow2.ErrCorrupt, "refcount table of 200 clusters is too large (at most 8 MiB)"},
		{patch("reftableoffset", func(h []byte) { be.PutUint64(h[48:], 0x10001) }), qcow2.ErrCorrupt, "refcount_table_offset 0x10001 is not aligned to a cluster"},
		{patch("snapshots", func(h []byte) { be.PutUint32(h[60:], 70000); be.PutUint64(h[64:], 0x10000) }), qcow2.ErrCorrupt, "snapshot table too large: 70000 snapshots (at most 65536)"},
		{short, qcow2.ErrCorrupt, "header too short: 30 bytes"},
	}
	for _, tc := range tests {
		name := filepath.Base(tc.path)
		if name != "size" && name != "short" { // qemu reads those two differently: not an oracle case
			// qemu-img check, or failing that a full read, must object
			// (qemu reads an L1 table past the end of the file as zeros,
			// but check reports it).
			_, cerr := exec.Command("qemu-img", "check", "-f", "qcow2", tc.path).CombinedOutput()
			out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", tc.path, filepath.Join(dir, "oracle.raw")).CombinedOutput()
			if cerr == nil && err == nil {
				t.Errorf("%s: qemu-img checks and reads it, so the test is wrong:\n%s", name, out)
			}
		}
		src, err := open(t, tc.path, format.OpenOptions{})
		if err == nil {
			src.Close()
			t.Errorf("%s opened", name)
			continue
		}
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.match) {
			t.Errorf("%s: %v; want %v mentioning %q", name, err, tc.kind, tc.match)
		}
	}

	// A backing file that is a corrupt qcow2: an error, not a panic.
	os.WriteFile(filepath.Join(dir, "badbase.qcow2"), append([]byte("QFI\xfb"), make([]byte, 200)...), 0o644)
	top := filepath.Join(dir, "badtop.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-u", "-b", "badbase.qcow2", "-F", "qcow2", top, "1M")
	if src, err := open(t, top, format.OpenOptions{AllowBacking: true}); err == nil {
		src.Close()
		t.Error("corrupt backing file accepted")
	} else {
		t.Log(err)
	}
}

// FuzzOpen opens arbitrary bytes as a qcow2 image through the driver and
// reads it: errors are fine, panics and hangs are not; ranges the cluster
// map calls zero read as zeros; and where qemu-img is installed, an image
// that both read gives the same bytes (the first 4 MiB).
//
//	go test -run '^$' -fuzz FuzzOpen -fuzzminimizetime 2s ./format/qcow2/
func FuzzOpen(f *testing.F) {
	qemuImg, _ := exec.LookPath("qemu-img")
	if qemuImg != "" || os.Getenv("CI") == "true" {
		dir := f.TempDir()
		data := testutil.GenDisk(7, 256<<10, "mixed")
		for i, args := range [][]string{{}, {"-c"}, {"-c", "-o", "compression_type=zstd"}, {"-o", "cluster_size=4096"},
			{"-o", "extended_l2=on"}, {"-o", "compat=0.10"}} {
			raw := filepath.Join(dir, "d.raw")
			os.WriteFile(raw, data, 0o644)
			out := filepath.Join(dir, fmt.Sprint(i, ".qcow2"))
			testutil.Run(f, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), raw, out)...)
			b, _ := os.ReadFile(out)
			f.Add(b)
		}
	}
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "x.qcow2")
		os.WriteFile(path, b, 0o644)
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		src, err := qcow2.Open(fh, format.OpenOptions{})
		if err != nil {
			return
		}
		defer src.Close()
		size := min(src.Size(), 4<<20)
		got := make([]byte, size)
		for off := int64(0); off < size; {
			e, err := src.Region(off, size-off)
			if err != nil {
				return
			}
			n := min(e.Length, size-off)
			if _, err := src.ReadAt(got[off:off+n], off); err != nil && err != io.EOF {
				return
			}
			if e.Zero && !testutil.AllZero(got[off:off+n]) {
				t.Fatalf("the map calls %d bytes at %d zero; they read as data", n, off)
			}
			off += n
		}
		if qemuImg == "" || src.Size() > 64<<20 {
			return
		}
		ref := path + ".raw"
		if exec.Command(qemuImg, "convert", "-f", "qcow2", "-O", "raw", path, ref).Run() != nil {
			return // qemu refuses what we read: its checks are tested elsewhere
		}
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(want)) < size || !bytes.Equal(got, want[:size]) {
			t.Fatalf("the first %d bytes differ from qemu-img's", size)
		}
	})
}

// TestOddVirtualSize: a virtual size that is not a multiple of 512 reads
// as qemu-img reads it, cut to whole sectors.
func TestOddVirtualSize(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	data := testutil.GenDisk(8, 1<<20, "data")
	path := image(t, dir, "odd", data)
	b, _ := os.ReadFile(path)
	binary.BigEndian.PutUint64(b[24:], 1000000)
	os.WriteFile(path, b, 0o644)
	want := oracle(t, path)
	if len(want) != 999936 {
		t.Fatalf("qemu-img reads %d bytes; the test expects 999936", len(want))
	}
	src, err := open(t, path, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	formattest.TestSource(t, src, want)
}

package vmdk_test

import (
	"bytes"
	"encoding/binary"
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
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// fixtures holds images qemu-img and qemu-io made (and descriptors and
// ESX sparse extents made by hand, in the layouts VMware writes), and
// what qemu-img reads from each, made once per test binary (go test
// -cpu=1,4 runs the tests twice) in a directory TestMain removes.
var fixtures struct {
	once  sync.Once
	dir   string
	cases map[string]string // name -> image, checked by formattest.TestSource
	whole map[string]string // name -> image, read whole and mapped
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

func (b *builder) write(name string, data []byte) string {
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil && b.err == nil {
		b.err = err
	}
	return p
}

// convert writes data as a raw file and converts it with qemu-img into
// name.vmdk, with the given -o options.
func (b *builder) convert(name string, data []byte, opts string) string {
	raw := b.write(name+".raw", data)
	out := filepath.Join(b.dir, name+".vmdk")
	args := []string{"convert", "-f", "raw", "-O", "vmdk"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	b.run("qemu-img", append(args, raw, out)...)
	return out
}

// sparseDisk is size bytes of zeros with data pieces at the given
// offsets: a disk whose grain tables (32 MiB each) are not all used.
func sparseDisk(seed uint64, size int64, at ...int64) []byte {
	d := make([]byte, size)
	for i, off := range at {
		copy(d[off:], testutil.GenDisk(seed+uint64(i), min(300000, size-off), "mixed"))
	}
	return d
}

// cowd builds an ESX sparse extent (COWD) of data, with grains of gran
// sectors; grains of zeros are left unallocated, and so is every grain
// table of a range without data.
func cowd(data []byte, gran int64) []byte {
	const gtes = 4096
	sectors := int64(len(data)+511) / 512
	grain := gran * 512
	gdEntries := (sectors + gtes*gran - 1) / (gtes * gran)
	gdSectors := (gdEntries*4 + 511) / 512
	var tables [][]uint32
	for range gdEntries {
		tables = append(tables, make([]uint32, gtes))
	}
	next := 1 + gdSectors + gdEntries*gtes*4/512
	var grains bytes.Buffer
	for g := int64(0); g*grain < int64(len(data)); g++ {
		b := make([]byte, grain)
		copy(b, data[g*grain:])
		if testutil.AllZero(b) {
			continue
		}
		tables[g/gtes][g%gtes] = uint32(next)
		grains.Write(b)
		next += gran
	}
	out := make([]byte, 512)
	copy(out, "COWD")
	le := binary.LittleEndian
	for i, v := range []uint32{1, 3, uint32(sectors), uint32(gran), 1, uint32(gdEntries), uint32(next), 0, 0, 0} {
		le.PutUint32(out[4+4*i:], v)
	}
	gd := make([]byte, gdSectors*512)
	for i := range gdEntries {
		le.PutUint32(gd[4*i:], uint32(1+gdSectors+i*gtes*4/512))
	}
	out = append(out, gd...)
	for _, t := range tables {
		for _, e := range t {
			out = le.AppendUint32(out, e)
		}
	}
	return append(out, grains.Bytes()...)
}

// descriptorFile is a descriptor file of the given type, CIDs and
// extent lines, as VMware writes one.
func descriptorFile(createType string, cid, parentCID uint32, parent string, extents ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=%08x\nparentCID=%08x\n", cid, parentCID)
	fmt.Fprintf(&b, "isNativeSnapshot = \"no\"\ncreateType=\"%s\"\n", createType)
	if parent != "" {
		fmt.Fprintf(&b, "parentFileNameHint=\"%s\"\n", parent)
	}
	b.WriteString("\n# Extent description\n")
	for _, e := range extents {
		b.WriteString(e + "\n")
	}
	b.WriteString("\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"10\"\n" +
		"ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.virtualHWVersion = \"14\"\n")
	return []byte(b.String())
}

// fixtureImages makes the images once.
func fixtureImages() error {
	fixtures.once.Do(func() {
		dir, err := os.MkdirTemp("", "vmaconv-vmdk-fixtures-")
		if err != nil {
			fixtures.err = err
			return
		}
		fixtures.dir = dir
		b := &builder{dir: dir}
		mixed := testutil.GenDisk(1, 3<<20+7*512, "mixed") // not a multiple of 64 KiB
		text := testutil.GenDisk(2, 2<<20, "text")
		cases := map[string]string{
			"monolithicSparse":     b.convert("sparse", mixed, ""),
			"streamOptimized":      b.convert("stream", mixed, "subformat=streamOptimized"),
			"streamOptimized-text": b.convert("stream-text", text, "subformat=streamOptimized"),
			"monolithicFlat":       b.convert("flat", mixed, "subformat=monolithicFlat"),
			"twoGbMaxExtentSparse": b.convert("split", mixed, "subformat=twoGbMaxExtentSparse"),
			"twoGbMaxExtentFlat":   b.convert("splitflat", mixed, "subformat=twoGbMaxExtentFlat"),
			"lsilogic-hw6":         b.convert("lsi", text, "adapter_type=lsilogic,compat6=on"),
		}
		// More than one grain table (each maps 32 MiB).
		big := sparseDisk(3, 66<<20, 0, 33<<20, 66<<20-200000)
		whole := map[string]string{
			"sparse-66m": b.convert("sparse66", big, ""),
			"stream-66m": b.convert("stream66", big, "subformat=streamOptimized"),
		}
		// Zeroed grains (version 2), written by qemu-io.
		zg := filepath.Join(dir, "zeroed.vmdk")
		b.run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", zg, "2M")
		b.run("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "-c", "write -z 64k 128k", "-c", "write -z 1M 64k",
			"-c", "write -P 0x22 1600k 10000", zg)
		cases["zeroed-grain"] = zg
		// A child and its parent (parentFileNameHint), written by qemu-io.
		child := filepath.Join(dir, "child.vmdk")
		b.run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "sparse.vmdk", "-F", "vmdk", child)
		b.run("qemu-io", "-f", "vmdk", "-c", "write -P 0x33 100k 200k", "-c", "write -P 0x44 2M 64k", child)
		cases["child"] = child
		// An ESXi disk: a vmfs descriptor over a flat extent, and a
		// snapshot of it: a vmfsSparse descriptor over an ESX sparse
		// extent (COWD), its parent the first.
		b.write("esx-flat.vmdk", mixed)
		cases["vmfs"] = b.write("esx.vmdk", descriptorFile("vmfs", 0x1234abcd, 0xffffffff, "",
			fmt.Sprintf("RW %d VMFS \"esx-flat.vmdk\"", len(mixed)/512)))
		delta := make([]byte, len(mixed))
		copy(delta[200<<10:], testutil.GenDisk(4, 150000, "data"))
		copy(delta[3<<20:], testutil.GenDisk(5, 4096, "data"))
		b.write("esx-000001-delta.vmdk", cowd(delta, 8))
		snap := b.write("esx-000001.vmdk", descriptorFile("vmfsSparse", 0x55667788, 0x1234abcd, "esx.vmdk",
			fmt.Sprintf("RW %d VMFSSPARSE \"esx-000001-delta.vmdk\"", len(mixed)/512)))
		cases["vmfsSparse-snapshot"] = snap
		// Several extents of every kind in one descriptor: a flat one at an
		// offset into its file, a hosted sparse one, an ESX sparse one, a
		// read-only flat one.
		part := testutil.GenDisk(6, 1<<20, "mixed")
		b.write("multi-f1.vmdk", append(make([]byte, 4096), part...))
		b.convert("multi-s2", testutil.GenDisk(7, 1<<20, "mixed"), "")
		b.write("multi-c3.vmdk", cowd(testutil.GenDisk(8, 512<<10, "mixed"), 16))
		b.write("multi-f4.vmdk", testutil.GenDisk(9, 256<<10, "text"))
		cases["multi-extent"] = b.write("multi.vmdk", descriptorFile("twoGbMaxExtentFlat", 0xcafe, 0xffffffff, "",
			`RW 2048 FLAT "multi-f1.vmdk" 8`, `RW 2048 SPARSE "multi-s2.vmdk"`, `RW 1024 VMFSSPARSE "multi-c3.vmdk"`,
			`RW 512 FLAT "multi-f4.vmdk" 0`))
		// Two flat extents whose places run on from one file into the
		// next: qemu-img map keeps them apart, by file.
		b.write("cont-a.vmdk", testutil.GenDisk(10, 1<<20, "data"))
		b.write("cont-b.vmdk", append(make([]byte, 1<<20), testutil.GenDisk(11, 1<<20, "data")...))
		cases["contiguous-files"] = b.write("cont.vmdk", descriptorFile("twoGbMaxExtentFlat", 0xbeef, 0xffffffff, "",
			`RW 2048 FLAT "cont-a.vmdk" 0`, `RW 2048 FLAT "cont-b.vmdk" 2048`))
		// What qemu-img reads from each: path + ".oracle".
		for _, m := range []map[string]string{cases, whole} {
			for _, path := range m {
				b.run("qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, path+".oracle")
			}
		}
		fixtures.cases, fixtures.whole, fixtures.err = cases, whole, b.err
	})
	return fixtures.err
}

func requireFixtures(t *testing.T) {
	t.Helper()
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	if err := fixtureImages(); err != nil {
		t.Fatal(err)
	}
}

func open(t testing.TB, path string, o format.OpenOptions) (*vmdk.Source, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return vmdk.Open(f, o)
}

func oracle(t *testing.T, path string) []byte {
	t.Helper()
	want, err := os.ReadFile(path + ".oracle")
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// TestConformance: every subformat qemu-img writes, zeroed grains, a
// child over its parent, ESXi's vmfs and vmfsSparse descriptors and a
// descriptor with extents of every kind read bit-exact against qemu-img
// convert -O raw, and pass formattest.TestSource; images of more than one
// grain table are read whole and their zero map checked.
func TestConformance(t *testing.T) {
	requireFixtures(t)
	for name, path := range fixtures.cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := oracle(t, path)
			src, err := open(t, path, format.OpenOptions{AllowBacking: true})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			formattest.TestSource(t, src, want)
		})
	}
	for name, path := range fixtures.whole {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := oracle(t, path)
			src, err := open(t, path, format.OpenOptions{})
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
			zeros := int64(0)
			for pos := int64(0); pos < src.Size(); {
				e, err := src.Region(pos, src.Size()-pos)
				if err != nil || e.Start != pos || e.Length <= 0 || e.Start+e.Length > src.Size() {
					t.Fatalf("Region(%d, %d) = %+v, %v", pos, src.Size()-pos, e, err)
				}
				if e.Zero {
					if !allZero(want[pos : pos+e.Length]) {
						t.Errorf("extent %+v is reported zero but is not", e)
					}
					zeros += e.Length
				}
				pos += e.Length
			}
			if zeros < 60<<20 {
				t.Errorf("the zero map finds %d bytes of zeros; the disk has over 60 MiB in unallocated grains", zeros)
			}
		})
	}
}

var zeros = make([]byte, 1<<20)

// allZero reports whether b is all zeros, by bytes.Equal, which -race
// does not instrument byte by byte.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

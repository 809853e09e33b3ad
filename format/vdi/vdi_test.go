package vdi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
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
	"github.com/vmaconv/vmaconv/format/vdi"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

const mib = 1 << 20

// fixtures holds the images every test of the package shares, made once
// per test binary (go test -cpu=1,4 runs each test twice) by qemu-img
// and qemu-io, or from their images by hand, in a directory TestMain
// removes; each has what qemu-img reads from it beside it (path +
// ".oracle").
var fixtures struct {
	once   sync.Once
	dir    string
	images map[string]string // name -> path
	data   []byte            // the disk the converted images hold
	raw    string            // data as a raw file
	err    error
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

func (b *builder) path(name string) string { return filepath.Join(b.dir, name+".vdi") }

// convert converts the raw file src with qemu-img.
func (b *builder) convert(name, src string, args ...string) string {
	out := b.path(name)
	b.run("qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "vdi"}, args...), src, out)...)
	return out
}

// qemuIO creates an image and runs qemu-io commands on it.
func (b *builder) qemuIO(name, size string, create []string, cmds ...string) string {
	p := b.path(name)
	b.run("qemu-img", append(append([]string{"create", "-q", "-f", "vdi"}, create...), p, size)...)
	args := []string{"-f", "vdi"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	b.run("qemu-io", append(args, p)...)
	return p
}

// patch writes a copy of the image from as name, changed by f.
func (b *builder) patch(name, from string, f func([]byte) []byte) string {
	if b.err != nil {
		return ""
	}
	img, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(b.path(name), f(img), 0o644)
	}
	if err != nil {
		b.err = err
	}
	return b.path(name)
}

var le = binary.LittleEndian

// vbox lays out a qemu-img image as VirtualBox writes one: its pre-header
// text, a version 1.1 header of 0x190 bytes with the LCHS geometry, and
// the block map and data aligned to 1 MiB (VDI_DATA_ALIGN).
func vbox(img []byte) []byte {
	blocks := int(le.Uint32(img[0x180:]))
	offBmap, offData := int(le.Uint32(img[0x154:])), int(le.Uint32(img[0x158:]))
	newData := (mib + 4*blocks + mib - 1) &^ (mib - 1)
	out := make([]byte, newData+len(img)-offData)
	copy(out, img[:512])
	clear(out[:64])
	copy(out, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	le.PutUint32(out[0x48:], 0x190)
	le.PutUint32(out[0x154:], mib)
	le.PutUint32(out[0x158:], uint32(newData))
	for i, v := range []uint32{1024, 16, 63, 512} { // LCHSGeometry
		le.PutUint32(out[0x1c8+4*i:], v)
	}
	copy(out[mib:], img[offBmap:offBmap+4*blocks])
	copy(out[newData:], img[offData:])
	return out
}

// mixedDisk returns a disk of 6 MiB and 1636 bytes (not a whole sector)
// of mixed content, with whole blocks of zeros (1, 2 and 4).
func mixedDisk() []byte {
	d := testutil.GenDisk(1, 6*mib+1636, "mixed")
	clear(d[1*mib : 3*mib])
	clear(d[4*mib : 5*mib])
	return d
}

func loadFixtures() error {
	fixtures.once.Do(func() {
		dir, err := os.MkdirTemp("", "vmaconv-vdi-")
		if err != nil {
			fixtures.err = err
			return
		}
		fixtures.dir = dir
		b := &builder{dir: dir}
		fixtures.data = mixedDisk()
		fixtures.raw = filepath.Join(dir, "mixed.raw")
		if err := os.WriteFile(fixtures.raw, fixtures.data, 0o644); err != nil {
			fixtures.err = err
			return
		}
		sparse := make([]byte, 12*mib)
		copy(sparse[9*mib+5000:], testutil.GenDisk(3, 100000, "data"))
		sparseRaw := filepath.Join(dir, "sparse.raw")
		os.WriteFile(sparseRaw, sparse, 0o644)
		im := map[string]string{
			"dynamic": b.convert("dynamic", fixtures.raw),
			"static":  b.convert("static", fixtures.raw, "-o", "static=on"),
			"sparse":  b.convert("sparse", sparseRaw),
			// Blocks allocated out of order, partly written, one full of
			// written zeros (qemu has no zero write for vdi), in a static
			// image made by create (every block a hole until written).
			"out-of-order": b.qemuIO("ooo", "6M", nil, "write -P 0x11 4M 1M", "write -P 0x22 100k 100k",
				"write -P 0x33 2M 64k", "write -P 0x44 4M 4k", "write -z 1M 1M", "write -P 0x55 5M 512"),
			"created-static": b.qemuIO("cstatic", "5M", []string{"-o", "static=on"}, "write -P 0x66 1M 300k", "write -P 0x77 3M 4k"),
			// create keeps a size that is not a whole sector (qemu
			// writes it back rounded up when it allocates a block).
			"odd-created": b.qemuIO("oddc", "3000000", nil, "write -P 0x12 2M 4096", "write -P 0x13 2999808 512"),
		}
		// Blocks 0 and 3 discarded: 0xfffffffe reads as zeros.
		im["discarded"] = b.patch("discarded", im["dynamic"], func(img []byte) []byte {
			le.PutUint32(img[0x200:], 0xfffffffe)
			le.PutUint32(img[0x200+4*3:], 0xfffffffe)
			return img
		})
		// VBoxManage convertfromraw keeps a size that is not a whole
		// sector.
		im["odd-size"] = b.patch("oddsize", im["dynamic"], func(img []byte) []byte {
			le.PutUint64(img[0x170:], le.Uint64(img[0x170:])-700)
			return img
		})
		im["virtualbox"] = b.patch("vbox", im["dynamic"], vbox)
		im["virtualbox-fixed"] = b.patch("vboxfixed", im["static"], vbox)
		// The bytes past the disk's end in the last data block are not
		// needed: qemu reads them as zeros past the end of the file.
		im["short-last-block"] = b.patch("short", im["static"], func(img []byte) []byte {
			return img[:len(img)-mib+(len(fixtures.data)%mib+511)&^511]
		})
		for _, p := range im {
			b.run("qemu-img", "convert", "-f", "vdi", "-O", "raw", p, p+".oracle")
		}
		fixtures.images, fixtures.err = im, b.err
	})
	return fixtures.err
}

func fixture(t *testing.T) {
	t.Helper()
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	if err := loadFixtures(); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, path string) (*vdi.Source, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return vdi.Open(f, format.OpenOptions{})
}

func mustOpen(t *testing.T, path string) *vdi.Source {
	t.Helper()
	s, err := open(t, path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// parallelReads are the images TestConformance reads in parallel too, and
// from a reader (OpenAt).
var parallelReads = map[string]bool{"dynamic": true, "out-of-order": true, "created-static": true}

// TestConformance: every image, made by qemu-img or laid out as
// VirtualBox writes them, reads as qemu-img reads it, in parallel and at
// any offset, with a zero map that is right (formattest.TestSource),
// whether opened from a file or from a reader (OpenAt).
func TestConformance(t *testing.T) {
	fixture(t)
	for name, path := range fixtures.images {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(path + ".oracle")
			if err != nil {
				t.Fatal(err)
			}
			src := mustOpen(t, path)
			defer src.Close()
			// Reads in parallel cost the most under -race: on one
			// image of each kind.
			if !parallelReads[name] {
				formattest.TestSourceSerial(t, src, want)
				return
			}
			formattest.TestSource(t, src, want)
			// From a reader: no file, no holes to ask about.
			b, _ := os.ReadFile(path)
			at, err := vdi.OpenAt(bytes.NewReader(b), int64(len(b)), "", format.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			formattest.TestSourceSerial(t, at, want)
		})
	}
}

// TestZeroMap: unallocated and discarded blocks are zero regions, and so
// are the holes of a static image made by create, so that they are never
// read; allocated data is never zero.
func TestZeroMap(t *testing.T) {
	fixture(t)
	for _, c := range []struct {
		name string
		zero int64 // bytes the zero map must cover at least
	}{
		{"dynamic", 3 * mib}, {"discarded", 5 * mib}, {"sparse", 11 * mib}, {"created-static", 4 * mib},
	} {
		src := mustOpen(t, fixtures.images[c.name])
		var zero int64
		for pos := int64(0); pos < src.Size(); {
			r, err := src.Region(pos, src.Size()-pos)
			if err != nil {
				t.Fatal(err)
			}
			if r.Zero {
				zero += r.Length
			}
			pos += r.Length
		}
		src.Close()
		if zero < c.zero {
			t.Errorf("%s: %d bytes mapped zero, want at least %d", c.name, zero, c.zero)
		}
	}
}

// qemuMap is an entry of qemu-img map --output json.
type qemuMap struct {
	Start, Length       int64
	Depth               int
	Present, Zero, Data bool
	Offset              *int64
}

// TestMapping: the map walked as vmaconv map walks it is qemu-img map's,
// entry for entry, offsets included.
func TestMapping(t *testing.T) {
	fixture(t)
	for _, name := range []string{"dynamic", "static", "out-of-order", "created-static", "discarded", "virtualbox", "odd-created", "sparse"} {
		path := fixtures.images[name]
		out, err := exec.Command("qemu-img", "map", "--output", "json", "-f", "vdi", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		var want []qemuMap
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatal(err)
		}
		src := mustOpen(t, path)
		var got []qemuMap
		err = pipeline.Map(context.Background(), src, src.Size(), pipeline.MapOptions{End: src.Size()}, func(m format.Mapping, _ bool) error {
			e := qemuMap{Start: m.Start, Length: m.Length, Depth: m.Depth, Present: m.Present, Zero: m.Zero, Data: m.Data}
			if m.Offset >= 0 {
				e.Offset = &m.Offset
			}
			got = append(got, e)
			return nil
		})
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if g, w := fmt.Sprint(deref(got)), fmt.Sprint(deref(want)); g != w {
			t.Errorf("%s: map\n%s\nqemu-img map\n%s", name, g, w)
		}
	}
}

func deref(m []qemuMap) []string {
	var s []string
	for _, e := range m {
		off := "-"
		if e.Offset != nil {
			off = fmt.Sprint(*e.Offset)
		}
		s = append(s, fmt.Sprintf("%d+%d p%t z%t d%t @%s", e.Start, e.Length, e.Present, e.Zero, e.Data, off))
	}
	return s
}

// TestInfo: info's fields are qemu-img info's, key for key.
func TestInfo(t *testing.T) {
	fixture(t)
	for _, name := range []string{"dynamic", "static", "odd-size", "virtualbox"} {
		path := fixtures.images[name]
		out, err := exec.Command("qemu-img", "info", "--output", "json", "-f", "vdi", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		json.Unmarshal(out, &want)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		in, err := vdi.Format.InfoAt(f, fi.Size(), format.FileStat{Name: path, Size: fi.Size(), Allocated: int64(want["actual-size"].(float64))})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(in)
		var got map[string]any
		json.Unmarshal(j, &got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: info %v\nqemu-img info %v", name, got, want)
		}
	}
}

// TestEmpty: an image of no bytes (qemu-img create's 0) opens and reads
// nothing, and the Writer writes it as qemu-img does.
func TestEmpty(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	for _, static := range []string{"off", "on"} {
		p := filepath.Join(dir, static+".vdi")
		testutil.Run(t, "qemu-img", "create", "-q", "-f", "vdi", "-o", "static="+static, p, "0")
		src := mustOpen(t, p)
		if n, err := src.ReadAt(make([]byte, 1), 0); src.Size() != 0 || n != 0 || err != io.EOF {
			t.Errorf("static=%s: size %d, ReadAt = %d, %v", static, src.Size(), n, err)
		}
		src.Close()
		ours := p + ".ours"
		f, err := os.Create(ours)
		if err != nil {
			t.Fatal(err)
		}
		w, err := vdi.NewWriter(f, 0, vdi.WriterOptions{Static: static == "on"})
		if err == nil {
			err = w.Close()
		}
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(ours)
		b, _ := os.ReadFile(p)
		if len(a) != len(b) || !bytes.Equal(a[:0x188], b[:0x188]) || !bytes.Equal(a[0x1a8:], b[0x1a8:]) {
			t.Errorf("static=%s: the empty image differs from qemu-img's beyond the UUIDs", static)
		}
	}
}

// TestProbe: a VDI is recognised by its signature in a whole header, as
// QEMU's vdi_probe does.
func TestProbe(t *testing.T) {
	fixture(t)
	b, _ := os.ReadFile(fixtures.images["dynamic"])
	head := b[:4096]
	if !vdi.Format.Probe(head) {
		t.Error("a qemu-img image is not recognised")
	}
	if vdi.Format.Probe(head[:511]) {
		t.Error("511 bytes recognised: QEMU wants a whole header")
	}
	bad := bytes.Clone(head)
	bad[0x40] ^= 1
	if vdi.Format.Probe(bad) {
		t.Error("a wrong signature recognised")
	}
}

// TestHostile: headers and block maps that QEMU refuses, or that no
// writer makes and would make a reader read outside the image, are
// refused with one line naming the field and where it is; each costs
// nothing a header field decides (a block count near QEMU's limit, a
// block map of 2 GiB, are refused before anything is read).
func TestHostile(t *testing.T) {
	fixture(t)
	good, err := os.ReadFile(fixtures.images["dynamic"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// u32 sets little-endian words: offset, value, offset, value…
	u32 := func(kv ...uint32) func([]byte) []byte {
		return func(b []byte) []byte {
			for i := 0; i < len(kv); i += 2 {
				le.PutUint32(b[kv[i]:], kv[i+1])
			}
			return b
		}
	}
	entry := func(i, v uint32) func([]byte) []byte { return u32(0x200+4*i, v) }
	tests := []struct {
		name  string
		f     func([]byte) []byte
		kind  error
		match string
		qemu  bool // qemu-img reads it too: vmaconv is stricter, for a reason given
	}{
		{"short", func(b []byte) []byte { return b[:300] }, vdi.ErrCorrupt, "header too short: 300 of its 512 bytes", false},
		{"signature", u32(0x40, 0xbeda1070), format.ErrUnknownFormat, "not a VDI image (signature 0xbeda1070 at 0x40)", false},
		{"version", u32(0x44, 0x00010002), vdi.ErrUnsupported, "version at 0x44: 1.2 (QEMU reads version 1.1)", false},
		{"version0", u32(0x44, 0x00000002), vdi.ErrUnsupported, "version at 0x44: 0.2", false},
		{"bmap-align", u32(0x154, 0x300), vdi.ErrUnsupported, "offset_bmap at 0x154: block map offset 0x300 is not a multiple of 512", false},
		{"data-align", u32(0x158, 0x500), vdi.ErrUnsupported, "offset_data at 0x158: data offset 0x500 is not a multiple of 512", false},
		{"sector-size", u32(0x168, 4096), vdi.ErrUnsupported, "sector_size at 0x168: 4096", false},
		{"block-size", u32(0x178, 2*mib), vdi.ErrUnsupported, "block_size at 0x178: 2097152 (QEMU reads 1 MiB blocks only)", false},
		{"block-size-small", u32(0x178, 4096), vdi.ErrUnsupported, "block_size at 0x178: 4096", false},
		{"disk-size", func(b []byte) []byte { le.PutUint64(b[0x170:], 8*mib); return b }, vdi.ErrCorrupt, "disk_size at 0x170: 8388608 bytes, more than the 7 blocks", false},
		{"disk-size-huge", func(b []byte) []byte { le.PutUint64(b[0x170:], 1<<62); return b }, vdi.ErrUnsupported, "disk_size at 0x170: 0x4000000000000000 bytes, more than QEMU's limit", false},
		{"disk-size-max", func(b []byte) []byte { le.PutUint64(b[0x170:], 1<<64-1); return b }, vdi.ErrUnsupported, "disk_size at 0x170: 0xffffffffffffffff bytes", false},
		{"link", u32(0x1a8, 1), vdi.ErrUnsupported, "uuid_link at 0x1a8: a differencing image (its parent is 00000001-0000-0000-0000-000000000000)", false},
		{"parent", u32(0x1bc, 0x100), vdi.ErrUnsupported, "uuid_parent at 0x1b8: a differencing image", false},
		{"blocks-huge", func(b []byte) []byte { le.PutUint32(b[0x180:], 0x20000000); return b }, vdi.ErrUnsupported, "blocks_in_image at 0x180: 536870912 blocks, more than QEMU's limit of 536870784", false},
		{"bmap-past-eof", func(b []byte) []byte { return b[:0x210] }, vdi.ErrCorrupt, "offset_bmap at 0x154: the block map at 0x200 (7 entries) runs past the end of the file (0x210 bytes)", false},
		// The largest block map QEMU takes, 2 GiB, is refused before it
		// is read (qemu-img check would allocate it: no oracle).
		{"bmap-max", u32(0x180, vdi.MaxBlocks, 0x158, 0x80000000), vdi.ErrCorrupt, "offset_bmap at 0x154: the block map at 0x200 (536870784 entries) runs past the end of the file (0x400400 bytes)", false},
		{"bmap-offset-past-eof", u32(0x154, 0x7fff0000, 0x158, 0x80000000), vdi.ErrCorrupt, "offset_bmap at 0x154: the block map at 0x7fff0000 (7 entries) runs past the end of the file", false},
		{"header-size", u32(0x48, 0x100), vdi.ErrCorrupt, "header_size at 0x48: 0x100, less than the 0x180 bytes", true},
		{"image-type-diff", u32(0x4c, 4), vdi.ErrUnsupported, "image_type at 0x4c: 4", true},
		{"image-type-0", u32(0x4c, 0), vdi.ErrUnsupported, "image_type at 0x4c: 0", true},
		{"block-extra", u32(0x17c, 512), vdi.ErrUnsupported, "block_extra at 0x17c: 512 bytes of extra data per block", true},
		{"bmap-in-header", u32(0x154, 0), vdi.ErrCorrupt, "offset_bmap at 0x154: the block map at 0x0 overlaps the 512-byte header", false},
		{"data-in-bmap", u32(0x158, 0x200), vdi.ErrCorrupt, "offset_data at 0x158: the data at 0x200 overlap the block map (0x200 to 0x21c)", true},
		{"index-range", entry(2, 7), vdi.ErrCorrupt, "block map entry 2 at 0x208: data block 7 is not below blocks_in_image (7)", false},
		{"index-huge", entry(6, 0xfffffffd), vdi.ErrCorrupt, "block map entry 6 at 0x218: data block 4294967293 is not below blocks_in_image (7)", false},
		{"index-duplicate", entry(5, 1), vdi.ErrCorrupt, "block map entry 5 at 0x214: data block 1 is mapped by an earlier entry too", false},
		{"data-past-eof", func(b []byte) []byte { return b[:0x300400+1000] }, vdi.ErrCorrupt, "block map entry 6 at 0x218: data block 3 at 0x300400 runs past the end of the file (0x3007e8 bytes)", true},
		{"data-index-past-eof", entry(6, 5), vdi.ErrCorrupt, "block map entry 6 at 0x218: data block 5 at 0x500400 runs past the end of the file", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".vdi")
			if err := os.WriteFile(p, tc.f(bytes.Clone(good)), 0o644); err != nil {
				t.Fatal(err)
			}
			// The oracle: qemu-img refuses what vmaconv refuses (check
			// finds an index out of range or used twice), except where
			// vmaconv is stricter on purpose.
			if tc.name != "bmap-max" {
				_, cerr := exec.Command("qemu-img", "check", "-f", "vdi", p).CombinedOutput()
				qerr := exec.Command("qemu-img", "convert", "-f", "vdi", "-O", "raw", p, p+".raw").Run()
				if reads := cerr == nil && qerr == nil; reads != tc.qemu {
					t.Errorf("qemu-img reads and checks it: %t, want %t", reads, tc.qemu)
				}
			}
			src, err := open(t, p)
			if err == nil {
				src.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.match) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v\nwant %v mentioning %q", err, tc.kind, tc.match)
			}
			if !strings.HasPrefix(err.Error(), p+": ") {
				t.Errorf("%v: does not name the file", err)
			}
			// info checks the header as Open does.
			f, _ := os.Open(p)
			fi, _ := f.Stat()
			_, ierr := vdi.Format.InfoAt(f, fi.Size(), format.FileStat{Name: p, Size: fi.Size()})
			f.Close()
			if ierr == nil && !strings.HasPrefix(tc.name, "index") && !strings.HasPrefix(tc.name, "data-") {
				t.Errorf("info described it")
			}
		})
	}
}

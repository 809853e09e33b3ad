package vdi_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vdi"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// writeImage writes data through a Writer in the given order: "seq"
// (1 MiB chunks, ascending, zero ones declared with ZeroAt, as the
// pipeline writes), "shuffle" (64 KiB pieces in random order, as a
// stream's reorder buffer may hand them), "pieces" (random-sized pieces in
// random order, zero ones declared with ZeroAt) or "parallel" (shuffled
// pieces from four goroutines: static images only).
func writeImage(t *testing.T, path string, data []byte, o vdi.WriterOptions, order string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := vdi.NewWriter(f, int64(len(data)), o)
	if err != nil {
		t.Fatal(err)
	}
	type piece struct{ off, n int64 }
	var pieces []piece
	rng := rand.New(rand.NewPCG(uint64(len(data)), 3))
	size := int64(len(data))
	step := map[string]int64{"seq": mib, "shuffle": 64 << 10, "parallel": 64 << 10}[order]
	for off := int64(0); off < size; {
		n := step
		if order == "pieces" {
			n = 1 + rng.Int64N(3*mib)
		}
		n = min(n, size-off)
		pieces = append(pieces, piece{off, n})
		off += n
	}
	if order != "seq" {
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	}
	put := func(p piece) error {
		b := data[p.off : p.off+p.n]
		if zero.IsZero(b) && order != "shuffle" {
			return w.ZeroAt(p.off, p.n)
		}
		_, err := w.WriteAt(b, p.off)
		return err
	}
	if order == "parallel" {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for g := range 4 {
			wg.Go(func() {
				for i := g; i < len(pieces); i += 4 {
					if err := put(pieces[i]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	} else {
		for _, p := range pieces {
			if err := put(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// qemuCheck runs qemu-img check, and qemu-img compare against raw, a file
// holding the data.
func qemuCheck(t *testing.T, img, raw string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "-f", "vdi", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors were found on the image.") {
		t.Fatalf("qemu-img check %s: %v\n%s", filepath.Base(img), err, out)
	}
	out, err = exec.Command("qemu-img", "compare", "-f", "raw", "-F", "vdi", raw, img).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// readBack reads an image whole through the package and compares it with
// data (and zeros to the end of its last sector).
func readBack(t *testing.T, path string, data []byte) {
	t.Helper()
	src := mustOpen(t, path)
	defer src.Close()
	if want := (int64(len(data)) + 511) &^ 511; src.Size() != want {
		t.Fatalf("size %d, want %d", src.Size(), want)
	}
	got := make([]byte, src.Size())
	if n, err := src.ReadAt(got, 0); n != len(got) {
		t.Fatalf("read %d of %d: %v", n, len(got), err)
	}
	if !bytes.Equal(got[:len(data)], data) || !zero.IsZero(got[len(data):]) {
		t.Fatal("content read back differs")
	}
}

// nonZeroBlocks counts the 1 MiB blocks of data that are not all zero.
func nonZeroBlocks(data []byte) int {
	n := 0
	for off := 0; off < len(data); off += mib {
		if !zero.IsZero(data[off:min(off+mib, len(data))]) {
			n++
		}
	}
	return n
}

// uuidBytes is where the image and last-modification UUIDs are: random
// in qemu-img's images too.
const uuidStart, uuidEnd = 0x188, 0x1a8

// TestWriterQemuImg: every image written — dynamic and static, of sizes
// not a multiple of 1 MiB or 512 bytes, empty and full, data in order, in
// random pieces or shuffled (in parallel, for static ones) — passes
// qemu-img check, equals its data for qemu-img compare and for this
// package's reader, keeps its zero blocks unallocated (dynamic) or holes
// (static), and, written in order, is qemu-img convert's image byte for
// byte but for the UUIDs.
func TestWriterQemuImg(t *testing.T) {
	fixture(t)
	dir := t.TempDir()
	disks := map[string][]byte{
		"mixed": fixtures.data,
		"empty": make([]byte, 5*mib),
		"full":  testutil.GenDisk(3, 2*mib+4096, "data"),
		"tiny":  testutil.GenDisk(5, 1000, "data"),
	}
	raws := map[string]string{}
	for name, data := range disks {
		raws[name] = filepath.Join(dir, name+".raw")
		if err := os.WriteFile(raws[name], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, static := range []bool{false, true} {
		for name, data := range disks {
			orders := []string{"seq", "pieces"}
			if name == "mixed" {
				orders = append(orders, "shuffle")
				if static {
					orders = append(orders, "parallel")
				}
			}
			for _, order := range orders {
				t.Run(fmt.Sprintf("%s-static=%t-%s", name, static, order), func(t *testing.T) {
					t.Parallel()
					path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".vdi")
					writeImage(t, path, data, vdi.WriterOptions{Static: static}, order)
					qemuCheck(t, path, raws[name])
					readBack(t, path, data)
					img, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					want := nonZeroBlocks(data)
					if static {
						want = (len(data) + mib - 1) / mib
					}
					if got := int(le.Uint32(img[0x184:])); got != want {
						t.Errorf("%d blocks allocated, want %d", got, want)
					}
					if order != "seq" {
						return
					}
					args := []string{"convert", "-f", "raw", "-O", "vdi"}
					if static {
						args = append(args, "-o", "static=on")
					}
					ref := path + ".qemu"
					testutil.Run(t, "qemu-img", append(args, raws[name], ref)...)
					q, err := os.ReadFile(ref)
					if err != nil {
						t.Fatal(err)
					}
					copy(img[uuidStart:uuidEnd], q[uuidStart:uuidEnd])
					if !bytes.Equal(img, q) {
						t.Errorf("differs from qemu-img convert's image (%d and %d bytes) beyond the UUIDs, first at %#x", len(img), len(q), firstDiff(img, q))
					}
				})
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestWriterOutOfOrder: writes that leave a page of the block map (1 GiB
// of disk) and come back to it, to a block already allocated, read it
// back from the file: a 3 GiB disk written in a scattered order, then
// checked by qemu-img and read back.
func TestWriterOutOfOrder(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	const size = 3<<30 + 5*512
	writes := []struct {
		off int64
		b   []byte
	}{
		{2<<30 + 5*mib + 100, testutil.GenDisk(7, 5000, "data")},
		{100 * mib, testutil.GenDisk(8, 2*mib, "data")},
		{1<<30 + 3, testutil.GenDisk(9, 70000, "data")},
		{2<<30 + 5*mib + 200000, testutil.GenDisk(10, 300, "data")}, // the first block again
		{0, testutil.GenDisk(11, 4096, "data")},
		{size - 700, testutil.GenDisk(12, 700, "data")},
		{100*mib + 2*mib, testutil.GenDisk(13, 10, "data")},
	}
	path := filepath.Join(dir, "ooo.vdi")
	rawPath := filepath.Join(dir, "ooo.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := vdi.NewWriter(f, size, vdi.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rf, err := os.Create(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rf.Truncate(size)
	for _, x := range writes {
		if _, err := w.WriteAt(x.b, x.off); err != nil {
			t.Fatal(err)
		}
		rf.WriteAt(x.b, x.off)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, rawPath)
	img := mustOpen(t, path)
	defer img.Close()
	for _, x := range writes {
		got := make([]byte, len(x.b))
		if _, err := img.ReadAt(got, x.off); err != nil || !bytes.Equal(got, x.b) {
			t.Errorf("at %d: %v or wrong content", x.off, err)
		}
	}
	hdr := make([]byte, 512)
	f.ReadAt(hdr, 0)
	if n := le.Uint32(hdr[0x184:]); n != 7 {
		t.Errorf("%d blocks allocated, want 7 (one written twice)", n)
	}
}

// TestWriterBounded: a 1 TiB dynamic image of three blocks of data is
// written and read in bounded memory: the writer holds one 4 KiB page of
// its block map (and 1 MiB at Close to write the rest), the reader at
// most 4 MiB of it, and its zero map costs no reads of data.
func TestWriterBounded(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	const size = 1 << 40
	path := filepath.Join(t.TempDir(), "big.vdi")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := testutil.GenDisk(14, mib, "data")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w, err := vdi.NewWriter(f, size, vdi.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, size / 2, size - mib} {
		if _, err := w.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	for _, z := range [][2]int64{{mib, size/2 - mib}, {size/2 + mib, size/2 - 2*mib}} {
		if err := w.ZeroAt(z[0], z[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	t.Logf("writing: %d bytes", after.TotalAlloc-before.TotalAlloc)
	if n := after.TotalAlloc - before.TotalAlloc; n > 2<<20 {
		t.Errorf("writing allocated %d bytes", n)
	}
	out, err := exec.Command("qemu-img", "check", "-f", "vdi", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	runtime.ReadMemStats(&before)
	src := mustOpen(t, path)
	defer src.Close()
	var zeros int64
	for pos := int64(0); pos < size; {
		r, err := src.Region(pos, size-pos)
		if err != nil {
			t.Fatal(err)
		}
		if r.Zero {
			zeros += r.Length
		}
		pos += r.Length
	}
	got := make([]byte, mib)
	if _, err := src.ReadAt(got, size/2); err != nil || !bytes.Equal(got, data) {
		t.Errorf("block at %d: %v or wrong content", int64(size/2), err)
	}
	runtime.ReadMemStats(&after)
	if zeros != size-3*mib {
		t.Errorf("%d bytes mapped zero, want %d", zeros, int64(size-3*mib))
	}
	t.Logf("reading: %d bytes", after.TotalAlloc-before.TotalAlloc)
	if n := after.TotalAlloc - before.TotalAlloc; n > 6<<20 {
		t.Errorf("opening and mapping allocated %d bytes", n)
	}
}

// TestCreate: the sink takes -o static and -o uuid, writes a static image
// in parallel and to a stream, the same bytes both ways, refuses a
// dynamic image to a stream, several disks, configs and writing in
// place, each as a usage error, and leaves nothing behind when aborted.
func TestCreate(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	data := testutil.GenDisk(15, 3*mib+1000, "mixed")
	clear(data[mib : 2*mib])
	rawPath := filepath.Join(dir, "d.raw")
	os.WriteFile(rawPath, data, 0o644)
	const id = "01234567-89ab-cdef-0123-456789abcdef"
	devs := []format.Device{{Size: int64(len(data))}}
	opts := func(s string) format.CreateOptions {
		v, err := format.ParseOptions(vdi.Format, s)
		if err != nil {
			t.Fatal(err)
		}
		return format.CreateOptions{Options: v}
	}
	write := func(d format.Dest, o string) {
		t.Helper()
		sink, err := vdi.Format.Create(d, devs, opts(o))
		if err != nil {
			t.Fatal(err)
		}
		dw := sink.Disk(0)
		_, free := dw.(format.OrderIndependent)
		_, seq := dw.(format.Sequential)
		if static := strings.Contains(o, "static=on"); free != (static && d.Stream == nil) || seq != (d.Stream != nil) {
			t.Errorf("%s: OrderIndependent %t, Sequential %t", o, free, seq)
		}
		for off := 0; off < len(data); off += 256 << 10 {
			b := data[off:min(off+256<<10, len(data))]
			if zero.IsZero(b) {
				err = dw.ZeroAt(int64(off), int64(len(b)))
			} else {
				_, err = dw.WriteAt(b, int64(off))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	static := filepath.Join(dir, "static.vdi")
	write(format.Dest{Path: static}, "static=on,uuid="+id)
	var buf bytes.Buffer
	write(format.Dest{Path: "-", Stream: &buf}, "static=on,uuid="+id)
	file, _ := os.ReadFile(static)
	if !bytes.Equal(buf.Bytes(), file) {
		t.Errorf("the stream (%d bytes) differs from the file (%d bytes), first at %#x", buf.Len(), len(file), firstDiff(buf.Bytes(), file))
	}
	qemuCheck(t, static, rawPath)
	// VirtualBox reads the UUID's first three fields little-endian.
	if got := file[0x188:0x198]; !bytes.Equal(got, []byte{0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}) {
		t.Errorf("image UUID stored as % x", got)
	}
	if le.Uint32(file[0x4c:]) != 2 {
		t.Error("not a static image")
	}
	// The same uuid, the same bytes; without one, random UUIDs.
	dyn1, dyn2, dyn3 := filepath.Join(dir, "d1.vdi"), filepath.Join(dir, "d2.vdi"), filepath.Join(dir, "d3.vdi")
	write(format.Dest{Path: dyn1}, "uuid="+id)
	write(format.Dest{Path: dyn2}, "uuid="+id)
	write(format.Dest{Path: dyn3}, "")
	b1, _ := os.ReadFile(dyn1)
	b2, _ := os.ReadFile(dyn2)
	b3, _ := os.ReadFile(dyn3)
	if !bytes.Equal(b1, b2) || bytes.Equal(b1[uuidStart:uuidEnd], b3[uuidStart:uuidEnd]) ||
		bytes.Equal(b3[uuidStart:uuidStart+16], b3[uuidStart+16:uuidEnd]) || le.Uint32(b1[0x4c:]) != 1 {
		t.Error("images with a uuid differ, or without one do not have random UUIDs, or are not dynamic")
	}
	qemuCheck(t, dyn3, rawPath)

	for _, c := range []struct {
		d    format.Dest
		devs []format.Device
		o    format.CreateOptions
		want string
	}{
		{format.Dest{Path: "-", Stream: &buf}, devs, opts(""), "a dynamic VDI image cannot be written to a pipe"},
		{format.Dest{Path: filepath.Join(dir, "x.vdi"), InPlace: true}, devs, opts(""), "a VDI image is always new"},
		{format.Dest{Path: filepath.Join(dir, "x.vdi")}, append(devs, devs...), opts(""), "a VDI image holds one disk, not 2"},
		{format.Dest{Path: filepath.Join(dir, "x.vdi")}, devs, format.CreateOptions{Configs: []format.Config{{Name: "a"}}}, "holds no config files"},
		{format.Dest{Path: filepath.Join(dir, "x.vdi")}, []format.Device{{Size: vdi.MaxSize + 1}}, opts(""), "larger than a VDI image holds"},
	} {
		if _, err := vdi.Format.Create(c.d, c.devs, c.o); !errors.Is(err, format.ErrUnsupportedOption) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want a usage error mentioning %q", err, c.want)
		}
	}
	for _, bad := range []string{"uuid=nope", "uuid=00000000-0000-0000-0000-000000000000", "static=maybe", "cluster_size=2M"} {
		if _, err := format.ParseOptions(vdi.Format, bad); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("-o %s: %v", bad, err)
		}
	}
	// Abort leaves nothing.
	sink, err := vdi.Format.Create(format.Dest{Path: filepath.Join(dir, "aborted.vdi")}, devs, opts(""))
	if err != nil {
		t.Fatal(err)
	}
	sink.Disk(0).WriteAt(data[:mib], 0)
	sink.Abort()
	if _, err := os.Stat(filepath.Join(dir, "aborted.vdi")); err == nil {
		t.Error("Abort left the image")
	}
}

// TestStreamWriter: a stream is written in order or not at all, and
// whole.
func TestStreamWriter(t *testing.T) {
	var buf bytes.Buffer
	if _, err := vdi.NewStreamWriter(&buf, mib, vdi.WriterOptions{}); err == nil {
		t.Error("a dynamic image to a stream")
	}
	w, err := vdi.NewStreamWriter(&buf, 3*mib, vdi.WriterOptions{Static: true, UUID: uuid.MustParse("01234567-89ab-cdef-0123-456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.ZeroAt(0, mib); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 10), 2*mib); err == nil || !strings.Contains(err.Error(), "out of order: at byte 2097152, expected 1048576") {
		t.Errorf("out of order: %v", err)
	}
	w, _ = vdi.NewStreamWriter(&buf, 3*mib, vdi.WriterOptions{Static: true})
	w.ZeroAt(0, mib)
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "stream ends at byte 1048576 of 3145728") {
		t.Errorf("short: %v", err)
	}
}

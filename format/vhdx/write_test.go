package vhdx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// writeImage writes data through a Writer in the given order: "seq"
// (whole blocks, ascending, zero ones declared with ZeroAt), "shuffle"
// (whole blocks in random order, zeros written as data) or "pieces"
// (random-sized pieces in random order, zero ones declared with ZeroAt).
func writeImage(t testing.TB, path string, data []byte, o WriterOptions, order string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, int64(len(data)), o)
	if err != nil {
		t.Fatal(err)
	}
	type piece struct{ off, n int64 }
	var pieces []piece
	size, step := int64(len(data)), w.p.bs
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	for off := int64(0); off < size; {
		n := min(step, size-off)
		if order == "pieces" {
			n = min(1+rng.Int64N(2*step), size-off)
		}
		pieces = append(pieces, piece{off, n})
		off += n
	}
	if order != "seq" {
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	}
	for _, p := range pieces {
		b := data[p.off : p.off+p.n]
		if zero.IsZero(b) && order != "shuffle" {
			err = w.ZeroAt(p.off, p.n)
		} else {
			_, err = w.WriteAt(b, p.off)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// qemuCheck runs qemu-img check, and qemu-img compare against raw, a file
// holding the data.
func qemuCheck(t testing.TB, img, raw string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors were found on the image.") {
		t.Fatalf("qemu-img check %s: %v\n%s", filepath.Base(img), err, out)
	}
	out, err = exec.Command("qemu-img", "compare", "-f", "raw", "-F", "vhdx", raw, img).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// TestWriterQemuImg: every image written — dynamic and fixed, of every
// block size class, with zero blocks recorded either way, a larger log,
// sizes that are neither whole blocks nor whole sectors, empty and full
// disks, data in order, shuffled or in pieces — passes qemu-img check,
// equals its data for qemu-img compare and for this package's reader,
// has the block size qemu-img info reports, and keeps zeros out of the
// file: no block allocated without data in a dynamic image, zero 4 KiB
// blocks never written.
func TestWriterQemuImg(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	disks := map[string][]byte{
		"mixed":  testutil.GenDisk(1, 3<<20+7*512+100, "mixed"),
		"empty":  make([]byte, 5<<20),
		"full":   testutil.GenDisk(3, 2<<20, "data"),
		"tiny":   testutil.GenDisk(5, 1000, "data"),
		"sector": testutil.GenDisk(6, 512, "data"),
	}
	raws := map[string]string{}
	for name, data := range disks {
		raws[name] = filepath.Join(dir, name+".raw")
		if err := os.WriteFile(raws[name], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	configs := []struct {
		name   string
		o      WriterOptions
		disks  []string
		orders []string
	}{
		{"dyn-1m", WriterOptions{BlockSize: 1 << 20}, []string{"mixed", "empty", "full", "tiny", "sector"}, []string{"seq", "shuffle", "pieces"}},
		{"fixed-1m", WriterOptions{BlockSize: 1 << 20, Fixed: true}, []string{"mixed", "empty", "full", "tiny"}, []string{"seq", "shuffle", "pieces"}},
		{"dyn-default", WriterOptions{}, []string{"mixed", "empty"}, []string{"seq"}},
		{"dyn-256m", WriterOptions{BlockSize: 256 << 20}, []string{"mixed"}, []string{"seq"}},
		{"dyn-unallocated", WriterOptions{BlockSize: 2 << 20, Zeros: ZerosUnallocated}, []string{"mixed", "empty"}, []string{"seq"}},
		{"fixed-zero", WriterOptions{BlockSize: 1 << 20, Fixed: true, Zeros: ZerosBlockZero}, []string{"mixed", "empty"}, []string{"seq", "pieces"}},
		{"fixed-default", WriterOptions{Fixed: true}, []string{"mixed"}, []string{"seq"}},
		{"log-3m", WriterOptions{BlockSize: 1 << 20, LogSize: 3 << 20}, []string{"mixed"}, []string{"seq"}},
	}
	for _, c := range configs {
		for _, name := range c.disks {
			for _, order := range c.orders {
				t.Run(fmt.Sprintf("%s-%s-%s", c.name, name, order), func(t *testing.T) {
					t.Parallel()
					data := disks[name]
					path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".vhdx")
					writeImage(t, path, data, c.o, order)
					qemu := firstRun(t.Name())
					if qemu {
						qemuCheck(t, path, raws[name])
					}
					checkWritten(t, path, data, c.o, qemu && name == "mixed")
				})
			}
		}
	}
}

// checkWritten reads an image written from data with o back, and checks
// where its blocks are and (with info) what qemu-img info says of it.
func checkWritten(t *testing.T, path string, data []byte, o WriterOptions, info bool) {
	t.Helper()
	checkOptions(&o, int64(len(data)+511)&^511)
	if info {
		out, err := exec.Command("qemu-img", "info", "--output", "json", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		var qi struct {
			Size    int64 `json:"virtual-size"`
			Cluster int64 `json:"cluster-size"`
		}
		json.Unmarshal(out, &qi)
		if qi.Size != int64(len(data)+511)&^511 || qi.Cluster != o.BlockSize {
			t.Errorf("qemu-img info: size %d, cluster size %d; want %d, %d", qi.Size, qi.Cluster, (len(data)+511)&^511, o.BlockSize)
		}
	}
	src, err := openPath(t, path, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := readAll(t, src)
	if len(got) < len(data) || !bytes.Equal(got[:len(data)], data) || !zero.IsZero(got[len(data):]) {
		t.Fatal("content read back differs")
	}
	if src.l.fixed != o.Fixed || src.l.logical != 512 || src.l.physical != 512 || src.l.head.logLength != uint32(o.LogSize) {
		t.Errorf("fixed %v, sectors %d/%d, log %d", src.l.fixed, src.l.logical, src.l.physical, src.l.head.logLength)
	}
	// Each block: present if it holds data (or the image is fixed),
	// otherwise in the state Zeros says.
	empty := uint64(blockZero)
	if o.Zeros == ZerosUnallocated || o.Zeros == ZerosDefault && o.Fixed {
		empty = blockNotPresent
	}
	for b := range src.l.blocks {
		e, err := src.bat.entry(src.l.batIndex(b))
		if err != nil {
			t.Fatal(err)
		}
		has := !zero.IsZero(data[min(int64(len(data)), b*o.BlockSize):min(int64(len(data)), (b+1)*o.BlockSize)])
		want := empty
		if has || o.Fixed && empty == blockNotPresent {
			want = blockFullyPresent
		}
		if e&stateMask != want || want != blockFullyPresent && e>>offsetShift != 0 {
			t.Errorf("block %d: BAT entry %#x, want state %d", b, e, want)
		}
	}
	// Zero 4 KiB blocks are holes: the file takes the data's non-zero
	// blocks, the BAT written and the structures (under 400 KiB).
	var nonzero int64
	for off := 0; off < len(data); off += 4096 {
		if !zero.IsZero(data[off:min(len(data), off+4096)]) {
			nonzero += 4096
		}
	}
	fi, _ := os.Stat(path)
	alloc := fi.Sys().(*syscall.Stat_t).Blocks * 512
	if batBytes := (src.l.entries*8 + 4095) &^ 4095; alloc > nonzero+batBytes+400<<10 {
		t.Errorf("the file takes %d bytes for %d bytes of non-zero 4 KiB blocks", alloc, nonzero)
	}
}

// TestLayoutAsQemu: an image written without data is laid out as
// qemu-img create lays it out: the same log, BAT and metadata regions,
// the same metadata items (but the random page 83 data), the same BAT,
// the same file size; for an empty disk too, whose BAT QEMU sizes from a
// count that wraps.
func TestLayoutAsQemu(t *testing.T) {
	fixtures(t) // the directory
	dir := t.TempDir()
	for i, c := range []struct {
		size int64
		opts string
		o    WriterOptions
	}{
		{5 << 20, "", WriterOptions{}},
		{3<<30 + 512, "", WriterOptions{}},
		{200 << 20, "block_size=1M,log_size=2M", WriterOptions{BlockSize: 1 << 20, LogSize: 2 << 20}},
		{24 << 20, "subformat=fixed,block_state_zero=off", WriterOptions{Fixed: true}},
		{24 << 20, "subformat=fixed,block_size=2M", WriterOptions{Fixed: true, BlockSize: 2 << 20, Zeros: ZerosBlockZero}},
		{0, "block_size=1M", WriterOptions{BlockSize: 1 << 20}},
	} {
		name := fmt.Sprintf("%d-%s", c.size, c.opts)
		q := filepath.Join(shared.dir, fmt.Sprintf("layout-%d.vhdx", i))
		args := []string{"create", "-q", "-f", "vhdx"}
		if c.opts != "" {
			args = append(args, "-o", c.opts)
		}
		qemuOutput(t, append(args, q, fmt.Sprint(c.size))...)
		v := filepath.Join(dir, "v.vhdx")
		writeEmpty(t, v, c.size, c.o)
		ql, qread, qsize := fileLayout(t, q)
		vl, vread, vsize := fileLayout(t, v)
		if qsize != vsize {
			t.Errorf("%s: file of %d bytes, qemu-img's has %d", name, vsize, qsize)
		}
		if ql.bat != vl.bat || ql.meta != vl.meta || !reflect.DeepEqual(ql.regions, vl.regions) {
			t.Errorf("%s: regions %+v, qemu-img's %+v", name, vl.regions, ql.regions)
		}
		if ql.head.logOffset != vl.head.logOffset || ql.head.logLength != vl.head.logLength || ql.head.version != vl.head.version {
			t.Errorf("%s: header %+v, qemu-img's %+v", name, vl.head, ql.head)
		}
		// The metadata table and items, page 83 data aside.
		mq, mv := qread(ql.meta.off, metaTableBytes+40), vread(vl.meta.off, metaTableBytes+40)
		p83 := metaTableBytes + 16
		if !bytes.Equal(mq[:p83], mv[:p83]) || !bytes.Equal(mq[p83+16:], mv[p83+16:]) {
			t.Errorf("%s: metadata differs from qemu-img's", name)
		}
		if !bytes.Equal(qread(ql.bat.off, ql.bat.length), vread(vl.bat.off, vl.bat.length)) {
			t.Errorf("%s: BAT differs from qemu-img's", name)
		}
	}
}

// writeEmpty writes an image of size bytes of zeros, declared with one
// ZeroAt.
func writeEmpty(t testing.TB, path string, size int64, o WriterOptions) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, size, o)
	if err == nil {
		err = w.ZeroAt(0, size)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestSameBytes: the same writes give the same file, but for the GUIDs
// and the sequence number, which come from WriterOptions.Rand.
func TestSameBytes(t *testing.T) {
	dir := t.TempDir()
	data := testutil.GenDisk(9, 5<<20+512, "mixed")
	var files [2][]byte
	for i := range files {
		p := filepath.Join(dir, fmt.Sprint(i))
		writeImage(t, p, data, WriterOptions{BlockSize: 1 << 20, Rand: bytes.NewReader(make([]byte, 64))}, "pieces")
		files[i] = loadImage(t, p)
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("the same writes gave different files")
	}
}

// TestWriterErrors: writes outside the disk or twice fail, and the
// failure sticks.
func TestWriterErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x.vhdx"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, 3<<20, WriterOptions{BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte{1}, 3<<20); err == nil {
		t.Error("a write past the end succeeded")
	}
	if err := w.ZeroAt(0, 3<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte{1}, 5); err == nil || !strings.Contains(err.Error(), "written twice") {
		t.Errorf("a second write: %v", err)
	}
	if err := w.Close(); err == nil {
		t.Error("Close after a failed write succeeded")
	}
	// Zeros declared twice: too many bytes for the chunk.
	w, err = NewWriter(f, 3<<20, WriterOptions{BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w.ZeroAt(0, 3<<20)
	if err := w.ZeroAt(0, 3<<20); err == nil || !strings.Contains(err.Error(), "written twice") {
		t.Errorf("zeros declared twice: %v", err)
	}
	for _, o := range []WriterOptions{{BlockSize: 3 << 20}, {BlockSize: 512 << 20}, {LogSize: 1000}, {LogSize: 4 << 30}} {
		if _, err := NewWriter(f, 1<<20, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := NewWriter(f, 64<<40+1, WriterOptions{}); err == nil {
		t.Error("a disk over 64 TiB accepted")
	}
}

// TestBlockSizes: for every block size (1 MiB to 256 MiB), an image
// qemu-img writes reads as qemu-img reads it, and one written here passes
// qemu-img check and compare.
func TestBlockSizes(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	fixtures(t) // the directory
	dir := t.TempDir()
	data := testutil.GenDisk(21, 1<<20+1536, "mixed")
	raw := filepath.Join(shared.dir, "blocksizes.raw")
	memo(t, "blocksizes raw", func() (bool, error) { return true, os.WriteFile(raw, data, 0o644) })
	for bs := int64(1 << 20); bs <= 256<<20; bs *= 2 {
		q := filepath.Join(shared.dir, fmt.Sprintf("bs%d.vhdx", bs>>20))
		qemuOutput(t, "convert", "-f", "raw", "-O", "vhdx", "-o", fmt.Sprintf("block_size=%d", bs), raw, q)
		src, err := openPath(t, q, format.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, src)
		src.Close()
		if src.l.blockSize != bs || !bytes.Equal(got[:len(data)], data) || !zero.IsZero(got[len(data):]) {
			t.Errorf("block size %d: qemu-img's image reads %d bytes of blocks of %d, not the data", bs, len(got), src.l.blockSize)
		}
		v := filepath.Join(dir, fmt.Sprintf("bs%d.vhdx", bs>>20))
		writeImage(t, v, data, WriterOptions{BlockSize: bs}, "seq")
		if firstRun(t.Name() + v[len(dir):]) {
			qemuCheck(t, v, raw)
		}
	}
}

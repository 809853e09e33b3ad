package vma_test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

type testDev = testutil.Disk

var genDisk = testutil.GenDisk

func writeArchive(t testing.TB, devs []testDev, configs []format.Config, order string, seed uint64) []byte {
	return testutil.WriteArchive(t, devs, configs, order, seed)
}

// checkProxmoxRules parses raw independently of the package and checks the
// layout rules Proxmox's writer follows and its reader relies on.
func checkProxmoxRules(t *testing.T, raw []byte) {
	t.Helper()
	be := binary.BigEndian
	hs := int(be.Uint32(raw[56:]))
	if hs%512 != 0 || hs <= 12288 {
		t.Fatalf("header_size %d: not a multiple of 512 above 12288", hs)
	}
	if be.Uint32(raw[48:]) != 12288 {
		t.Errorf("blob_buffer_offset %d, want 12288", be.Uint32(raw[48:]))
	}
	bsize := int(be.Uint32(raw[52:]))
	if 12288+bsize > hs || raw[12288] != 0 {
		t.Errorf("blob buffer size %d does not fit header %d, or byte 0 is used", bsize, hs)
	}
	// The blobs must tile [1, bsize) exactly: the stored size is the used length.
	pos := 1
	for pos+2 <= bsize {
		pos += 2 + int(binary.LittleEndian.Uint16(raw[12288+pos:]))
	}
	if pos != bsize {
		t.Errorf("blobs end at %d, blob_buffer_size is %d", pos, bsize)
	}
	for _, b := range raw[12288+bsize : hs] {
		if b != 0 {
			t.Fatal("non-zero padding after the blob buffer")
		}
	}
	off := hs
	for off < len(raw) {
		e := raw[off : off+512]
		if off%512 != 0 || string(e[:4]) != "VMAE" {
			t.Fatalf("extent at %d: misaligned or bad magic", off)
		}
		sum := md5.Sum(append(append(append([]byte{}, e[:24]...), make([]byte, 16)...), e[40:]...))
		if !bytes.Equal(sum[:], e[24:40]) {
			t.Fatalf("extent at %d: bad MD5", off)
		}
		if !bytes.Equal(e[8:24], raw[8:24]) {
			t.Fatalf("extent at %d: UUID differs", off)
		}
		used, blocks, seenEmpty := 0, 0, false
		for i := range 59 {
			bi := be.Uint64(e[40+8*i:])
			if bi == 0 {
				seenEmpty = true
				continue
			}
			if seenEmpty {
				t.Fatalf("extent at %d: slot %d used after an empty one", off, i)
			}
			if byte(bi>>40) != 0 {
				t.Fatalf("extent at %d: reserved blockinfo byte set", off)
			}
			used++
			for m := uint16(bi >> 48); m != 0; m &= m - 1 {
				blocks++
			}
		}
		if used > 58 {
			t.Fatalf("extent at %d: %d clusters, Proxmox writes at most 58", off, used)
		}
		if int(be.Uint16(e[6:])) != blocks {
			t.Fatalf("extent at %d: block_count %d, slots hold %d", off, be.Uint16(e[6:]), blocks)
		}
		off += 512 + blocks*4096
	}
	if off != len(raw) {
		t.Fatalf("last extent ends at %d, file is %d bytes", off, len(raw))
	}
}

func TestRoundTrip(t *testing.T) {
	sizes := []int64{1, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537, 100000, 540672, 3158528, 58*65536 + 1, 59 * 65536, 3*65536 + 4096 + 100}
	styles := []string{"zero", "data", "mixed"}
	orders := []string{"seq", "interleave", "shuffle"}
	configs := []format.Config{
		{Name: "qemu-server.conf", Data: []byte("memory: 2048\nscsi0: local:vm-100-disk-0,size=4M\n")},
		{Name: "empty.conf", Data: []byte{}},
		{Name: "big.conf", Data: bytes.Repeat([]byte{'x'}, vma.MaxBlobSize)},
	}
	n := 0
	for i, size := range sizes {
		for j, style := range styles {
			devs := []testDev{{Name: "drive-scsi0", Data: genDisk(uint64(i*10+j), size, style)}}
			if (i+j)%2 == 0 { // a second device of another size and style
				devs = append(devs, testDev{Name: "drive-efidisk0", Data: genDisk(uint64(i), sizes[(i+5)%len(sizes)], styles[(j+1)%3])})
			}
			order := orders[(i+j)%3]
			cfg := configs[:(i+j)%4%len(configs)+1]
			t.Run(fmt.Sprintf("%d-%s-%s-%ddev", size, style, order, len(devs)), func(t *testing.T) {
				raw := writeArchive(t, devs, cfg, order, uint64(n))
				checkProxmoxRules(t, raw)
				rd, disks, _ := readAll(t, bytes.NewReader(raw))
				for _, d := range devs {
					if !bytes.Equal(disks[d.Name], d.Data) {
						t.Errorf("device %s (%d bytes) differs after the round trip", d.Name, len(d.Data))
					}
				}
				h := rd.Header()
				for k, c := range cfg {
					if h.Configs[k].Name != c.Name || !bytes.Equal(h.Configs[k].Data, c.Data) {
						t.Errorf("config %s differs", c.Name)
					}
				}
			})
			n++
		}
	}
}

// TestWriterDeterministic: with a fixed UUID and ctime, an archive is a
// function of its content and cluster order alone, not of how the data
// arrives: whole clusters to the Writer, odd-sized pieces through the
// sink, or zero ranges announced with ZeroAt give the same bytes; and
// writing twice gives the same bytes (no map order, no clock).
func TestWriterDeterministic(t *testing.T) {
	data := genDisk(1, 1<<20+5*4096, "mixed")
	clear(data[200000:400000]) // whole zero clusters among the data
	devs := []testDev{{Name: "drive-scsi0", Data: data}}
	cfg := []format.Config{{Name: "qemu-server.conf", Data: []byte("x")}}
	want := writeArchive(t, devs, cfg, "seq", 1)
	if again := writeArchive(t, devs, cfg, "seq", 1); !bytes.Equal(again, want) {
		t.Fatal("same input, different archives")
	}
	viaSink := func(piece int, zeroAt bool) []byte {
		var out bytes.Buffer
		sink, err := vma.Create(format.Dest{Path: "-", Stream: &out}, []format.Device{{Name: "drive-scsi0", Size: int64(len(data))}},
			format.CreateOptions{Configs: []format.Config{{Name: "qemu-server.conf", Data: []byte("x")}}, Options: testutil.ArchiveOptions(testutil.TestUUID, testutil.TestCTime)})
		if err != nil {
			t.Fatal(err)
		}
		d := sink.Disk(0)
		for off := 0; off < len(data); off += piece {
			p := data[off:min(off+piece, len(data))]
			if zeroAt && testutil.AllZero(p) {
				err = d.ZeroAt(int64(off), int64(len(p)))
			} else {
				_, err = d.WriteAt(p, int64(off))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Commit(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	for _, c := range []struct {
		piece  int
		zeroAt bool
	}{{vma.ClusterSize, false}, {7777, false}, {vma.ClusterSize, true}, {3 * vma.ClusterSize, true}} {
		if got := viaSink(c.piece, c.zeroAt); !bytes.Equal(got, want) {
			t.Errorf("through the sink in pieces of %d (ZeroAt %v): a different archive", c.piece, c.zeroAt)
		}
	}
}

func TestWriterZeroesPastEnd(t *testing.T) {
	// A 5000-byte device: block 0 full, block 1 straddles the end. Junk
	// past the end must not be stored, and block 2+ never.
	data := bytes.Repeat([]byte{0xff}, vma.ClusterSize)
	var out bytes.Buffer
	w := vma.NewWriter(&out)
	id, _ := w.AddDevice("d", 5000)
	if err := w.WriteCluster(id, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := vma.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	if c.Mask != 0b11 {
		t.Fatalf("mask %016b, want 11", c.Mask)
	}
	blk := c.Block(1)
	if !bytes.Equal(blk[:5000-4096], data[:5000-4096]) || !zero.IsZero(blk[5000-4096:]) {
		t.Fatal("straddling block not zeroed past the device end")
	}
	// A block that is zero inside the device but junk outside is not stored.
	out.Reset()
	w = vma.NewWriter(&out)
	id, _ = w.AddDevice("d", 4096+100)
	junk := make([]byte, vma.ClusterSize)
	copy(junk[4096+100:], bytes.Repeat([]byte{1}, 1000))
	if err := w.WriteCluster(id, 0, junk); err != nil {
		t.Fatal(err)
	}
	w.Close()
	rd, _ = vma.NewReader(&out)
	if c, _ := rd.Next(); c.Mask != 0 {
		t.Fatalf("mask %016b, want 0", c.Mask)
	}
}

func TestWriterErrors(t *testing.T) {
	w := vma.NewWriter(io.Discard)
	for _, name := range []string{"", ".", "..", "a\x00b", "a/b"} {
		if _, err := w.AddDevice(name, 1); err == nil {
			t.Errorf("AddDevice(%q) succeeded", name)
		}
	}
	if _, err := w.AddDevice("d", 0); err == nil {
		t.Error("size 0 accepted")
	}
	if _, err := w.AddDevice("d", vma.MaxClusters*vma.ClusterSize+1); err == nil {
		t.Error("size beyond 256 TiB accepted")
	}
	if err := w.AddConfig("c", make([]byte, vma.MaxBlobSize+1)); err == nil {
		t.Error("oversized config accepted")
	}
	if err := w.AddConfig("/etc/pve/qemu-server/100.conf", []byte("x")); err != nil {
		t.Error(err)
	} else if w.Header().Configs[0].Name != "100.conf" {
		t.Errorf("config stored as %q, want its base name", w.Header().Configs[0].Name)
	}
	for range vma.MaxConfigs - 1 {
		if err := w.AddConfig("c", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddConfig("c", nil); err == nil {
		t.Error("config 257 accepted")
	}
	for i := range vma.MaxDevices {
		if _, err := w.AddDevice(fmt.Sprint("d", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.AddDevice("one-too-many", 1); err == nil {
		t.Error("device 255 accepted")
	}
	if _, err := w.AddDevice("d0", 1); err == nil {
		t.Error("duplicate name accepted")
	}

	w = vma.NewWriter(io.Discard)
	id, _ := w.AddDevice("d", 2*vma.ClusterSize)
	vm, _ := w.AddDevice(vma.VMStateName, 2*vma.ClusterSize)
	for _, c := range []struct {
		id  int
		idx int64
	}{{0, 0}, {3, 0}, {id, -1}, {id, 2}, {vm, 1}} {
		if err := w.WriteCluster(c.id, c.idx, nil); err == nil {
			t.Errorf("WriteCluster(%d, %d) succeeded", c.id, c.idx)
		}
	}
	if err := w.WriteCluster(id, 0, make([]byte, vma.ClusterSize+1)); err == nil {
		t.Error("oversized cluster accepted")
	}
	if err := w.WriteCluster(id, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteCluster(id, 1, nil); err == nil {
		t.Error("duplicate cluster accepted")
	}
	if _, err := w.AddDevice("late", 1); err == nil {
		t.Error("AddDevice after WriteCluster accepted")
	}
	err := w.Close()
	if !errors.Is(err, vma.ErrIncomplete) {
		t.Fatalf("Close of an incomplete archive: %v", err)
	}
	if err2 := w.Close(); err2 != err {
		t.Errorf("second Close: %v", err2)
	}
	if err := w.WriteCluster(id, 0, nil); !errors.Is(err, vma.ErrWriteAfterClose) {
		t.Errorf("write after close: %v", err)
	}
	// An archive of nothing is still one Proxmox's reader accepts.
	var empty bytes.Buffer
	if err := vma.NewWriter(&empty).Close(); err != nil {
		t.Fatal(err)
	}
	if empty.Len() != 12800+512 {
		t.Errorf("empty archive of %d bytes", empty.Len())
	}
	if err := readToEnd(empty.Bytes()); err != nil {
		t.Error(err)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	w := vma.NewWriter(&failWriter{n: 1}) // header ok, first extent fails
	id, _ := w.AddDevice("d", 60*vma.ClusterSize)
	var err error
	for c := int64(0); c < 60 && err == nil; c++ {
		err = w.WriteCluster(id, c, bytes.Repeat([]byte{1}, vma.ClusterSize))
	}
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Fatalf("got %v, want the write error", err)
	}
	if err2 := w.Close(); err2 != err {
		t.Errorf("Close after a failed write: %v", err2)
	}
}

func TestDisklessArchive(t *testing.T) {
	var out bytes.Buffer
	w := vma.NewWriter(&out)
	w.AddConfig("qemu-server.conf", []byte("name: x\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 12800+512 {
		t.Fatalf("diskless archive is %d bytes, want header + one empty extent", out.Len())
	}
	checkProxmoxRules(t, out.Bytes())
	rd, err := vma.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Next(); err != io.EOF || rd.Extents() != 1 {
		t.Fatalf("Next = %v after %d extents", err, rd.Extents())
	}
}

func TestVMStateRoundTrip(t *testing.T) {
	state := genDisk(9, 3*vma.ClusterSize+777, "mixed")
	raw := writeArchive(t, []testDev{{Name: "drive-scsi0", Data: genDisk(1, 65536, "data")}, {Name: vma.VMStateName, Data: state}}, nil, "interleave", 0)
	_, disks, _ := readAll(t, bytes.NewReader(raw))
	if !bytes.Equal(disks[vma.VMStateName], state) {
		t.Fatal("vmstate differs")
	}
}

// callWriter counts the Write calls it gets.
type callWriter struct {
	bytes.Buffer
	calls int
}

func (c *callWriter) Write(p []byte) (int, error) { c.calls++; return c.Buffer.Write(p) }

// TestWriterGathersSmallWrites: a hole's extents (512-byte headers) reach
// the underlying writer in a few large writes, not one each; data extents
// go through as they are; the archive keeps Proxmox's layout, and Flush
// hands over every completed extent. (The golden tests pin its bytes.)
func TestWriterGathersSmallWrites(t *testing.T) {
	const size = 4 << 30 // 65 536 clusters: 1111 zero extents
	write := func(w io.Writer) *vma.Writer {
		vw := vma.NewWriter(w, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
		id, _ := vw.AddDevice("drive-scsi0", size)
		data := bytes.Repeat([]byte{7}, vma.ClusterSize)
		for c := range int64(size / vma.ClusterSize) {
			var p []byte
			if c%10000 == 0 {
				p = data
			}
			if err := vw.WriteCluster(id, c, p); err != nil {
				t.Fatal(err)
			}
		}
		return vw
	}
	var cw callWriter
	vw := write(&cw)
	if err := vw.Flush(); err != nil {
		t.Fatal(err)
	}
	flushed := cw.Len()
	if err := vw.Close(); err != nil {
		t.Fatal(err)
	}
	if cw.calls > 40 {
		t.Errorf("%d writes for an archive of %d bytes, mostly 512-byte extent headers", cw.calls, cw.Len())
	}
	if flushed < cw.Len()-vma.MaxExtentSize {
		t.Errorf("Flush handed over %d of %d bytes", flushed, cw.Len())
	}
	checkProxmoxRules(t, cw.Bytes())
}

// rewriteExtents writes raw's extents again with WriteExtent, with its
// UUID, ctime, configs and devices: a repack that keeps the extents.
func rewriteExtents(t *testing.T, raw []byte) []byte {
	t.Helper()
	rd, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := rd.Header()
	var out bytes.Buffer
	w := vma.NewWriter(&out, vma.WithUUID(h.UUID), vma.WithCTime(h.CTime))
	for _, c := range h.Configs {
		if err := w.AddConfig(c.Name, c.Data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range h.Devices {
		if id, err := w.AddDevice(d.Name, d.Size); err != nil || id != d.ID {
			t.Fatalf("AddDevice %s: id %d, %v; the archive has %d", d.Name, id, err, d.ID)
		}
	}
	for {
		e, err := rd.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteExtent(e.Clusters); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestWriteExtentKeepsArchives: an archive this package writes, in any
// cluster order (several devices interleaved, locally out of order,
// shuffled, a vmstate stream among them, no devices at all), comes back
// byte for byte when its extents are written again as they are; so does
// every golden archive Proxmox wrote (two disks interleaved, none).
func TestWriteExtentKeepsArchives(t *testing.T) {
	if dir, err := testutil.FindGolden(t); err == nil {
		for _, name := range []string{"case1.vma", "case2.vma", "case6-config-only.vma"} {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := rewriteExtents(t, raw); !bytes.Equal(got, raw) {
				t.Errorf("%s: written again extent by extent, it differs from what Proxmox wrote", name)
			}
		}
	}
	conf := []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}
	devs := []testDev{
		{Name: "drive-scsi0", Data: genDisk(1, 2<<20+4096, "mixed")},
		{Name: "drive-efidisk0", Data: genDisk(2, 540672, "data")},
		{Name: "drive-tpmstate0-backup", Data: genDisk(3, 1<<20, "zero")},
	}
	for _, order := range []string{"seq", "interleave", "runs", "local", "shuffle"} {
		raw := writeArchive(t, devs, conf, order, 5)
		if got := rewriteExtents(t, raw); !bytes.Equal(got, raw) {
			t.Errorf("%s: the archive written again extent by extent differs", order)
		}
	}
	vm := writeArchive(t, []testDev{devs[1], {Name: vma.VMStateName, Data: genDisk(4, 3*vma.ClusterSize+777, "mixed")}}, nil, "interleave", 0)
	if got := rewriteExtents(t, vm); !bytes.Equal(got, vm) {
		t.Error("with a vmstate stream: the archive written again differs")
	}
	none := writeArchive(t, nil, conf, "seq", 0)
	if got := rewriteExtents(t, none); !bytes.Equal(got, none) {
		t.Errorf("no devices: %d bytes written again for %d", len(got), len(none))
	}
}

// foreignArchive is an archive another writer could have written: 59
// clusters in its first extent, an all-zero block stored, the whole last
// cluster stored with junk past the device's end (as Proxmox did before
// 2020), one cluster alone in an extent.
func foreignArchive(t *testing.T) (raw []byte, size int64) {
	t.Helper()
	size = 60*vma.ClusterSize - 60000 // cluster 59 holds 5536 bytes
	var out bytes.Buffer
	w := vma.NewWriter(&out, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
	w.AddDevice("drive-scsi0", size)
	for c := range int64(60) {
		w.WriteCluster(1, c, nil)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := vma.NewReader(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Clone(out.Bytes()[:rd.Header().Size])
	var slots []uint64
	for c := range uint32(59) {
		slots = append(slots, testutil.Slot(0xffff, 1, c))
	}
	e1 := testutil.Extent(testutil.TestUUID, slots...)
	clear(e1[512+5*vma.BlockSize : 512+6*vma.BlockSize]) // cluster 0, block 5: stored, all zero
	e2 := testutil.Extent(testutil.TestUUID, testutil.Slot(0xffff, 1, 59))
	return append(append(raw, e1...), e2...), size
}

// TestWriteExtentNormalizes: extents of another writer keep their clusters
// (59 in one extent), but their blocks are stored as this package stores
// them: no all-zero block, nothing past the device's end.
func TestWriteExtentNormalizes(t *testing.T) {
	raw, size := foreignArchive(t)
	_, want, _ := readAll(t, bytes.NewReader(raw))
	got := rewriteExtents(t, raw)
	rd, disks, order := readAll(t, bytes.NewReader(got))
	if !bytes.Equal(disks["drive-scsi0"], want["drive-scsi0"]) || int64(len(disks["drive-scsi0"])) != size {
		t.Fatal("the content differs")
	}
	if rd.Extents() != 2 || len(order) != 60 {
		t.Fatalf("%d extents, %d clusters; want the source's 2 extents of 59 and 1", rd.Extents(), len(order))
	}
	if order[0].mask != 0xffdf || order[59].mask != 0x0003 {
		t.Errorf("masks %#04x and %#04x: want the zero block 5 of cluster 0, and cluster 59's blocks past the end, left out", order[0].mask, order[59].mask)
	}
	if tail := got[len(got)-vma.BlockSize+5536-vma.BlockSize:]; !testutil.AllZero(tail) {
		t.Error("the bytes past the device's end are stored, not zeros")
	}
}

// TestWriteExtentRefuses: what WriteCluster refuses, and extents of no or
// too many clusters, are refused whole: nothing of the extent is written,
// and the archive goes on as if the call had not been made.
func TestWriteExtentRefuses(t *testing.T) {
	const size = 70 // clusters of drive-scsi0
	block := bytes.Repeat([]byte{9}, vma.BlockSize)
	c := func(id int, idx int64, mask uint16) vma.Cluster {
		return vma.Cluster{Device: vma.Device{ID: id}, Index: idx, Mask: mask, Data: bytes.Repeat(block, bits.OnesCount16(mask))}
	}
	write := func(bad []vma.Cluster) ([]byte, error) {
		var out bytes.Buffer
		w := vma.NewWriter(&out, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
		w.AddDevice("drive-scsi0", size*vma.ClusterSize)
		w.AddDevice(vma.VMStateName, 4*vma.ClusterSize)
		if err := w.WriteExtent([]vma.Cluster{c(1, 0, 1), c(2, 0, 3)}); err != nil {
			t.Fatal(err)
		}
		var err error
		if bad != nil {
			err = w.WriteExtent(bad)
		}
		for _, ok := range [][]vma.Cluster{{c(1, 2, 0), c(2, 1, 0xffff)}, {c(1, 1, 0x8001), c(2, 2, 0), c(2, 3, 1)}} {
			if err := w.WriteExtent(ok); err != nil {
				t.Fatal(err)
			}
		}
		for i := int64(3); i < size; i++ {
			if err := w.WriteCluster(1, i, nil); err != nil {
				t.Fatal(err)
			}
		}
		if cerr := w.Close(); cerr != nil {
			t.Fatal(cerr)
		}
		return out.Bytes(), err
	}
	want, _ := write(nil)
	var many []vma.Cluster
	for i := int64(3); i < 3+vma.SlotsPerExtent+1; i++ {
		many = append(many, c(1, i, 1))
	}
	short := c(1, 1, 3)
	short.Data = short.Data[:vma.BlockSize]
	for name, bad := range map[string][]vma.Cluster{
		"none":           {},
		"too many":       many,
		"unknown device": {c(3, 0, 1)},
		"out of range":   {c(1, size, 1)},
		"twice in one":   {c(1, 1, 1), c(1, 1, 1)},
		"written before": {c(1, 0, 1)},
		"vmstate order":  {c(2, 0, 1)},
		"vmstate gap":    {c(2, 1, 1), c(1, 1, 1), c(2, 3, 1)},
		"data length":    {short},
		"good, then bad": {c(1, 1, 1), c(1, size+7, 1)},
	} {
		got, err := write(bad)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the refused extent left a trace in the archive", name)
		}
	}
}

// TestWriteExtentAfterWriteCluster: the clusters WriteCluster queued get
// their extent before WriteExtent's, and WriteCluster after it starts a
// new one.
func TestWriteExtentAfterWriteCluster(t *testing.T) {
	var out bytes.Buffer
	w := vma.NewWriter(&out)
	w.AddDevice("drive-scsi0", 4*vma.ClusterSize)
	data := bytes.Repeat([]byte{1}, vma.ClusterSize)
	w.WriteCluster(1, 0, data)
	w.WriteCluster(1, 1, nil)
	if err := w.WriteExtent([]vma.Cluster{{Device: vma.Device{ID: 1}, Index: 2}}); err != nil {
		t.Fatal(err)
	}
	w.WriteCluster(1, 3, data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := vma.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]int64
	for {
		e, err := rd.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var cs []int64
		for _, c := range e.Clusters {
			cs = append(cs, c.Index)
		}
		got = append(got, cs)
	}
	if fmt.Sprint(got) != "[[0 1] [2] [3]]" {
		t.Errorf("extents %v, want [[0 1] [2] [3]]", got)
	}
}

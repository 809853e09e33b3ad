package vma_test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

type testDev = testutil.Disk

var genDisk = testutil.GenDisk

func writeArchive(t testing.TB, devs []testDev, configs []vma.Config, order string, seed uint64) []byte {
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
	configs := []vma.Config{
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
	cfg := []vma.Config{{Name: "qemu-server.conf", Data: []byte("x")}}
	want := writeArchive(t, devs, cfg, "seq", 1)
	if again := writeArchive(t, devs, cfg, "seq", 1); !bytes.Equal(again, want) {
		t.Fatal("same input, different archives")
	}
	viaSink := func(piece int, zeroAt bool) []byte {
		var out bytes.Buffer
		sink, err := vma.Create(format.Dest{Path: "-", Stream: &out}, []format.Device{{Name: "drive-scsi0", Size: int64(len(data))}},
			format.CreateOptions{Configs: []format.Config{{Name: "qemu-server.conf", Data: []byte("x")}}, UUID: testutil.TestUUID, CTime: testutil.TestCTime})
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
	if !bytes.Equal(blk[:5000-4096], data[:5000-4096]) || !vma.IsZero(blk[5000-4096:]) {
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

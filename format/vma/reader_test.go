package vma_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

var testUUID = uuid.UUID{0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// testHeader is the header of an archive with one config and two devices:
// 1 "drive-scsi0" of 2 clusters + 8 KiB (3 clusters), 2 "drive-efidisk0" of
// one cluster.
func testHeader(t testing.TB) []byte {
	var out bytes.Buffer
	w := vma.NewWriter(&out, vma.WithUUID(testUUID), vma.WithCTime(time.Unix(1, 0)))
	w.AddConfig("qemu-server.conf", []byte("memory: 512\n"))
	w.AddDevice("drive-scsi0", 2*vma.ClusterSize+8192)
	w.AddDevice("drive-efidisk0", vma.ClusterSize)
	for _, c := range [][2]int{{1, 0}, {1, 1}, {1, 2}, {2, 0}} {
		w.WriteCluster(c[0], int64(c[1]), nil)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()[:12800]
}

var slot = testutil.Slot

func extent(slots ...uint64) []byte { return testutil.Extent(testUUID, slots...) }

var (
	fixExtentMD5 = testutil.FixExtentMD5
	fixHeaderMD5 = testutil.FixHeaderMD5
)

// complete is every cluster of the test header's devices, all zero.
var complete = []uint64{slot(0, 1, 0), slot(0, 1, 1), slot(0, 1, 2), slot(0, 2, 0)}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func readToEnd(raw []byte) error {
	rd, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	for {
		if _, err := rd.Next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func TestReaderRejects(t *testing.T) {
	hdr := testHeader(t)
	mod := func(f func(h []byte)) []byte { // modified header, MD5 fixed
		h := bytes.Clone(hdr)
		f(h)
		fixHeaderMD5(h)
		return h
	}
	be := binary.BigEndian
	good := cat(hdr, extent(complete...))
	if err := readToEnd(good); err != nil {
		t.Fatalf("the base archive is not valid: %v", err)
	}
	blobOf := func(h []byte, s string) uint32 { // relative offset of the blob holding s
		i := bytes.Index(h[12288:], []byte(s))
		return uint32(i - 2)
	}
	tests := []struct {
		name string
		raw  []byte
		kind error
		msg  string // substring of the error
		off  int64  // expected FormatError.Offset, -2 to skip the check
	}{
		{"empty", nil, vma.ErrCorrupt, "truncated header", 0},
		{"wrong magic", cat([]byte("QFI\xfb"), hdr[4:]), vma.ErrNotVMA, "wrong magic", 0},
		{"short text file", []byte("hi\n"), vma.ErrNotVMA, `wrong magic "hi\n"`, 0},
		{"magic only", []byte("VMA\x00"), vma.ErrCorrupt, "truncated header: got 4 of 12288 bytes", 4},
		{"truncated header", hdr[:5000], vma.ErrCorrupt, "truncated header", 5000},
		{"truncated blob buffer", hdr[:12500], vma.ErrCorrupt, "truncated header", 12500},
		{"header md5", cat(hdr[:100], []byte{1}, hdr[101:]), vma.ErrChecksum, "header MD5", 32},
		{"header size 12288", mod(func(h []byte) { be.PutUint32(h[56:], 12288) }), vma.ErrCorrupt, "header size", 56},
		{"header size huge", mod(func(h []byte) { be.PutUint32(h[56:], 0xffffffff) }), vma.ErrUnsupported, "header size", 56},
		{"header size past EOF", mod(func(h []byte) { be.PutUint32(h[56:], 1<<20) }), vma.ErrCorrupt, "truncated header", 12800},
		{"version 2", mod(func(h []byte) { be.PutUint32(h[4:], 2) }), vma.ErrUnsupported, "version 2", 4},
		{"blob offset low", mod(func(h []byte) { be.PutUint32(h[48:], 100) }), vma.ErrCorrupt, "blob buffer offset", 48},
		{"blob size past header", mod(func(h []byte) { be.PutUint32(h[52:], 600) }), vma.ErrCorrupt, "blob buffer", 52},
		{"device name mid-blob", mod(func(h []byte) { be.PutUint32(h[4096+32:], blobOf(h, "drive-scsi0")+3) }), vma.ErrCorrupt, "name pointer", 4096 + 32},
		{"device name not NUL-terminated", mod(func(h []byte) { h[12288+int(blobOf(h, "drive-scsi0"))+2+11] = 'X' }), vma.ErrCorrupt, "NUL-terminated", 4096 + 32},
		{"device name pointer 0", mod(func(h []byte) { be.PutUint32(h[4096+32:], 0) }), vma.ErrCorrupt, "name pointer", 4096 + 32},
		{"device 255", mod(func(h []byte) { copy(h[4096+255*32:], h[4096+32:4096+64]) }), vma.ErrCorrupt, "255", 4096 + 255*32},
		{"duplicate device name", mod(func(h []byte) { be.PutUint32(h[4096+64:], be.Uint32(h[4096+32:])) }), vma.ErrCorrupt, "both named", 4096 + 64},
		{"device too large", mod(func(h []byte) { be.PutUint64(h[4096+32+8:], 1<<62) }), vma.ErrCorrupt, "256 TiB", 4096 + 32 + 8},
		{"config data mid-blob", mod(func(h []byte) { be.PutUint32(h[3068:], be.Uint32(h[3068:])+1) }), vma.ErrCorrupt, "config 0", 2044},
		{"config name not a string", mod(func(h []byte) { be.PutUint32(h[2044:], be.Uint32(h[3068:])) }), vma.ErrCorrupt, "config 0", 2044},

		{"no extents", hdr, vma.ErrIncomplete, "drive-scsi0: 3 of 3 clusters missing (0-2); drive-efidisk0: 1 of 1 clusters missing (0)", 12800},
		{"missing cluster", cat(hdr, extent(complete[0], complete[2], complete[3])), vma.ErrIncomplete, "drive-scsi0: 1 of 3 clusters missing (1)", -2},
		{"truncated extent header", cat(hdr, extent(complete...)[:100]), vma.ErrCorrupt, "truncated extent header", 12800},
		{"truncated extent data", cat(hdr, extent(slot(1, 1, 0))[:600]), vma.ErrCorrupt, "truncated", 12800},
		{"trailing zero sector", cat(good, make([]byte, 512)), vma.ErrChecksum, "extent 1: header MD5", 13312},
		{"trailing garbage", cat(good, []byte("junk")), vma.ErrCorrupt, "truncated extent header", 13312},
		{"extent md5", func() []byte { e := extent(complete...); e[45] ^= 1; return cat(hdr, e) }(), vma.ErrChecksum, "extent 0: header MD5", 12800},
		{"extent uuid", func() []byte { e := extent(complete...); e[8] ^= 1; fixExtentMD5(e); return cat(hdr, e) }(), vma.ErrCorrupt, "UUID", 12800},
		{"extent magic", func() []byte { e := extent(complete...); e[3] = 'X'; fixExtentMD5(e); return cat(hdr, e) }(), vma.ErrCorrupt, "magic", 12800},
		{"extent reserved", func() []byte { e := extent(complete...); e[5] = 1; fixExtentMD5(e); return cat(hdr, e) }(), vma.ErrCorrupt, "reserved", 12800},
		{"block count too high", func() []byte {
			e := extent(complete...)
			be.PutUint16(e[6:], 1)
			fixExtentMD5(e)
			return cat(hdr, e, make([]byte, 4096))
		}(), vma.ErrCorrupt, "block count 1, but its clusters store 0", 12806},
		{"block count too low", func() []byte { e := extent(slot(3, 1, 0)); be.PutUint16(e[6:], 1); fixExtentMD5(e); return cat(hdr, e) }(), vma.ErrCorrupt, "block count 1, but its clusters store 2", 12806},
		{"unknown device", cat(hdr, extent(slot(0, 3, 0))), vma.ErrCorrupt, "unknown device id 3", 12800 + 40},
		{"device 255 in slot", cat(hdr, extent(slot(0, 255, 0))), vma.ErrCorrupt, "unknown device id 255", 12800 + 40},
		{"cluster beyond device", cat(hdr, extent(slot(0, 1, 0), slot(0, 1, 3))), vma.ErrCorrupt, "cluster beyond the end", 12800 + 48},
		{"cluster 2^32-1", cat(hdr, extent(slot(0, 2, 0xffffffff))), vma.ErrCorrupt, "cluster beyond the end", 12800 + 40},
		{"duplicate cluster", cat(hdr, extent(complete...), extent(slot(0, 1, 1))), vma.ErrCorrupt, "duplicate cluster (device drive-scsi0, cluster 1, byte offset 13352)", 13352},
		{"duplicate in one extent", cat(hdr, extent(slot(0, 2, 0), slot(1, 2, 0))), vma.ErrCorrupt, "duplicate", 12800 + 48},
		{"stored block past end", cat(hdr, extent(slot(0, 1, 0), slot(0, 1, 1), slot(1<<2, 1, 2))), vma.ErrCorrupt, "stored block past the end", 12800 + 56},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := readToEnd(tc.raw)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			var fe *vma.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %q is not a *FormatError", err)
			}
			if tc.off != -2 && fe.Offset != tc.off {
				t.Errorf("offset %d, want %d (%v)", fe.Offset, tc.off, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

// restoreAll reads raw to its end and returns every device's content as
// the clusters give it, cut at the device's size.
func restoreAll(raw []byte) (map[string][]byte, error) {
	rd, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, d := range rd.Header().Devices {
		out[d.Name] = make([]byte, d.Size)
	}
	for {
		c, err := rd.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		buf := make([]byte, vma.ClusterSize)
		c.Expand(buf)
		dev := out[c.Device.Name]
		if at := c.Index * vma.ClusterSize; at < int64(len(dev)) {
			copy(dev[at:], buf)
		}
	}
}

// TestReaderAccepts: archives Proxmox's reader accepts are read, and give
// the devices their stored bytes: stored blocks as stored (0xab here),
// the rest zeros, and nothing past a device's end (the junk of a pre-2020
// archive's last cluster is cut).
func TestReaderAccepts(t *testing.T) {
	hdr := testHeader(t)
	zeros := func(n int) []byte { return make([]byte, n) }
	ab := func(n int) []byte { return bytes.Repeat([]byte{0xab}, n) }
	const scsi = 2*vma.ClusterSize + 8192
	allZero := map[string][]byte{"drive-scsi0": zeros(scsi), "drive-efidisk0": zeros(vma.ClusterSize)}
	lastStored := map[string][]byte{"drive-scsi0": cat(zeros(2*vma.ClusterSize), ab(8192)), "drive-efidisk0": zeros(vma.ClusterSize)}
	tests := []struct {
		name string
		raw  []byte
		want map[string][]byte
	}{
		{"59 clusters in one extent", func() []byte {
			var out bytes.Buffer
			w := vma.NewWriter(&out, vma.WithUUID(testUUID))
			id, _ := w.AddDevice("d", 59*vma.ClusterSize)
			var slots []uint64
			for c := range uint32(59) {
				w.WriteCluster(id, int64(c), nil)
				slots = append(slots, slot(0xffff, 1, c))
			}
			w.Close()
			return cat(out.Bytes()[:12800], extent(slots...))
		}(), map[string][]byte{"d": ab(59 * vma.ClusterSize)}},
		{"empty extents between", cat(hdr, extent(), extent(complete[:2]...), extent(), extent(complete[2:]...), extent()), allZero},
		{"out of order", cat(hdr, extent(complete[3], complete[2], complete[0]), extent(complete[1])), allZero},
		{"unused slot with junk", cat(hdr, extent(append([]uint64{slot(0xffff, 0, 77)}, complete...)...)), allZero},
		{"reserved blockinfo byte", cat(hdr, extent(slot(0, 1, 0)|1<<40, complete[1], complete[2], complete[3])), allZero},
		// Before mid-2020 Proxmox stored the whole last cluster, junk past
		// the device end included; its reader accepts a full mask there.
		{"pre-2020 full last cluster", cat(hdr, extent(complete[0], complete[1], slot(0xffff, 1, 2), complete[3])), lastStored},
		{"straddling stored blocks", cat(hdr, extent(complete[0], complete[1], slot(0b11, 1, 2), complete[3])), lastStored},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := restoreAll(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.want {
				if !bytes.Equal(got[name], want) {
					t.Errorf("%s: restored content differs (%d bytes, want %d)", name, len(got[name]), len(want))
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("%d devices, want %d", len(got), len(tc.want))
			}
		})
	}
}

func TestReaderVMStateOrder(t *testing.T) {
	var out bytes.Buffer
	w := vma.NewWriter(&out, vma.WithUUID(testUUID))
	id, _ := w.AddDevice(vma.VMStateName, 2*vma.ClusterSize)
	w.WriteCluster(id, 0, nil)
	w.WriteCluster(id, 1, nil)
	w.Close()
	h := out.Bytes()[:12800]
	if err := readToEnd(cat(h, extent(slot(0, 1, 1), slot(0, 1, 0)))); err == nil || !strings.Contains(err.Error(), "vmstate cluster out of order") {
		t.Fatalf("out-of-order vmstate: %v", err)
	}
	// vmstate has no completeness rule and no upper bound, as in Proxmox.
	if err := readToEnd(cat(h, extent(slot(0, 1, 0), slot(0, 1, 1), slot(1, 1, 2)))); err != nil {
		t.Fatal(err)
	}
}

func TestClusterBlockAndExpand(t *testing.T) {
	c := vma.Cluster{Mask: 0b1000_0000_0000_0101, Data: make([]byte, 3*4096)}
	for i := range c.Data {
		c.Data[i] = byte(i / 4096 * 10)
	}
	if b := c.Block(0); b == nil || b[0] != 0 {
		t.Error("block 0")
	}
	if c.Block(1) != nil {
		t.Error("block 1 should be zero")
	}
	if b := c.Block(2); b[0] != 10 {
		t.Error("block 2")
	}
	if b := c.Block(15); b[0] != 20 {
		t.Error("block 15")
	}
	full := bytes.Repeat([]byte{0xee}, vma.ClusterSize)
	c.Expand(full)
	if full[4096] != 0 || full[2*4096] != 10 || full[15*4096] != 20 || full[14*4096] != 0 {
		t.Error("Expand")
	}
}

// TestReaderBoundsTracking: an archive that touches a new 4096-cluster page
// of a 256 TiB device with every slot must fail once tracking would exceed
// its bound, having allocated far less than 256 MiB.
func TestReaderBoundsTracking(t *testing.T) {
	h := func() []byte { // the header alone: Close refuses the incomplete archive
		var hb bytes.Buffer
		w2 := vma.NewWriter(&hb, vma.WithUUID(testUUID))
		id, _ := w2.AddDevice("huge", vma.MaxClusters*vma.ClusterSize)
		for c := range int64(vma.WriterClustersPerExtent) {
			w2.WriteCluster(id, c, nil)
		}
		w2.WriteCluster(id, 58, nil) // completes the first extent
		w2.Flush()
		return hb.Bytes()[:12800]
	}()
	var raw bytes.Buffer
	raw.Write(h)
	const pages = 1<<16 + 100
	slots := make([]uint64, 0, 59)
	for p := uint32(0); p < pages; p++ {
		slots = append(slots, slot(0, 1, p*4096+1)) // never fills a page
		if len(slots) == 59 || p == pages-1 {
			raw.Write(extent(slots...))
			slots = slots[:0]
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := readToEnd(raw.Bytes())
	runtime.ReadMemStats(&after)
	if !errors.Is(err, vma.ErrUnsupported) || !strings.Contains(err.Error(), "out of order") {
		t.Fatalf("got %v, want ErrUnsupported", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d pages tracked before failing: %d MiB allocated", 1<<16, alloc>>20)
	if alloc > 256<<20 {
		t.Errorf("allocated %d MiB", alloc>>20)
	}
}

// TestReaderWant: on a file, extents holding only other devices' data are
// seeked over; the wanted device reads back whole, and truncation inside a
// skipped extent is still an error.
func TestReaderWant(t *testing.T) {
	d1 := testutil.GenDisk(1, 8<<20, "data")
	d2 := testutil.GenDisk(2, 3<<20+4096, "mixed")
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "a", Data: d1}, {Name: "b", Data: d2}}, nil, "seq", 0)
	path := filepath.Join(t.TempDir(), "x.vma")
	os.WriteFile(path, raw, 0o644)

	read := func(b []byte, f *os.File) (skipped int, got []byte, err error) {
		rd, err := vma.NewReader(f)
		if err != nil {
			return 0, nil, err
		}
		if !rd.Want(2) {
			t.Fatal("a file should be seekable")
		}
		got = make([]byte, len(d2))
		buf := make([]byte, vma.ClusterSize)
		for {
			c, err := rd.Next()
			if err == io.EOF {
				return skipped, got, nil
			}
			if err != nil {
				return skipped, got, err
			}
			if c.Data == nil && c.Mask != 0 {
				skipped++
				continue
			}
			if c.Device.ID == 2 {
				c.Expand(buf)
				copy(got[c.Index*vma.ClusterSize:], buf)
			}
		}
	}
	f, _ := os.Open(path)
	skipped, got, err := read(raw, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if skipped < 100 || !bytes.Equal(got, d2) {
		t.Errorf("%d clusters skipped (want most of the 128 of device a); device b equal: %v", skipped, bytes.Equal(got, d2))
	}
	// Cut inside the second extent, which holds only device a.
	os.WriteFile(path, raw[:12800+512+58*vma.ClusterSize+512+1000], 0o644)
	f, _ = os.Open(path)
	_, _, err = read(nil, f)
	f.Close()
	if !errors.Is(err, vma.ErrCorrupt) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated skipped extent: %v", err)
	}
	// A pipe cannot seek: Want says so, and everything is read — both
	// devices come back whole, no cluster without its data.
	rd, _ := vma.NewReader(io.MultiReader(bytes.NewReader(raw)))
	if rd.Want(2) {
		t.Error("Want succeeded on a reader that cannot seek")
	}
	all := map[int][]byte{1: make([]byte, len(d1)), 2: make([]byte, len(d2))}
	buf := make([]byte, vma.ClusterSize)
	for {
		c, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Mask != 0 && c.Data == nil {
			t.Fatalf("device %d cluster %d skipped on a pipe", c.Device.ID, c.Index)
		}
		c.Expand(buf)
		copy(all[c.Device.ID][c.Index*vma.ClusterSize:], buf)
	}
	if !bytes.Equal(all[1], d1) || !bytes.Equal(all[2], d2) {
		t.Error("read from a pipe, the devices differ from what was written")
	}
}

func TestSalvage(t *testing.T) {
	data := testutil.GenDisk(3, 150*vma.ClusterSize, "data")
	good := testutil.WriteArchive(t, []testutil.Disk{{Name: "d", Data: data}}, nil, "seq", 0)
	hs := 12800
	ext := []int{hs}
	for off := hs; off < len(good); {
		off += 512 + int(binary.BigEndian.Uint16(good[off+6:]))*4096
		ext = append(ext, off)
	}
	flipped := bytes.Clone(good)
	flipped[ext[1]+100] ^= 1 // extent 1's header: clusters 58..115 lost
	inserted := cat(good[:ext[2]], bytes.Repeat([]byte{0x5a}, 3000), good[ext[2]:])
	// Two damaged extents in a row: extent 1 and a copy of it appended
	// again (as a resumed download does) between extents 1 and 2.
	twice := cat(good[:ext[2]], good[ext[1]:ext[2]], good[ext[1]:ext[2]], good[ext[2]:])
	// Extents 0 and 1 damaged, one after the other.
	both := bytes.Clone(good)
	both[ext[0]+60] ^= 1
	both[ext[1]+60] ^= 1
	tests := []struct {
		name    string
		raw     []byte
		lost    []vma.Range
		damaged int64 // offset of the first damage
	}{
		{"extent appended twice", twice, nil, int64(ext[2])},
		{"two damaged extents in a row", both, []vma.Range{{First: 0, Last: 115}}, int64(ext[0])},
		{"bad extent header", flipped, []vma.Range{{First: 58, Last: 115}}, int64(ext[1])},
		{"garbage between extents", inserted, nil, int64(ext[2])},
		{"truncated in data", good[:ext[2]+512+4096*10], []vma.Range{{First: 116, Last: 149}}, int64(ext[2])},
		// Two and a half clusters of extent 2 arrived: the two whole
		// ones are kept.
		{"truncated after whole clusters", good[:ext[2]+512+4096*40], []vma.Range{{First: 118, Last: 149}}, int64(ext[2] + 512 + 2*vma.ClusterSize)},
		{"truncated in a header", good[:ext[1]+100], []vma.Range{{First: 58, Last: 149}}, int64(ext[1])},
		{"intact", good, nil, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := vma.NewReader(bytes.NewReader(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			rd.Salvage()
			got := make([]byte, len(data))
			buf := make([]byte, vma.ClusterSize)
			for {
				c, err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("salvage stopped: %v", err)
				}
				c.Expand(buf)
				copy(got[c.Index*vma.ClusterSize:], buf)
			}
			miss := rd.MissingClusters()
			var lost []vma.Range
			if len(miss) > 0 {
				lost = miss[0].Ranges
			}
			if !slices.Equal(lost, tc.lost) {
				t.Errorf("lost %v, want %v", lost, tc.lost)
			}
			if d := rd.Damaged(); tc.damaged < 0 && len(d) > 0 || tc.damaged >= 0 && (len(d) != 1 || d[0].Offset != tc.damaged || d[0].Length <= 0) {
				t.Errorf("damage %+v, want one range at %d", d, tc.damaged)
			}
			// Everything not lost is intact; lost clusters read as zero.
			want := bytes.Clone(data)
			for _, r := range tc.lost {
				clear(want[r.First*vma.ClusterSize : (r.Last+1)*vma.ClusterSize])
			}
			if !bytes.Equal(got, want) {
				t.Error("salvaged content differs from the intact clusters")
			}
		})
	}
}

// TestSalvageLongDamage: a run of 100,000 damaged extent headers costs
// one damaged range and memory that does not grow with it; the extents
// after it are read.
func TestSalvageLongDamage(t *testing.T) {
	data := testutil.GenDisk(4, 60*vma.ClusterSize, "data")
	good := testutil.WriteArchive(t, []testutil.Disk{{Name: "d", Data: data}}, nil, "seq", 0)
	hs := 12800
	// A valid-looking extent header of this archive with a bad MD5.
	bad := bytes.Clone(good[hs : hs+512])
	bad[100] ^= 1
	raw := cat(good[:hs], bytes.Repeat(bad, 100000), good[hs:])
	rd, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	rd.Salvage()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n := 0
	for {
		_, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	runtime.ReadMemStats(&after)
	if n != 60 {
		t.Errorf("%d clusters after the damage, want 60", n)
	}
	if d := rd.Damaged(); len(d) != 1 || d[0].Offset != int64(hs) || d[0].Length != 100000*512 {
		t.Errorf("damage %+v, want one range of %d bytes at %d", d, 100000*512, hs)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
		t.Errorf("salvaging 51 MB of damage allocated %d MiB", grew>>20)
	}
}

// TestHeaderMemory: the largest header accepted (64 MiB), its blob buffer
// all zero-length blobs but for the real ones at its start, parses in a
// few MiB: the header is streamed, not assembled.
func TestHeaderMemory(t *testing.T) {
	good := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(1, 65536, "data")}},
		[]format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 1\n")}}, "seq", 0)
	hs := int(binary.BigEndian.Uint32(good[56:]))
	big := make([]byte, vma.MaxHeaderSize)
	copy(big, good[:hs])
	binary.BigEndian.PutUint32(big[56:], vma.MaxHeaderSize)         // header_size
	binary.BigEndian.PutUint32(big[52:], vma.MaxHeaderSize-12288-1) // blob_buffer_size: everything
	testutil.FixHeaderMD5(big)
	raw := append(big, good[hs:]...)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	rd, err := vma.NewReader(bytes.NewReader(raw))
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.Fatal(err)
	}
	if a := m1.TotalAlloc - m0.TotalAlloc; a > 8<<20 {
		t.Errorf("reading a 64 MiB header allocated %d MiB", a>>20)
	}
	h := rd.Header()
	if len(h.Configs) != 1 || string(h.Configs[0].Data) != "memory: 1\n" || len(h.Devices) != 1 || h.Size != vma.MaxHeaderSize {
		t.Errorf("header %+v", h)
	}
	if err := readToEnd(raw); err != nil {
		t.Errorf("reading on: %v", err)
	}
}

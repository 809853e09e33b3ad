package vma_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestOpenConformance: every device of archives in every cluster order
// reads through vma.Open exactly as its data, at any offset, in parallel
// (checked on the index most in one piece and on the most scattered one),
// with an extent map that never calls stored data zero.
func TestOpenConformance(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 3158528, "mixed")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 540672, "data")},
		{Name: "drive-virtio1", Data: testutil.GenDisk(3, 1<<20, "zero")},
		{Name: "drive-sata0", Data: testutil.GenDisk(4, 5*vma.ClusterSize+4096+1000, "mixed")},
		{Name: vma.VMStateName, Data: testutil.GenDisk(5, 200000, "mixed")},
	}
	// Several seeds of "runs", so that some runs start with an all-zero
	// cluster right after another device's (as in Proxmox's case2).
	for _, order := range []string{"seq", "interleave", "runs/1", "runs/2", "runs/3", "runs/4", "shuffle"} {
		t.Run(order, func(t *testing.T) {
			t.Parallel()
			disks := disks
			if order == "shuffle" {
				disks = disks[:len(disks)-1] // a vmstate stream is always in order
			}
			order, seed, _ := strings.Cut(order, "/")
			n, _ := strconv.Atoi(seed)
			raw := testutil.WriteArchive(t, disks, nil, order, uint64(n))
			a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Devices()) != len(disks) {
				t.Fatalf("%d devices, want %d", len(a.Devices()), len(disks))
			}
			conform := formattest.TestSourceSerial
			if order == "seq" || order == "shuffle" {
				conform = formattest.TestSource
			}
			for i, d := range a.Devices() {
				t.Run(d.Device().Name, func(t *testing.T) {
					conform(t, d, disks[i].Data)
				})
			}
		})
	}
}

// TestOpenGolden: Proxmox's archives read through vma.Open give every
// device's MANIFEST digest.
func TestOpenGolden(t *testing.T) {
	dir, m := testutil.LoadManifest(t)
	for name, want := range m {
		if filepath.Ext(name) != ".vma" {
			continue // compressed: read as a stream only
		}
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, wd := range want.Devices {
			d, ok := a.Device(wd.Name)
			if !ok {
				t.Fatalf("%s: no device %s", name, wd.Name)
			}
			b := make([]byte, d.Size())
			if n, err := d.ReadAt(b, 0); n != len(b) {
				t.Fatalf("%s %s: read %d: %v", name, wd.Name, n, err)
			}
			if got := sha(b); got != wd.SHA256 {
				t.Errorf("%s %s: sha256 %s, want %s", name, wd.Name, got, wd.SHA256)
			}
		}
	}
}

// TestOpenSameErrors: damaged archives fail through vma.Open with the
// error the stream reader gives, word for word.
func TestOpenSameErrors(t *testing.T) {
	good := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 4<<20, "mixed")},
		{Name: "drive-scsi1", Data: testutil.GenDisk(2, 1<<20, "data")},
	}, nil, "interleave", 0)
	hdr := 12800
	cases := map[string][]byte{
		"truncated mid-extent":   good[:len(good)-5000],
		"truncated at an extent": good[:hdr+512+0],
		"cut header":             good[:5000],
		"bad extent md5":         flip(good, hdr+100),
		"bad header md5":         flip(good, 200),
		"trailing garbage":       append(bytes.Clone(good), make([]byte, 600)...),
		"short trailing garbage": append(bytes.Clone(good), make([]byte, 100)...),
		"not vma":                []byte("QFI\xfbnot an archive at all, really"),
		"duplicate extent":       dupFirstExtent(t, good, hdr),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			_, oerr := vma.Open(bytes.NewReader(raw), int64(len(raw)))
			serr := streamErr(raw)
			if oerr == nil || serr == nil {
				t.Fatalf("Open: %v; stream: %v", oerr, serr)
			}
			if oerr.Error() != serr.Error() {
				t.Errorf("Open: %v\nstream: %v", oerr, serr)
			}
			var fe *vma.FormatError
			if !errors.As(oerr, &fe) {
				t.Errorf("Open's error is %T, not a *vma.FormatError", oerr)
			}
		})
	}
}

// streamErr reads raw to the end with the stream reader.
func streamErr(raw []byte) error {
	r, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	for {
		if _, err := r.NextExtent(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x40
	return c
}

// dupFirstExtent repeats the first extent at the end.
func dupFirstExtent(t *testing.T, raw []byte, hdr int) []byte {
	t.Helper()
	n := 512 + int(raw[hdr+6])<<8*4096 + int(raw[hdr+7])*4096
	return append(bytes.Clone(raw), raw[hdr:hdr+n]...)
}

// TestOpenIndexLimit: an archive whose clusters are scattered beyond the
// index limit fails with ErrIndexLimit, which says to read it as a stream.
func TestOpenIndexLimit(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(7, 8<<20, "data")}}, nil, "shuffle", 1)
	a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	limit := a.IndexBytes() / 2
	_, err = vma.Open(bytes.NewReader(raw), int64(len(raw)), vma.WithIndexLimit(limit))
	if !errors.Is(err, vma.ErrIndexLimit) || !errors.Is(err, format.ErrStreamOnly) {
		t.Fatalf("limit %d of %d: got %v", limit, a.IndexBytes(), err)
	}
}

// TestOpenIndexSize: the index of a disk in Proxmox's order costs one run
// per extent; masks only where clusters are partly stored.
func TestOpenIndexSize(t *testing.T) {
	for _, style := range []string{"data", "mixed", "zero"} {
		raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(8, 64<<20, style)}}, nil, "seq", 0)
		a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		clusters := int64(64<<20) / vma.ClusterSize
		perCluster := float64(a.IndexBytes()) / float64(clusters)
		t.Logf("%s: %d bytes of index for %d clusters (%.2f a cluster)", style, a.IndexBytes(), clusters, perCluster)
		if perCluster > 2.6 {
			t.Errorf("%s: %.2f bytes of index a cluster; a 1 TiB disk would need %.0f MiB", style, perCluster, perCluster*(1<<24)/(1<<20))
		}
	}
}

// synthArchive is an archive made on the fly, so that indexes of many
// MiB cost no memory to test. Extent x holds cluster group g = x*stride
// mod extents, in one of two layouts:
//   - grouped: clusters [59g, 59g+59) of one device, the first storing
//     block 0 filled with the byte g%251+1, the others nothing: one run
//     of 59 masks, 142 bytes of index;
//   - interleaved: clusters [30g, 30g+30) of device 1 and [29g, 29g+29)
//     of device 2 taking turns, each storing block 0: 59 runs of one mask,
//     1534 bytes of index.
//   - empty: clusters [59g, 59g+59) of one device, none storing anything:
//     no index at all, but the reader's tracking of clusters seen out of
//     order (a page of 600 bytes for 4096 clusters) grows.
type synthArchive struct {
	hdr             []byte
	extents, stride int64
	interleaved     bool
	empty           bool
	mu              sync.Mutex
	ext             [vma.ExtentHeaderSize]byte // scratch: ReadAt allocates nothing
}

func newSynthArchive(t testing.TB, extents, stride int64, interleaved bool) *synthArchive {
	t.Helper()
	size := extents * vma.SlotsPerExtent * vma.ClusterSize
	if interleaved {
		size = extents * 30 * vma.ClusterSize
	}
	sizes := []int64{size}
	if interleaved {
		sizes = []int64{size, size - extents*vma.ClusterSize}
	}
	return &synthArchive{hdr: synthHeader(t, sizes), extents: extents, stride: stride, interleaved: interleaved}
}

// newEmptyArchive returns a synthArchive in the empty layout.
func newEmptyArchive(t testing.TB, extents, stride int64) *synthArchive {
	t.Helper()
	hdr := synthHeader(t, []int64{extents * vma.SlotsPerExtent * vma.ClusterSize})
	return &synthArchive{hdr: hdr, extents: extents, stride: stride, empty: true}
}

// synthHeader returns the header of an archive of devices of the sizes
// given.
func synthHeader(t testing.TB, sizes []int64) []byte {
	t.Helper()
	var b bytes.Buffer
	w := vma.NewWriter(&b, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
	for i, size := range sizes {
		if _, err := w.AddDevice(fmt.Sprintf("drive-scsi%d", i), size); err != nil {
			t.Fatal(err)
		}
	}
	for i, size := range sizes {
		for c := range min(size/vma.ClusterSize, vma.SlotsPerExtent) { // enough for the header to be written
			if err := w.WriteCluster(i+1, c, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	hs := int(binary.BigEndian.Uint32(b.Bytes()[56:]))
	return b.Bytes()[:hs]
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// extentSize is the size of every extent.
func (a *synthArchive) extentSize() int64 {
	switch {
	case a.interleaved:
		return vma.ExtentHeaderSize + vma.SlotsPerExtent*vma.BlockSize
	case a.empty:
		return vma.ExtentHeaderSize
	}
	return vma.ExtentHeaderSize + vma.BlockSize
}

func (a *synthArchive) Size() int64 { return int64(len(a.hdr)) + a.extents*a.extentSize() }

// group returns the cluster group extent x holds.
func (a *synthArchive) group(x int64) int64 { return x * a.stride % a.extents }

func (a *synthArchive) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		at := off + int64(n)
		switch {
		case at >= a.Size():
			return n, io.EOF
		case at < int64(len(a.hdr)):
			n += copy(p[n:], a.hdr[at:])
			continue
		}
		x, in := (at-int64(len(a.hdr)))/a.extentSize(), (at-int64(len(a.hdr)))%a.extentSize()
		g := a.group(x)
		if in >= vma.ExtentHeaderSize {
			k := int(min(int64(len(p)-n), a.extentSize()-in))
			p[n] = byte(g%251 + 1)
			for done := 1; done < k; done *= 2 {
				copy(p[n+done:n+k], p[n:n+done])
			}
			n += k
			continue
		}
		a.mu.Lock()
		e := a.ext[:]
		clear(e)
		copy(e, vma.ExtentMagic[:])
		copy(e[8:], testutil.TestUUID[:])
		for i := range int64(vma.SlotsPerExtent) {
			slot := testutil.Slot(0, 1, uint32(g*vma.SlotsPerExtent+i))
			switch {
			case a.interleaved:
				slot = testutil.Slot(1, byte(1+i%2), uint32(g*(30-i%2)+i/2))
			case i == 0 && !a.empty:
				slot = testutil.Slot(1, 1, uint32(g*vma.SlotsPerExtent))
			}
			binary.BigEndian.PutUint64(e[40+8*i:], slot)
		}
		binary.BigEndian.PutUint16(e[6:], uint16(1+(vma.SlotsPerExtent-1)*boolInt(a.interleaved)-boolInt(a.empty))) // blocks
		testutil.FixExtentMD5(e)
		n += copy(p[n:], e[in:])
		a.mu.Unlock()
	}
	return n, nil
}

// TestOpenIndexChunks: an index of several chunks (of runs and of masks,
// a run's masks moved whole into a new chunk) reads every cluster right,
// in order and out of order (sorted in place across chunks).
func TestOpenIndexChunks(t *testing.T) {
	const extents = 4099 // prime: any stride visits every group; > a chunk of runs
	const group = vma.SlotsPerExtent
	for _, stride := range []int64{1, 7919} {
		a := newSynthArchive(t, extents, stride, false)
		ar, err := vma.Open(a, a.Size())
		if err != nil {
			t.Fatal(err)
		}
		exact := int64(extents) * (24 + 2*group)
		if ar.IndexBytes() < exact || ar.IndexBytes() > exact+exact/50+256<<10 {
			t.Errorf("stride %d: %d bytes of index for %d of runs and masks", stride, ar.IndexBytes(), exact)
		}
		d := ar.Devices()[0]
		// Every group's stored block and extent map (a run whose masks
		// were moved to a new chunk among them).
		block := make([]byte, vma.BlockSize)
		for g := range int64(extents) {
			off := g * group * vma.ClusterSize
			if n, err := d.ReadAt(block, off); n != len(block) || err != nil || block[0] != byte(g%251+1) || block[len(block)-1] != block[0] {
				t.Fatalf("stride %d: group %d: ReadAt(%d) = %d, %v", stride, g, off, n, err)
			}
			e, err := d.Region(off, 3*vma.ClusterSize)
			if err != nil || e.Zero || e.Length != vma.ClusterSize {
				t.Fatalf("stride %d: group %d: extent %+v, %v", stride, g, e, err)
			}
		}
		// Every 97th group, and those around the chunks' ends (4096
		// runs), whole: the stored block and the zeros around it.
		var groups []int64
		for g := int64(0); g < extents; g += 97 {
			groups = append(groups, g)
		}
		for g := int64(4095); g < extents; g += 4096 {
			groups = append(groups, g, g+1)
		}
		p := make([]byte, 2*vma.ClusterSize)
		for _, g := range groups {
			// The end of the group before (nothing stored), then the
			// first cluster of g: block 0 stored, the rest zero.
			at := g * group * vma.ClusterSize
			off := max(at-vma.ClusterSize, 0)
			if n, err := d.ReadAt(p, off); n != len(p) || err != nil {
				t.Fatalf("stride %d: ReadAt(%d) = %d, %v", stride, off, n, err)
			}
			if !bytes.Equal(p[at-off:][:vma.BlockSize], bytes.Repeat([]byte{byte(g%251 + 1)}, vma.BlockSize)) ||
				!testutil.AllZero(p[:at-off]) || !testutil.AllZero(p[at-off+vma.BlockSize:]) {
				t.Fatalf("stride %d: group %d reads wrong", stride, g)
			}
		}
	}
}

// TestOpenIndexMemory: building an index allocates what the index takes,
// not the two or three times that slices growing by doubling and copies
// of them cost; one that reaches its limit stops there.
func TestOpenIndexMemory(t *testing.T) {
	alloc := func(a *synthArchive, opts ...vma.OpenOption) (uint64, *vma.Archive, error) {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		ar, err := vma.Open(a, a.Size(), opts...)
		runtime.ReadMemStats(&m1)
		return m1.TotalAlloc - m0.TotalAlloc, ar, err
	}
	// What Open allocates whatever the index: the reader's buffers.
	base, _, err := alloc(newSynthArchive(t, 1, 1, true))
	if err != nil {
		t.Fatal(err)
	}
	const limit = 4 << 20
	fits := newSynthArchive(t, 1801, 1, true) // 2.6 MiB of index
	got, ar, err := alloc(fits, vma.WithIndexLimit(limit))
	if err != nil {
		t.Fatal(err)
	}
	if over := int64(got-base) - ar.IndexBytes(); over > 1<<20 {
		t.Errorf("an index of %d KiB allocated %d KiB more", ar.IndexBytes()>>10, over>>10)
	}
	got, _, err = alloc(newSynthArchive(t, 2*1801, 1, true), vma.WithIndexLimit(limit))
	if !errors.Is(err, vma.ErrIndexLimit) {
		t.Fatalf("twice the archive under a limit of %d MiB: %v", limit>>20, err)
	}
	if over := int64(got-base) - limit; over > 1<<20 {
		t.Errorf("an index stopped at its limit of %d KiB allocated %d KiB more", limit>>10, over>>10)
	}
}

// TestOpenIndexTracking: the limit covers the reader's tracking of the
// clusters seen out of order, not only the index: an archive of zero
// clusters (no index) in an order that keeps 59 pages of tracking (35 KiB)
// partly filled is refused under a limit of 16 KiB.
func TestOpenIndexTracking(t *testing.T) {
	const extents = 4099 // prime: a stride visits every group
	for _, tc := range []struct {
		stride int64
		limit  int64
		ok     bool
	}{{1, 16 << 10, true}, {7919, 16 << 10, false}, {7919, 64 << 10, true}} {
		a := newEmptyArchive(t, extents, tc.stride)
		ar, err := vma.Open(a, a.Size(), vma.WithIndexLimit(tc.limit))
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, vma.ErrIndexLimit) {
			t.Errorf("stride %d, limit %d KiB: %v", tc.stride, tc.limit>>10, err)
		}
		if err == nil && ar.IndexBytes() != 0 {
			t.Errorf("stride %d: %d bytes of index for zero clusters", tc.stride, ar.IndexBytes())
		}
	}
}

package vma_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// memDisk is an io.WriterAt over a byte slice that counts writes.
type memDisk struct {
	b      []byte
	writes atomic.Int64
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write outside the disk")
	}
	m.writes.Add(1)
	return copy(m.b[off:], p), nil
}

// zeroDisk is a memDisk that is a format.DiskWriter: ZeroAt writes zeros
// (it starts out holding 0xee everywhere), and it counts the bytes each
// method was given, to check every byte is delivered exactly once.
type zeroDisk struct {
	memDisk
	data, zeros atomic.Int64
}

func newZeroDisk(n int64) *zeroDisk {
	return &zeroDisk{memDisk: memDisk{b: bytes.Repeat([]byte{0xee}, int(n))}}
}

func (z *zeroDisk) WriteAt(p []byte, off int64) (int, error) {
	z.data.Add(int64(len(p)))
	return z.memDisk.WriteAt(p, off)
}

func (z *zeroDisk) ZeroAt(off, n int64) error {
	z.zeros.Add(n)
	_, err := z.memDisk.WriteAt(make([]byte, n), off)
	return err
}

// orderedDisk is a zeroDisk whose layout depends on the order of writes
// (it records the order): Copy must write it from one goroutine, in
// ascending order.
type orderedDisk struct {
	*zeroDisk
	mu   sync.Mutex
	next int64
	bad  bool
}

func (o *orderedDisk) note(off, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if off != o.next {
		o.bad = true
	}
	o.next = off + n
}

func (o *orderedDisk) WriteAt(p []byte, off int64) (int, error) {
	o.note(off, int64(len(p)))
	return o.zeroDisk.WriteAt(p, off)
}

func (o *orderedDisk) ZeroAt(off, n int64) error {
	o.note(off, n)
	return o.zeroDisk.ZeroAt(off, n)
}

// freeDisk is a zeroDisk that declares its result independent of order.
type freeDisk struct{ *zeroDisk }

func (freeDisk) OrderIndependent() {}

func TestUnpack(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 3158528, "mixed")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 540672, "data")},
		{Name: "drive-virtio1", Data: testutil.GenDisk(3, 1<<20, "zero")},
		{Name: vma.VMStateName, Data: testutil.GenDisk(4, 200000, "mixed")},
	}
	for i, order := range []string{"seq", "interleave", "shuffle", "seq", "shuffle"} {
		workers := 1 + 3*(i%2) // 1 and 4 writers
		t.Run(fmt.Sprintf("%s-%dworkers", order, workers), func(t *testing.T) {
			raw := testutil.WriteArchive(t, disks, nil, order, 3)
			rd, err := vma.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			targets := map[int]io.WriterAt{}
			mems := map[int]*memDisk{}
			for _, d := range rd.Header().Devices {
				if d.Name == "drive-efidisk0" {
					continue // read and checked, not written
				}
				mems[d.ID] = &memDisk{b: make([]byte, d.Size)}
				targets[d.ID] = mems[d.ID]
			}
			res, err := vma.Unpack(context.Background(), rd, targets, vma.UnpackOptions{Digest: true, Workers: workers})
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != int64(len(raw)) {
				t.Errorf("read %d of %d bytes", res.Bytes, len(raw))
			}
			for i, st := range res.Devices {
				want := disks[i].Data
				if m := mems[st.Device.ID]; m != nil && !bytes.Equal(m.b, want) {
					t.Errorf("%s: restored content differs", st.Device.Name)
				}
				if sum := sha256.Sum256(want); !bytes.Equal(st.SHA256, sum[:]) {
					t.Errorf("%s: digest %x, want %x", st.Device.Name, st.SHA256, sum)
				}
				if st.Stored+st.Zero != st.Device.Size {
					t.Errorf("%s: stored %d + zero %d != size %d", st.Device.Name, st.Stored, st.Zero, st.Device.Size)
				}
				if zeros := countZeroBlocks(want); st.Zero < zeros {
					t.Errorf("%s: %d zero bytes reported, the data has at least %d", st.Device.Name, st.Zero, zeros)
				}
			}
			if n := mems[3].writes.Load(); n != 0 {
				t.Errorf("an all-zero disk got %d writes", n)
			}
		})
	}
}

// countZeroBlocks counts the bytes in all-zero 4 KiB blocks.
func countZeroBlocks(b []byte) int64 {
	n := int64(0)
	for off := 0; off < len(b); off += vma.BlockSize {
		blk := b[off:min(off+vma.BlockSize, len(b))]
		if zero.IsZero(blk) {
			n += int64(len(blk))
		}
	}
	return n
}

// TestUnpackCoalesces: a disk without zero blocks, stored in order, is
// written with one WriteAt per extent, not one per block or cluster.
func TestUnpackCoalesces(t *testing.T) {
	const size = 10 << 20
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "d", Data: testutil.GenDisk(5, size, "data")}}, nil, "seq", 0)
	for _, workers := range []int{1, 3} {
		rd, _ := vma.NewReader(bytes.NewReader(raw))
		m := &memDisk{b: make([]byte, size)}
		res, err := vma.Unpack(context.Background(), rd, map[int]io.WriterAt{1: m}, vma.UnpackOptions{Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		if n := m.writes.Load(); n != res.Extents {
			t.Errorf("%d workers: %d writes for %d extents", workers, n, res.Extents)
		}
	}
}

func TestUnpackReorderBound(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "d", Data: testutil.GenDisk(6, 4<<20, "data")}}, nil, "shuffle", 1)
	rd, _ := vma.NewReader(bytes.NewReader(raw))
	_, err := vma.Unpack(context.Background(), rd, nil, vma.UnpackOptions{Digest: true, MaxReorder: 1 << 20})
	if !errors.Is(err, format.ErrReorder) {
		t.Fatalf("got %v, want ErrReorder", err)
	}
	rd, _ = vma.NewReader(bytes.NewReader(raw))
	_, err = vma.Unpack(context.Background(), rd, nil, vma.UnpackOptions{Streams: map[int]io.Writer{1: io.Discard}, MaxReorder: 1 << 20})
	if !errors.Is(err, format.ErrReorder) {
		t.Fatalf("stream: got %v, want ErrReorder", err)
	}
	// Within the bound, a shuffled archive streams in order.
	rd, _ = vma.NewReader(bytes.NewReader(raw))
	var out bytes.Buffer
	if _, err := vma.Unpack(context.Background(), rd, nil, vma.UnpackOptions{Streams: map[int]io.Writer{1: &out}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), testutil.GenDisk(6, 4<<20, "data")) {
		t.Error("streamed content differs")
	}
}

func TestUnpackErrors(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "d", Data: testutil.GenDisk(7, 8<<20, "data")}}, nil, "seq", 0)
	t.Run("truncated", func(t *testing.T) {
		rd, _ := vma.NewReader(bytes.NewReader(raw[:len(raw)/2]))
		_, err := vma.Unpack(context.Background(), rd, nil, vma.UnpackOptions{})
		if !errors.Is(err, vma.ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("write error %d workers", workers), func(t *testing.T) {
			rd, _ := vma.NewReader(bytes.NewReader(raw))
			_, err := vma.Unpack(context.Background(), rd, map[int]io.WriterAt{1: &memDisk{b: make([]byte, 1<<20)}}, vma.UnpackOptions{Workers: workers})
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte("writing d at byte")) {
				t.Fatalf("got %v", err)
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rd, _ := vma.NewReader(bytes.NewReader(raw))
		if _, err := vma.Unpack(ctx, rd, nil, vma.UnpackOptions{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestUnpackDiskWriter: a format.DiskWriter target gets every byte of its
// device exactly once, zero blocks as ZeroAt (so a target holding old data
// ends up equal to the device), with any worker count and cluster order.
func TestUnpackDiskWriter(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(11, 3158528, "mixed")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(12, 540672+1000, "mixed")},
	}
	for _, order := range []string{"seq", "shuffle"} {
		for _, workers := range []int{1, 4} {
			raw := testutil.WriteArchive(t, disks, nil, order, 5)
			rd, err := vma.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			targets := map[int]io.WriterAt{}
			zds := map[int]*zeroDisk{}
			for _, d := range rd.Header().Devices {
				zds[d.ID] = newZeroDisk(d.Size)
				targets[d.ID] = freeDisk{zds[d.ID]}
			}
			if _, err := vma.Unpack(context.Background(), rd, targets, vma.UnpackOptions{Workers: workers}); err != nil {
				t.Fatal(err)
			}
			for i, d := range rd.Header().Devices {
				z := zds[d.ID]
				if !bytes.Equal(z.b, disks[i].Data) {
					t.Errorf("%s %d workers: %s differs", order, workers, d.Name)
				}
				if n := z.data.Load() + z.zeros.Load(); n != d.Size {
					t.Errorf("%s %d workers: %s: %d bytes delivered of %d", order, workers, d.Name, n, d.Size)
				}
			}
		}
	}
}

// TestUnpackOrderDependent: an order-dependent DiskWriter (an archive, a
// qcow2 image) gets a shuffled archive's clusters in ascending order when
// they fit the reorder bound, and every byte exactly once, correctly,
// when they do not.
func TestUnpackOrderDependent(t *testing.T) {
	data := testutil.GenDisk(21, 6<<20, "mixed")
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "d", Data: data}}, nil, "shuffle", 2)
	for _, c := range []struct {
		max     int64
		inOrder bool
	}{{64 << 20, true}, {1 << 20, false}} {
		rd, err := vma.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		od := &orderedDisk{zeroDisk: newZeroDisk(int64(len(data)))}
		if _, err := vma.Unpack(context.Background(), rd, map[int]io.WriterAt{1: od}, vma.UnpackOptions{MaxReorder: c.max, Workers: 4}); err != nil {
			t.Fatalf("bound %d: %v", c.max, err)
		}
		if !bytes.Equal(od.b, data) {
			t.Errorf("bound %d: content differs", c.max)
		}
		if n := od.data.Load() + od.zeros.Load(); n != int64(len(data)) {
			t.Errorf("bound %d: %d bytes delivered of %d", c.max, n, len(data))
		}
		if od.bad == c.inOrder {
			t.Errorf("bound %d: written in ascending order: %v, want %v", c.max, !od.bad, c.inOrder)
		}
	}
}

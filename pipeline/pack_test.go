package pipeline_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
	"github.com/vmaconv/vmaconv/pipeline"
)

// memSource is a Source over a byte slice; wrapped in holeySource it also
// reports all-zero 64 KiB clusters as zero regions.
type memSource struct {
	b     []byte
	reads atomic.Int64 // bytes read
}

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	m.reads.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memSource) Size() int64  { return int64(len(m.b)) }
func (m *memSource) Close() error { return nil }

type holeySource struct{ *memSource }

func (h holeySource) Region(start, length int64) (format.Region, error) {
	end := min(start+length, int64(len(h.b)))
	isZero := zero.IsZero(h.b[start:min((start/vma.ClusterSize+1)*vma.ClusterSize, end)])
	pos := start
	for pos < end {
		next := min((pos/vma.ClusterSize+1)*vma.ClusterSize, end)
		if zero.IsZero(h.b[pos:next]) != isZero {
			break
		}
		pos = next
	}
	return format.Region{Start: start, Length: pos - start, Zero: isZero}, nil
}

// pack writes the sources as an archive through the VMA sink, one after
// the other, with pipeline.Copy.
func pack(t *testing.T, srcs []format.Source, o pipeline.Options) []byte {
	t.Helper()
	var out bytes.Buffer
	var devs []format.Device
	for i, s := range srcs {
		devs = append(devs, format.Device{Name: "drive-scsi" + string(rune('0'+i)), Size: s.Size()})
	}
	sink, err := vma.Create(format.Dest{Path: "-", Stream: &out}, devs, format.CreateOptions{Options: testutil.ArchiveOptions(testutil.TestUUID, testutil.TestCTime)})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range srcs {
		if err := pipeline.Copy(context.Background(), sink.Disk(i), s, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestPackWorkers: any worker count and chunk size give the same bytes,
// and the archive restores to the sources.
func TestPackWorkers(t *testing.T) {
	d1 := testutil.GenDisk(1, 5<<20+12345, "mixed")
	d2 := testutil.GenDisk(2, 700000, "data")
	want := pack(t, []format.Source{&memSource{b: d1}, &memSource{b: d2}}, pipeline.Options{Workers: 1})
	for _, o := range []pipeline.Options{
		{Workers: 2}, {Workers: 8}, {Workers: 3, ChunkSize: 64 << 10}, {Workers: 8, ChunkSize: 4 << 20},
	} {
		got := pack(t, []format.Source{holeySource{&memSource{b: d1}}, &memSource{b: d2}}, o)
		if !bytes.Equal(got, want) {
			t.Errorf("%+v: archive differs from the Workers=1 one", o)
		}
	}
	rd, err := vma.NewReader(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	devs := rd.Header().Devices
	if devs[0].Size != int64(len(d1)) || devs[1].Size != int64(len(d2)) {
		t.Errorf("device sizes %d, %d for disks of %d, %d bytes", devs[0].Size, devs[1].Size, len(d1), len(d2))
	}
	m1, m2 := &memDisk{b: make([]byte, devs[0].Size)}, &memDisk{b: make([]byte, devs[1].Size)}
	if _, err := vma.Unpack(context.Background(), rd, map[int]io.WriterAt{1: m1, 2: m2}, vma.UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m1.b[:len(d1)], d1) || !testutil.AllZero(m1.b[len(d1):]) || !bytes.Equal(m2.b[:len(d2)], d2) || !testutil.AllZero(m2.b[len(d2):]) {
		t.Error("restored disks differ")
	}
}

// TestPackSkipsHoles: zero ranges a source reports are never read.
func TestPackSkipsHoles(t *testing.T) {
	b := make([]byte, 64<<20)
	copy(b[10<<20:], bytes.Repeat([]byte{7}, 100000))
	src := &memSource{b: b}
	pack(t, []format.Source{holeySource{src}}, pipeline.Options{Workers: 1})
	if n := src.reads.Load(); n > 2<<20 {
		t.Errorf("read %d bytes of a 64 MiB disk holding 100 kB", n)
	}
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

// TestCopyAndHash: Copy delivers every byte exactly once (data or zero
// range), in ascending order to an order-dependent sink and in any order
// to an order-independent one, for any worker count; Hash agrees.
func TestCopyAndHash(t *testing.T) {
	data := testutil.GenDisk(3, 3<<20+777, "mixed")
	for _, w := range []int{1, 4} {
		for _, free := range []bool{false, true} {
			zd := newZeroDisk(int64(len(data)))
			var dst format.DiskWriter = &orderedDisk{zeroDisk: zd}
			if free {
				dst = freeDisk{zd}
			}
			if err := pipeline.Copy(context.Background(), dst, holeySource{&memSource{b: data}}, pipeline.Options{Workers: w, ChunkSize: 128 << 10}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(zd.b, data) {
				t.Errorf("workers %d, order-independent %v: copy differs", w, free)
			}
			if got := zd.data.Load() + zd.zeros.Load(); got != int64(len(data)) || zd.zeros.Load() == 0 {
				t.Errorf("workers %d: %d data + %d zero bytes delivered for %d", w, zd.data.Load(), zd.zeros.Load(), len(data))
			}
			if od, ok := dst.(*orderedDisk); ok && od.bad {
				t.Errorf("workers %d: an order-dependent sink was written out of order", w)
			}
		}
		sum, err := pipeline.Hash(context.Background(), holeySource{&memSource{b: data}}, pipeline.Options{Workers: w})
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(data); !bytes.Equal(sum, want[:]) {
			t.Errorf("workers %d: hash differs", w)
		}
	}
}

type failSource struct{ memSource }

func (f *failSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= 2<<20 {
		return 0, errors.New("input/output error")
	}
	return f.memSource.ReadAt(p, off)
}

func TestScanErrors(t *testing.T) {
	src := &failSource{memSource{b: make([]byte, 8<<20)}}
	err := pipeline.Scan(context.Background(), src, pipeline.Options{Workers: 4}, func(int64, int64, []byte) error { return nil })
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("input/output error")) {
		t.Fatalf("read error: got %v", err)
	}
	stop := errors.New("stop")
	err = pipeline.Scan(context.Background(), &memSource{b: make([]byte, 8<<20)}, pipeline.Options{Workers: 4}, func(off, _ int64, _ []byte) error {
		if off >= 3<<20 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("callback error: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = pipeline.Scan(ctx, &memSource{b: make([]byte, 8<<20)}, pipeline.Options{Workers: 2}, func(off, _ int64, _ []byte) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: got %v", err)
	}
	if err := (&pipeline.Options{Workers: 1, ChunkSize: 1000}).Validate(); err == nil {
		t.Error("chunk size 1000 accepted")
	}
}

// TestRawSparse: a sparse raw file's holes are reported and not read.
func TestRawSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 30)
	f.WriteAt(bytes.Repeat([]byte{1}, 8192), 512<<20)
	f.Close()
	f, _ = os.Open(path)
	src, err := raw.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	e, err := src.Region(0, src.Size())
	if err != nil {
		t.Fatal(err)
	}
	if !e.Zero || e.Length < 256<<20 {
		// Only a file system that cannot report holes excuses this: ask it
		// directly.
		g, _ := os.Open(path)
		data, serr := g.Seek(0, 3) // SEEK_DATA
		g.Close()
		if serr != nil || data == 0 {
			msg := fmt.Sprintf("the file system of %s does not report holes (SEEK_DATA: %d, %v): run the tests on one that does (ext4, xfs, btrfs, tmpfs)", path, data, serr)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + "; under CI=true a test that cannot run fails")
			}
			t.Skip(msg)
		}
		t.Fatalf("the file system reports a hole up to %d, but the raw source's first extent is %+v", data, e)
	}
	sum, err := pipeline.Hash(context.Background(), src, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	zeros := make([]byte, 1<<20) // not 512 MiB at once: costly under -race
	writeZeros := func(n int) {
		for ; n > 0; n -= len(zeros) {
			want.Write(zeros[:min(n, len(zeros))])
		}
	}
	writeZeros(512 << 20)
	want.Write(bytes.Repeat([]byte{1}, 8192))
	writeZeros(512<<20 - 8192)
	if !bytes.Equal(sum, want.Sum(nil)) {
		t.Error("hash of the sparse file differs")
	}
}

// sparseSource is a huge source holding a few data ranges, with an exact
// map; it counts the map queries it answers.
type sparseSource struct {
	size    int64
	data    map[int64][]byte // at offsets that are multiples of 64 KiB
	queries atomic.Int64
}

func (s *sparseSource) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for at, d := range s.data {
		if lo, hi := max(at, off), min(at+int64(len(d)), off+int64(len(p))); lo < hi {
			copy(p[lo-off:hi-off], d[lo-at:hi-at])
		}
	}
	return len(p), nil
}

func (s *sparseSource) Region(start, length int64) (format.Region, error) {
	s.queries.Add(1)
	end := min(start+length, s.size)
	next := end
	for at, d := range s.data {
		if start >= at && start < at+int64(len(d)) {
			return format.Region{Start: start, Length: min(at+int64(len(d)), end) - start}, nil
		}
		if at > start {
			next = min(next, at)
		}
	}
	return format.Region{Start: start, Length: next - start, Zero: true}, nil
}

func (s *sparseSource) Size() int64  { return s.size }
func (s *sparseSource) Close() error { return nil }

// coverDisk records the ranges a Copy delivers, without storing zeros.
type coverDisk struct {
	mu     sync.Mutex
	ranges [][2]int64
	calls  int
	data   map[int64][]byte
}

func (c *coverDisk) add(off, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ranges = append(c.ranges, [2]int64{off, off + n})
	c.calls++
}

func (c *coverDisk) WriteAt(p []byte, off int64) (int, error) {
	c.add(off, int64(len(p)))
	c.mu.Lock()
	c.data[off] = bytes.Clone(p)
	c.mu.Unlock()
	return len(p), nil
}

func (c *coverDisk) ZeroAt(off, n int64) error { c.add(off, n); return nil }

// TestScanZeroRuns: a source's zero runs cost one call each, however large
// (a 1 TiB disk holding 3 MiB is a handful of calls, not a million
// chunks), every byte is still delivered exactly once, and the data comes
// through intact, for ordered and parallel sinks.
func TestScanZeroRuns(t *testing.T) {
	const size = 1<<40 + 3<<16 // not a whole number of chunks
	for _, w := range []int{1, 4} {
		src := &sparseSource{size: size, data: map[int64][]byte{
			0:                bytes.Repeat([]byte{1}, 100),
			700 << 30:        testutil.GenDisk(5, 2<<20+4096, "data"),
			size - 3<<16 - 5: {9, 9, 9, 9, 9}, // a data run straddling the last, short chunk
		}}
		dst := &coverDisk{data: map[int64][]byte{}}
		if err := pipeline.Copy(context.Background(), dst, src, pipeline.Options{Workers: w}); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(dst.ranges, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
		var at int64
		for _, r := range dst.ranges {
			if r[0] != at {
				t.Fatalf("workers %d: range at %d, want %d", w, r[0], at)
			}
			at = r[1]
		}
		if at != size {
			t.Fatalf("workers %d: delivered up to %d of %d", w, at, size)
		}
		if dst.calls > 20 || src.queries.Load() > 40 {
			t.Errorf("workers %d: %d deliveries and %d map queries for 3 data runs", w, dst.calls, src.queries.Load())
		}
		for at, d := range src.data {
			chunkAt := at - at%(1<<20)
			got := dst.data[chunkAt]
			if got == nil || !bytes.Equal(got[at-chunkAt:min(at-chunkAt+int64(len(d)), int64(len(got)))], d[:min(int64(len(d)), int64(len(got))-(at-chunkAt))]) {
				t.Errorf("workers %d: data at %d not delivered intact", w, at)
			}
		}
	}
}

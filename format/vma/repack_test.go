package vma_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// onlyReader hides every method but Read: a pipe.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// repackMode is how Repack reads an archive.
type repackMode struct {
	name    string
	file    bool // random access: headers walked, data read by Workers readers
	seek    bool // a stream that can seek
	workers int
}

var repackModes = []repackMode{
	{name: "stream"}, {name: "file -m 1", file: true, workers: 1}, {name: "file -m 4", file: true, workers: 4},
}

// A stream that can seek skips the data of devices left out.
var seekableStream = repackMode{name: "seekable stream", seek: true}

// repack writes the devices ids of the archive raw, read as m says, to a
// new archive with raw's UUID, ctime and configs.
func repack(t *testing.T, raw []byte, m repackMode, ids []int, data io.ReaderAt) ([]byte, error) {
	t.Helper()
	var src io.Reader = onlyReader{bytes.NewReader(raw)}
	var o vma.RepackOptions
	switch {
	case m.file:
		src = io.NewSectionReader(bytes.NewReader(raw), 0, int64(len(raw)))
		o = vma.RepackOptions{Data: bytes.NewReader(raw), Workers: m.workers}
		if data != nil {
			o.Data = data
		}
	case m.seek:
		src = bytes.NewReader(raw)
	}
	r, err := vma.NewReader(src)
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	var devs []format.Device
	for _, id := range ids {
		for _, d := range h.Devices {
			if d.ID == id {
				devs = append(devs, format.Device{Name: d.Name, Size: d.Size})
			}
		}
	}
	var configs []format.Config
	for _, c := range h.Configs {
		configs = append(configs, format.Config{Name: c.Name, Data: c.Data})
	}
	var out bytes.Buffer
	sink, err := vma.Create(format.Dest{Path: "-", Stream: &out}, devs, format.CreateOptions{Configs: configs, Options: testutil.ArchiveOptions(h.UUID, h.CTime)})
	if err != nil {
		t.Fatal(err)
	}
	if err := vma.Repack(context.Background(), r, sink, ids, o); err != nil {
		sink.Abort()
		return nil, err
	}
	err = sink.Commit()
	return out.Bytes(), err
}

func allIDs(t *testing.T, raw []byte) []int {
	t.Helper()
	r, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, d := range r.Header().Devices {
		ids = append(ids, d.ID)
	}
	return ids
}

// repackDisks fill two extents, one of which they share.
var repackDisks = []testutil.Disk{
	{Name: "drive-scsi0", Data: testutil.GenDisk(1, 2<<20+4096, "mixed")},
	{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 540672, "data")},
	{Name: "drive-tpmstate0-backup", Data: testutil.GenDisk(3, 2<<20, "zero")},
}

// TestRepackKeepsArchives: an archive repacked whole comes back byte for
// byte, read as a stream or as a file with any number of readers,
// whatever its order: devices interleaved as Proxmox interleaves them,
// clusters locally out of order, shuffled, a vmstate stream among them,
// no devices.
func TestRepackKeepsArchives(t *testing.T) {
	conf := []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}
	archives := map[string][]byte{
		"vmstate": testutil.WriteArchive(t, []testutil.Disk{repackDisks[1], {Name: vma.VMStateName, Data: testutil.GenDisk(4, 200000, "mixed")}}, nil, "interleave", 0),
		"none":    testutil.WriteArchive(t, nil, conf, "seq", 0),
	}
	for _, order := range []string{"interleave", "runs", "local", "shuffle"} {
		archives[order] = testutil.WriteArchive(t, repackDisks, conf, order, 3)
	}
	for name, raw := range archives {
		for _, m := range repackModes {
			got, err := repack(t, raw, m, allIDs(t, raw), nil)
			if err != nil {
				t.Fatalf("%s, %s: %v", name, m.name, err)
			}
			if !bytes.Equal(got, raw) {
				t.Errorf("%s, %s: the repacked archive differs from the original", name, m.name)
			}
		}
	}
}

// repackForeignArchive is an archive another writer could have written: 59
// clusters in an extent, an all-zero block stored, a device's last
// cluster stored whole with junk past its end (as Proxmox did before
// 2020), and the clusters of two devices mixed.
func repackForeignArchive(t *testing.T) []byte {
	t.Helper()
	const size = 60*vma.ClusterSize - 60000
	var out bytes.Buffer
	w := vma.NewWriter(&out, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
	w.AddDevice("drive-scsi0", size)
	w.AddDevice("drive-scsi1", vma.ClusterSize)
	for c := range int64(60) {
		w.WriteCluster(1, c, nil)
	}
	w.WriteCluster(2, 0, nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := vma.NewReader(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	raw := bytes.Clone(out.Bytes()[:r.Header().Size])
	slots := []uint64{testutil.Slot(0x0021, 1, 0)}
	for c := range uint32(57) {
		slots = append(slots, testutil.Slot(0x0001, 1, c+1))
	}
	e1 := testutil.Extent(testutil.TestUUID, append(slots, testutil.Slot(0x0f0f, 2, 0))...)
	clear(e1[512+vma.BlockSize : 512+2*vma.BlockSize]) // cluster 0's block 5
	e2 := testutil.Extent(testutil.TestUUID, testutil.Slot(0xffff, 1, 59), testutil.Slot(0, 1, 58))
	return append(append(raw, e1...), e2...)
}

// TestRepackForeign: an archive of another writer repacks to the same
// bytes however it is read, with its extents kept (59 clusters in one)
// and its blocks stored as vma.Writer stores them.
func TestRepackForeign(t *testing.T) {
	raw := repackForeignArchive(t)
	var want []byte
	for _, m := range repackModes {
		got, err := repack(t, raw, m, []int{1, 2}, nil)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if want == nil {
			want = got
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: differs from the %s repack", m.name, repackModes[0].name)
		}
	}
	if bytes.Equal(want, raw) {
		t.Fatal("the foreign archive came back as it was: its zero block and junk were stored again")
	}
	r, err := vma.NewReader(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		e, err := r.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(e.Clusters))
	}
	if fmt.Sprint(sizes) != "[59 2]" {
		t.Errorf("extents of %v clusters, want the source's [59 2]", sizes)
	}
}

// TestRepackOneDevice: a device repacked alone gets its clusters in the
// archive's order, 58 to an extent as vma.Writer groups them, however the
// archive is read.
func TestRepackOneDevice(t *testing.T) {
	for _, order := range []string{"runs", "shuffle"} {
		raw := testutil.WriteArchive(t, repackDisks, nil, order, 7)
		// What it must be: the device's clusters in archive order, written
		// one by one.
		r, _ := vma.NewReader(bytes.NewReader(raw))
		var ref bytes.Buffer
		w := vma.NewWriter(&ref, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
		w.AddDevice(repackDisks[0].Name, int64(len(repackDisks[0].Data)))
		buf := make([]byte, vma.ClusterSize)
		for {
			c, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Device.ID == 1 {
				c.Expand(buf)
				w.WriteCluster(1, c.Index, buf)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		for _, m := range append(repackModes, seekableStream) {
			got, err := repack(t, raw, m, []int{1}, nil)
			if err != nil {
				t.Fatalf("%s, %s: %v", order, m.name, err)
			}
			if !bytes.Equal(got, ref.Bytes()) {
				t.Errorf("%s, %s: not the device's clusters in the archive's order", order, m.name)
			}
		}
	}
}

// setSize patches the size of device id in an archive's header.
func setSize(t *testing.T, raw []byte, id int, size int64) []byte {
	t.Helper()
	out := bytes.Clone(raw)
	hs := int(binary.BigEndian.Uint32(out[56:]))
	binary.BigEndian.PutUint64(out[4096+32*id+8:], uint64(size))
	testutil.FixHeaderMD5(out[:hs])
	return out
}

// TestRepackVMState: a vmstate stream keeps what lies within its size: an
// unstored tail is written as zeros, stored clusters past its size are
// dropped; the same however the archive is read.
func TestRepackVMState(t *testing.T) {
	state := testutil.GenDisk(4, 3*vma.ClusterSize+777, "data")
	raw := testutil.WriteArchive(t, []testutil.Disk{repackDisks[1], {Name: vma.VMStateName, Data: state}}, nil, "interleave", 0)
	for _, c := range []struct {
		size int64
		want []byte
	}{
		{6*vma.ClusterSize + 5, append(bytes.Clone(state), make([]byte, 6*vma.ClusterSize+5-len(state))...)},
		{2*vma.ClusterSize - 3, state[:2*vma.ClusterSize-3]},
	} {
		src := setSize(t, raw, 2, c.size)
		for _, m := range repackModes {
			got, err := repack(t, src, m, []int{1, 2}, nil)
			if err != nil {
				t.Fatalf("vmstate of %d bytes, %s: %v", c.size, m.name, err)
			}
			vm := &memDisk{b: make([]byte, c.size)}
			rd, err := vma.NewReader(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := vma.Unpack(context.Background(), rd, map[int]io.WriterAt{2: vm}, vma.UnpackOptions{}); err != nil {
				t.Fatalf("vmstate of %d bytes, %s: the repack does not read back: %v", c.size, m.name, err)
			}
			if !bytes.Equal(vm.b, c.want) {
				t.Errorf("vmstate of %d bytes, %s: content differs", c.size, m.name)
			}
		}
	}
}

// failAt is an io.ReaderAt whose reads at or past off fail.
type failAt struct {
	r   io.ReaderAt
	off int64
}

func (f failAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.off {
		return 0, errors.New("input/output error")
	}
	return f.r.ReadAt(p, off)
}

// fullWriter fails every write after the first n bytes.
type fullWriter struct{ n int }

func (f *fullWriter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errors.New("no space left on device")
	}
	f.n -= len(p)
	return len(p), nil
}

// TestRepackErrors: a read error, a damaged or cut archive, a failing
// output, a cancelled context and wrong ids end Repack with an error that
// says what and where, without hanging.
func TestRepackErrors(t *testing.T) {
	raw := testutil.WriteArchive(t, repackDisks, nil, "runs", 1)
	for _, m := range repackModes[1:] {
		_, err := repack(t, raw, m, []int{1, 2, 3}, failAt{bytes.NewReader(raw), int64(len(raw) / 2)})
		if err == nil || !strings.Contains(err.Error(), "input/output error") || !strings.Contains(err.Error(), "extent at byte offset") {
			t.Errorf("%s, a read error: %v", m.name, err)
		}
	}
	cut := raw[:len(raw)-vma.BlockSize]
	flipped := bytes.Clone(raw)
	flipped[len(raw)/2/512*512+600]++ // somewhere in an extent: its data or its header
	for _, m := range repackModes {
		if _, err := repack(t, cut, m, []int{1, 2, 3}, nil); !errors.Is(err, vma.ErrCorrupt) {
			t.Errorf("%s, a cut archive: %v", m.name, err)
		}
		if _, err := repack(t, raw[:len(raw)/2/512*512], m, []int{1, 2, 3}, nil); err == nil {
			t.Errorf("%s, half an archive: no error", m.name)
		}
		if _, err := repack(t, raw, m, []int{1, 9}, nil); err == nil || !strings.Contains(err.Error(), "no device with id 9") {
			t.Errorf("%s, an unknown id: %v", m.name, err)
		}
	}
	// The output fails.
	r, _ := vma.NewReader(bytes.NewReader(raw))
	var devs []format.Device
	for _, d := range repackDisks {
		devs = append(devs, format.Device{Name: d.Name, Size: int64(len(d.Data))})
	}
	sink, err := vma.Create(format.Dest{Path: "-", Stream: &fullWriter{n: 1 << 20}}, devs, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = vma.Repack(context.Background(), r, sink, []int{1, 2, 3}, vma.RepackOptions{Data: bytes.NewReader(raw), Workers: 2})
	if err == nil {
		err = sink.Commit()
	}
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("a failing output: %v", err)
	}
	// Cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ = vma.NewReader(io.NewSectionReader(bytes.NewReader(raw), 0, int64(len(raw))))
	sink, _ = vma.Create(format.Dest{Path: "-", Stream: io.Discard}, devs, format.CreateOptions{})
	if err := vma.Repack(ctx, r, sink, []int{1, 2, 3}, vma.RepackOptions{Data: bytes.NewReader(raw)}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// barrierReader blocks its first ReadAt until a second one runs at the
// same time (parallel readers), or until a deadline; it records the most
// reads it saw at once.
type barrierReader struct {
	r        io.ReaderAt
	mu       sync.Mutex
	calls    int
	active   int
	peak     int
	second   chan struct{}
	once     sync.Once
	timedOut atomic.Bool
}

func (b *barrierReader) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.calls++
	b.active++
	b.peak = max(b.peak, b.active)
	first := b.calls == 1
	if b.active >= 2 {
		b.once.Do(func() { close(b.second) })
	}
	b.mu.Unlock()
	if first {
		select {
		case <-b.second:
		case <-time.After(10 * time.Second):
			b.timedOut.Store(true)
		}
	} else {
		time.Sleep(time.Millisecond) // let reads pile up, up to the bound
	}
	b.mu.Lock()
	b.active--
	b.mu.Unlock()
	return b.r.ReadAt(p, off)
}

// TestRepackParallelReads: from a file, extents' data is read by parallel
// readers, never more at once than the memory bound allows, however many
// are asked for.
func TestRepackParallelReads(t *testing.T) {
	// 40 extents of one stored block each.
	var out bytes.Buffer
	w := vma.NewWriter(&out, vma.WithUUID(testutil.TestUUID), vma.WithCTime(testutil.TestCTime))
	w.AddDevice("drive-scsi0", 40*vma.ClusterSize)
	block := bytes.Repeat([]byte{5}, vma.BlockSize)
	for c := range int64(40) {
		if err := w.WriteExtent([]vma.Cluster{{Device: vma.Device{ID: 1}, Index: c, Mask: 1, Data: block}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw := out.Bytes()
	bound := vma.MaxInFlight / (vma.SlotsPerExtent * vma.ClusterSize)
	for _, workers := range []int{2, 1000} {
		br := &barrierReader{r: bytes.NewReader(raw), second: make(chan struct{})}
		got, err := repack(t, raw, repackMode{name: "file", file: true, workers: workers}, []int{1}, br)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) {
			t.Errorf("-m %d: the repack differs", workers)
		}
		if br.timedOut.Load() {
			t.Errorf("-m %d: no two reads at once in 10 s", workers)
		}
		if br.peak > bound {
			t.Errorf("-m %d: %d reads at once; the memory bound allows %d", workers, br.peak, bound)
		}
	}
}

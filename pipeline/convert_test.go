package pipeline_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// fakeInput is a pipeline.Input: disks read at random (img) or a stream.
type fakeInput struct {
	name string
	devs []format.Device
	img  format.Image
	st   format.Stream
	size int64
}

func (f *fakeInput) Name() string             { return f.name }
func (f *fakeInput) DiskName(i int) string    { return fmt.Sprintf("%s:%d", f.name, i) }
func (f *fakeInput) Devices() []format.Device { return f.devs }
func (f *fakeInput) Image() format.Image      { return f.img }
func (f *fakeInput) Stream() format.Stream    { return f.st }
func (f *fakeInput) Size() int64              { return f.size }

// Consumed is the stream's count, as input.Input gives it for a plain
// archive.
func (f *fakeInput) Consumed() int64 { return f.st.(format.Consumed).Consumed() }

// image returns an input read at random of one disk, data, presented as
// size bytes.
func image(name string, data []byte, size int64) *fakeInput {
	return &fakeInput{name: name, devs: []format.Device{{Size: size}}, img: format.SingleDisk(&memSource{b: data}), size: int64(len(data))}
}

// stream returns the archive of disks read as a stream.
func stream(t *testing.T, disks []testutil.Disk) *fakeInput {
	t.Helper()
	raw := testutil.WriteArchive(t, disks, nil, "interleave", 0)
	st, err := vma.OpenStream(bytes.NewReader(raw), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeInput{name: "vm.vma", devs: st.Devices(), st: st, size: int64(len(raw))}
}

// sink is a format.Sink of in-memory disks; disk i is Sequential when seq
// says so.
type sink struct {
	disks []format.DiskWriter
}

func newSink(sizes []int64, seq []bool) (*sink, []*zeroDisk, []*bytes.Buffer) {
	s := &sink{}
	var zds []*zeroDisk
	var bufs []*bytes.Buffer
	for i, n := range sizes {
		zd := newZeroDisk(n)
		b := &bytes.Buffer{}
		zds, bufs = append(zds, zd), append(bufs, b)
		if i < len(seq) && seq[i] {
			s.disks = append(s.disks, &seqDisk{b: b})
		} else {
			s.disks = append(s.disks, freeDisk{zd})
		}
	}
	return s, zds, bufs
}

func (s *sink) Disk(i int) format.DiskWriter { return s.disks[i] }
func (s *sink) Commit() error                { return nil }
func (s *sink) Abort() error                 { return nil }

// seqDisk is a Sequential disk writer into a buffer: every write must
// start where the last ended.
type seqDisk struct{ b *bytes.Buffer }

func (d *seqDisk) WriteAt(p []byte, off int64) (int, error) {
	if off != int64(d.b.Len()) {
		return 0, fmt.Errorf("write at %d after %d bytes", off, d.b.Len())
	}
	return d.b.Write(p)
}
func (d *seqDisk) ZeroAt(off, n int64) error {
	_, err := d.WriteAt(make([]byte, n), off)
	return err
}
func (d *seqDisk) Sequential() {}

// progress records what Progress is told.
type progress struct {
	mu          sync.Mutex
	calls       int
	done, total int64
	back        bool // done went backwards
}

func (p *progress) report(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls > 0 && (done < p.done || total != p.total) {
		p.back = true
	}
	p.calls++
	p.done, p.total = done, total
}

// TestConvertImages: disks read at random go to the sink's disks in order,
// as many inputs as given (create), padded as the inputs present them,
// progress counting the disks' bytes across inputs; Checksum agrees.
func TestConvertImages(t *testing.T) {
	a, b := testutil.GenDisk(5, 1<<20+100, "mixed"), testutil.GenDisk(6, 300000, "data")
	ia, ib := image("a.raw", a, 1<<20+512), image("b.raw", b, 300032)
	s, zds, _ := newSink([]int64{1<<20 + 512, 300032}, nil)
	var p progress
	if err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: ia, Disks: []int{0}}, {Input: ib, Disks: []int{0}}},
		pipeline.ConvertOptions{Workers: 2, Progress: p.report}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(zds[0].b[:len(a)], a) || !testutil.AllZero(zds[0].b[len(a):]) || !bytes.Equal(zds[1].b[:len(b)], b) || !testutil.AllZero(zds[1].b[len(b):]) {
		t.Error("disks differ")
	}
	if total := int64(1<<20 + 512 + 300032); p.done != total || p.total != total || p.back {
		t.Errorf("progress %d of %d (backwards %v), want %d of it", p.done, p.total, p.back, total)
	}
	sums, err := pipeline.Checksum(context.Background(), ia, []int{0}, pipeline.ConvertOptions{})
	if want := sha256.Sum256(zds[0].b); err != nil || !bytes.Equal(sums[0], want[:]) {
		t.Errorf("checksum %x (%v), want %x", sums, err, want)
	}
	// A failure names the disk.
	bad := &fakeInput{name: "bad.raw", devs: []format.Device{{Size: 3 << 20}}, img: format.SingleDisk(&failSource{memSource{b: make([]byte, 3<<20)}})}
	s, _, _ = newSink([]int64{3 << 20}, nil)
	if err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: bad, Disks: []int{0}}}, pipeline.ConvertOptions{}); err == nil || !strings.HasPrefix(err.Error(), "bad.raw:0: ") {
		t.Errorf("read error: %v", err)
	}
}

// TestConvertStream: a stream's selected disks go to the sink in one
// pass, at their offsets or, to a Sequential writer, in order; progress
// counts the stream's bytes; Checksum gives every selected disk's sum.
func TestConvertStream(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(7, 1<<20+4096, "mixed")},
		{Name: "drive-scsi1", Data: testutil.GenDisk(8, 700000, "data")},
		{Name: "drive-scsi2", Data: testutil.GenDisk(9, 200000, "data")},
	}
	in := stream(t, disks)
	s, zds, bufs := newSink([]int64{int64(len(disks[2].Data)), int64(len(disks[0].Data))}, []bool{false, true})
	var p progress
	if err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: in, Disks: []int{2, 0}}}, pipeline.ConvertOptions{Progress: p.report}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(zds[0].b, disks[2].Data) || !bytes.Equal(bufs[1].Bytes(), disks[0].Data) {
		t.Error("disks differ")
	}
	if p.done != in.size || p.total != in.size || p.back {
		t.Errorf("progress %d of %d (backwards %v), want the archive's %d", p.done, p.total, p.back, in.size)
	}
	sums, err := pipeline.Checksum(context.Background(), stream(t, disks), []int{1, 0}, pipeline.ConvertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, i := range []int{1, 0} {
		if want := sha256.Sum256(disks[i].Data); !bytes.Equal(sums[k], want[:]) {
			t.Errorf("checksum of disk %d differs", i)
		}
	}
}

// TestConvertRepack: with Repack, an archive is written into an archive
// sink in its own order: read as a stream or at random, the same bytes,
// the archive itself when every disk is kept.
func TestConvertRepack(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(10, 1<<20, "mixed")},
		{Name: "drive-scsi1", Data: testutil.GenDisk(11, 600000, "data")},
	}
	raw := testutil.WriteArchive(t, disks, nil, "interleave", 0)
	st, err := vma.OpenStream(bytes.NewReader(raw), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vm.vma")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := vma.Format.Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, in := range []*fakeInput{
		{name: "stream", devs: st.Devices(), st: st, size: int64(len(raw))},
		{name: "file", devs: st.Devices(), img: img, size: int64(len(raw))},
	} {
		var out bytes.Buffer
		h := vma.ArchiveOf(img).Header()
		s, err := vma.Create(format.Dest{Path: "-", Stream: &out}, in.devs, format.CreateOptions{Options: testutil.ArchiveOptions(h.UUID, h.CTime)})
		if err != nil {
			t.Fatal(err)
		}
		var p progress
		if err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: in, Disks: []int{0, 1}}}, pipeline.ConvertOptions{Repack: true, Workers: 3, Progress: p.report}); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), raw) {
			t.Errorf("%s: repacked archive differs", in.name)
		}
		if p.done != int64(len(raw)) || p.total != int64(len(raw)) {
			t.Errorf("%s: progress %d of %d, want the archive's %d", in.name, p.done, p.total, len(raw))
		}
	}
}

// TestConvertRepackSequential: an archive is not repacked into a sink
// whose disks are Sequential (an OVA's VMDKs): each disk comes in order,
// whole, from a file or a stream, however the archive stores it.
func TestConvertRepackSequential(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(12, 300000, "mixed")},
		{Name: "drive-scsi1", Data: testutil.GenDisk(13, 200000, "data")},
	}
	// Clusters out of order within a device, as copy-before-write stores
	// them: a repack would write them so.
	raw := testutil.WriteArchive(t, disks, nil, "local", 3)
	path := filepath.Join(t.TempDir(), "vm.vma")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := vma.Format.Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	st, err := vma.OpenStream(bytes.NewReader(raw), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*fakeInput{
		{name: "file", devs: st.Devices(), img: img, size: int64(len(raw))},
		{name: "stream", devs: st.Devices(), st: st, size: int64(len(raw))},
	} {
		s, _, bufs := newSink([]int64{300000, 200000}, []bool{true, true})
		if err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: in, Disks: []int{0, 1}}}, pipeline.ConvertOptions{Repack: true, Workers: 3}); err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
		for i, d := range disks {
			if !bytes.Equal(bufs[i].Bytes(), d.Data) {
				t.Errorf("%s: %s differs", in.name, d.Name)
			}
		}
	}
}

// recStream is a stream of three disks that records where Read was asked
// to deliver them, and fails as told.
type recStream struct {
	at, inOrder []bool
	err         error
}

func (r *recStream) Close() error             { return nil }
func (r *recStream) Configs() []format.Config { return nil }
func (r *recStream) Consumed() int64          { return 0 }
func (r *recStream) Devices() []format.Device {
	return []format.Device{{Name: "a", Size: 512}, {Name: "b", Size: 512}, {Name: "c", Size: 512}}
}

func (r *recStream) Read(_ context.Context, o format.StreamOptions) error {
	for i := range 3 {
		r.at = append(r.at, i < len(o.At) && o.At[i] != nil)
		r.inOrder = append(r.inOrder, i < len(o.InOrder) && o.InOrder[i] != nil)
	}
	return r.err
}

// TestConvertStreamTargets: a stream delivers a Sequential writer's disk
// in order, the others at their offsets, and no disk not selected; an
// input too far out of order for a pipe says the way out.
func TestConvertStreamTargets(t *testing.T) {
	st := &recStream{}
	in := &fakeInput{name: "vm.vma", devs: st.Devices(), st: st, size: -1}
	s, _, _ := newSink([]int64{512, 512}, []bool{true, false})
	if err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: in, Disks: []int{2, 0}}}, pipeline.ConvertOptions{}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(st.at, st.inOrder) != "[true false false] [false false true]" {
		t.Errorf("at %v, in order %v; want disk 0 at offsets, disk 2 in order", st.at, st.inOrder)
	}
	st.err = fmt.Errorf("cluster 7: %w", format.ErrReorder)
	err := pipeline.Convert(context.Background(), s, []pipeline.Selection{{Input: in, Disks: []int{2}}}, pipeline.ConvertOptions{})
	if err == nil || err.Error() != "vm.vma: cluster 7: clusters too far out of order; a pipe needs them in order: write a file instead, or read the archive from a file" {
		t.Errorf("reorder: %v", err)
	}
}

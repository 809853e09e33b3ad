//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

const seekData, seekHole = 3, 4

// source is a file's data that fails from byte failAt on, with err
// (io.EOF: the data ends there), or never if failAt is negative.
type source struct {
	data   []byte
	failAt int64
	err    error
}

func (s *source) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), int64(len(s.data)))
	if s.failAt >= 0 && end > s.failAt {
		return copy(p, s.data[off:max(off, s.failAt)]), s.err
	}
	n := copy(p, s.data[off:end])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fileSource is a format.Source of size bytes read from data; with a map
// m (not nil), also a format.ZeroMapper; with stored > 0, also a
// format.Stored.
func fileSource(size int64, data io.ReaderAt, m format.ZeroMapper, stored int64) format.Source {
	s := plainSource{data, size}
	switch {
	case m == nil && stored <= 0:
		return s
	case m == nil:
		return storedSource{s, stored}
	case stored <= 0:
		return mappedSource{s, m}
	}
	return mappedStoredSource{mappedSource{s, m}, stored}
}

type plainSource struct {
	io.ReaderAt
	size int64
}

func (s plainSource) Size() int64  { return s.size }
func (s plainSource) Close() error { return nil }

type mappedSource struct {
	plainSource
	format.ZeroMapper
}

type storedSource struct {
	plainSource
	stored int64
}

func (s storedSource) Stored() int64 { return s.stored }

type mappedStoredSource struct {
	mappedSource
	stored int64
}

func (s mappedStoredSource) Stored() int64 { return s.stored }

// extents maps data in extents of 4 KiB blocks (a zero block is a hole),
// the map a format.ZeroMapper answers from.
type extents []format.Region

func mapOf(data []byte) extents {
	var xs extents
	for off := int64(0); off < int64(len(data)); off += 4096 {
		end := min(off+4096, int64(len(data)))
		zero := testutil.AllZero(data[off:end])
		if n := len(xs); n > 0 && xs[n-1].Zero == zero {
			xs[n-1].Length += end - off
			continue
		}
		xs = append(xs, format.Region{Start: off, Length: end - off, Zero: zero})
	}
	return xs
}

func (xs extents) Region(start, length int64) (format.Region, error) {
	i := sort.Search(len(xs), func(i int) bool { return xs[i].Start+xs[i].Length > start })
	if i == len(xs) || start < 0 || length <= 0 {
		return format.Region{}, fmt.Errorf("extent at %d beyond the map", start)
	}
	x := xs[i]
	return format.Region{Start: start, Length: min(x.Start+x.Length-start, length), Zero: x.Zero}, nil
}

// badMap answers extents that do not move forward: of length 0
// ("empty"), of a negative length ("negative"), or starting before the
// offset asked ("backwards"), of zeros or data. It counts its calls and
// fails after 100, so that a loop that never ends shows as a count.
type badMap struct {
	kind  string
	zero  bool
	calls atomic.Int64
}

func (b *badMap) Region(start, length int64) (format.Region, error) {
	if b.calls.Add(1) > 100 {
		return format.Region{}, errors.New("called 100 times")
	}
	switch b.kind {
	case "empty":
		return format.Region{Start: start, Length: 0, Zero: b.zero}, nil
	case "negative":
		return format.Region{Start: start, Length: -4096, Zero: b.zero}, nil
	default: // backwards
		return format.Region{Start: start - 4096, Length: 4096, Zero: b.zero}, nil
	}
}

// disk is a sparse test disk (holes, data, single bytes) of 1 MiB and a
// bit, not a multiple of the page size.
var disk = testutil.GenDisk(7, 1<<20+1000, "mixed")

func node(f File) *fileNode { return &fileNode{f: &f, open: new(atomic.Int64)} }

func read(t *testing.T, n *fileNode, size int, off int64) ([]byte, syscall.Errno) {
	t.Helper()
	res, errno := n.Read(context.Background(), nil, make([]byte, size), off)
	if errno != 0 {
		return nil, errno
	}
	b, st := res.Bytes(make([]byte, size))
	if st != fuse.OK {
		t.Fatalf("read result: %v", st)
	}
	return b, 0
}

// TestRead: reads give the data, up to the end of the file; a read the
// data cannot serve whole (an error, or data ending early) is EIO, never
// a short read, which the kernel would take for the end of the file.
func TestRead(t *testing.T) {
	size := int64(len(disk))
	good := node(File{Name: "d", Source: fileSource(size, &source{data: disk, failAt: -1}, nil, 0)})
	for _, tc := range []struct {
		off  int64
		size int
	}{{0, 4096}, {12345, 128 << 10}, {size - 1000, 4096}, {size - 1, 1}, {0, int(size) + 4096}} {
		got, errno := read(t, good, tc.size, tc.off)
		want := disk[tc.off:min(tc.off+int64(tc.size), size)]
		if errno != 0 || !bytes.Equal(got, want) {
			t.Errorf("read %d at %d: %d bytes, %v; want the disk's %d", tc.size, tc.off, len(got), errno, len(want))
		}
	}
	for _, off := range []int64{size, size + 4096} {
		if got, errno := read(t, good, 4096, off); errno != 0 || len(got) != 0 {
			t.Errorf("read at %d (the end is %d): %d bytes, %v; want 0 bytes, no error", off, size, len(got), errno)
		}
	}
	failAt := int64(300000)
	for _, err := range []error{syscall.EIO, errors.New("frame checksum mismatch"), io.EOF, io.ErrUnexpectedEOF} {
		bad := node(File{Name: "d", Source: fileSource(size, &source{data: disk, failAt: failAt, err: err}, nil, 0)})
		if got, errno := read(t, bad, 128<<10, failAt-64<<10); errno != syscall.EIO {
			t.Errorf("data failing at %d with %q: a read across it gave %d bytes, %v; want EIO", failAt, err, len(got), errno)
		}
		if got, errno := read(t, bad, 64<<10, failAt-64<<10); errno != 0 || !bytes.Equal(got, disk[failAt-64<<10:failAt]) {
			t.Errorf("data failing at %d with %q: the read just before it: %d bytes, %v", failAt, err, len(got), errno)
		}
	}
}

// wantSeek is what lseek answers on data: the first data (or hole)
// position at or after off; the end of the file is a hole.
func wantSeek(data []byte, off int64, whence int) (int64, syscall.Errno) {
	if off >= int64(len(data)) {
		return 0, syscall.ENXIO
	}
	for pos := off; pos < int64(len(data)); pos = (pos/4096 + 1) * 4096 {
		blk, end := pos/4096*4096, min((pos/4096+1)*4096, int64(len(data)))
		if testutil.AllZero(data[blk:end]) == (whence == seekHole) {
			return pos, 0
		}
	}
	if whence == seekHole {
		return int64(len(data)), 0
	}
	return 0, syscall.ENXIO
}

// TestLseek: SEEK_DATA and SEEK_HOLE from the map at every block
// boundary and inside blocks; without a map the file is all data; other
// whences are the kernel's.
func TestLseek(t *testing.T) {
	size := int64(len(disk))
	mapped := node(File{Name: "d", Source: fileSource(size, &source{data: disk, failAt: -1}, mapOf(disk), 0)})
	holes := 0
	for off := int64(0); off <= size+4096; off += 4096 - 1 {
		for _, whence := range []int{seekData, seekHole} {
			got, errno := mapped.Lseek(context.Background(), nil, uint64(off), uint32(whence))
			want, wantErr := wantSeek(disk, off, whence)
			if errno != wantErr || (errno == 0 && int64(got) != want) {
				t.Fatalf("lseek(%d, %d) = %d, %v; want %d, %v", off, whence, got, errno, want, wantErr)
			}
			if whence == seekHole && errno == 0 && int64(got) < size {
				holes++
			}
		}
	}
	if holes == 0 {
		t.Fatal("no hole found in a sparse disk")
	}
	plain := node(File{Name: "d", Source: fileSource(size, &source{data: disk, failAt: -1}, nil, 0)})
	for _, tc := range []struct {
		off     uint64
		whence  int
		want    uint64
		wantErr syscall.Errno
	}{
		{0, seekData, 0, 0}, {5000, seekData, 5000, 0}, {0, seekHole, uint64(size), 0},
		{uint64(size), seekData, 0, syscall.ENXIO}, {uint64(size), seekHole, 0, syscall.ENXIO},
		{1 << 63, seekData, 0, syscall.ENXIO}, {0, 0, 0, syscall.EINVAL}, {0, 2, 0, syscall.EINVAL},
	} {
		if got, errno := plain.Lseek(context.Background(), nil, tc.off, uint32(tc.whence)); got != tc.want || errno != tc.wantErr {
			t.Errorf("no map: lseek(%d, %d) = %d, %v; want %d, %v", tc.off, tc.whence, got, errno, tc.want, tc.wantErr)
		}
	}
}

// TestLseekBadMap: a map whose extents do not move forward (empty,
// negative, or starting before the offset asked) gives EIO at once:
// never a loop, never an answer taken from it.
func TestLseekBadMap(t *testing.T) {
	for _, kind := range []string{"empty", "negative", "backwards"} {
		for _, zero := range []bool{false, true} {
			for _, whence := range []int{seekData, seekHole} {
				m := &badMap{kind: kind, zero: zero}
				n := node(File{Name: "d", Source: fileSource(1<<20, &source{data: make([]byte, 1<<20), failAt: -1}, m, 0)})
				got, errno := n.Lseek(context.Background(), nil, 8192, uint32(whence))
				if errno != syscall.EIO || m.calls.Load() != 1 {
					t.Errorf("%s extents (zero %v), whence %d: lseek = %d, %v after %d calls of the map; want EIO after 1",
						kind, zero, whence, got, errno, m.calls.Load())
				}
			}
		}
	}
}

// TestGetattr: a read-only regular file of the size given, taking the
// blocks stored (all of them without a map), with its time.
func TestGetattr(t *testing.T) {
	mtime := time.Unix(1718000000, 0)
	for _, tc := range []struct {
		f          File
		wantBlocks uint64
	}{
		{File{Source: fileSource(5000, nil, nil, 0)}, 10},
		{File{Source: fileSource(5000, nil, extents{{Start: 0, Length: 5000, Zero: true}}, 0)}, 0},
		{File{Source: fileSource(5000, nil, extents{{Start: 0, Length: 5000}}, 4096)}, 8},
		{File{Source: fileSource(5000, nil, nil, 513), MTime: mtime}, 2},
	} {
		var out fuse.AttrOut
		if errno := node(tc.f).Getattr(context.Background(), nil, &out); errno != 0 {
			t.Fatal(errno)
		}
		if out.Mode != syscall.S_IFREG|0o444 || out.Size != uint64(tc.f.Source.Size()) || out.Blocks != tc.wantBlocks || out.Nlink != 1 {
			t.Errorf("%+v: mode %o, size %d, %d blocks, %d links; want %o, %d, %d, 1",
				tc.f, out.Mode, out.Size, out.Blocks, out.Nlink, syscall.S_IFREG|0o444, tc.f.Source.Size(), tc.wantBlocks)
		}
		if !tc.f.MTime.IsZero() && (out.Mtime != uint64(mtime.Unix()) || out.Ctime != uint64(mtime.Unix())) {
			t.Errorf("mtime %d, ctime %d; want %d", out.Mtime, out.Ctime, mtime.Unix())
		}
	}
	var out fuse.AttrOut
	if (&dirNode{}).Getattr(context.Background(), nil, &out); out.Mode != syscall.S_IFDIR|0o555 {
		t.Errorf("the directory's mode is %o", out.Mode)
	}
}

// TestOpen: opening for writing is EROFS; each open for reading is
// counted until its release.
func TestOpen(t *testing.T) {
	n := node(File{Name: "d", Source: fileSource(10, &source{data: make([]byte, 10), failAt: -1}, nil, 0)})
	for _, flags := range []int{os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_APPEND} {
		if fh, _, errno := n.Open(context.Background(), uint32(flags)); errno != syscall.EROFS || fh != nil {
			t.Errorf("open with flags %#x: %v, %v; want EROFS", flags, fh, errno)
		}
	}
	if n.open.Load() != 0 {
		t.Fatalf("refused opens counted: %d open", n.open.Load())
	}
	var fhs []any
	for i := 1; i <= 2; i++ {
		fh, _, errno := n.Open(context.Background(), uint32(os.O_RDONLY))
		if errno != 0 || fh == nil {
			t.Fatalf("open for reading: %v, %v; want a handle (the kernel tells of its release only then)", fh, errno)
		}
		fhs = append(fhs, fh)
		if n.open.Load() != int64(i) {
			t.Errorf("%d opens: %d counted", i, n.open.Load())
		}
	}
	for i := range fhs {
		n.Release(context.Background(), fhs[i])
	}
	if n.open.Load() != 0 {
		t.Errorf("all released: %d still counted open", n.open.Load())
	}
}

// TestUnescapeMountinfo: mount points in mountinfo have octal escapes.
func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/tmp/a\040b`: "/tmp/a b", `/x\011y\012z\134`: "/x\ty\nz\\", `/plain`: "/plain", `/odd\04`: `/odd\04`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

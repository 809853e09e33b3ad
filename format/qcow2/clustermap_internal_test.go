package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// countingReaderAt records the reads the cluster map makes of the file.
type countingReaderAt struct {
	ra    io.ReaderAt
	mu    sync.Mutex
	reads map[int64]int // offset -> times read
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.reads[off]++
	c.bytes += int64(len(p))
	c.mu.Unlock()
	return c.ra.ReadAt(p, off)
}

func qemuImage(t *testing.T, dir, name, size string, create []string, io ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	testutil.Run(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, create...), p, size)...)
	if len(io) > 0 {
		args := []string{"-f", "qcow2"}
		for _, c := range io {
			args = append(args, "-c", c)
		}
		testutil.Run(t, "qemu-io", append(args, p)...)
	}
	return p
}

// openCounting opens path with the cluster map's reads counted.
func openCounting(t *testing.T, path string) (*Source, *countingReaderAt) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := &countingReaderAt{ra: s.m.ra, reads: map[int64]int{}}
	s.m.ra = c
	return s, c
}

// walk reads the disk as the pipeline does: extents, and the data ones.
func walk(t *testing.T, s *Source) (zero, data int64) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for pos := int64(0); pos < s.Size(); {
		e, err := s.Region(pos, s.Size()-pos)
		if err != nil {
			t.Fatal(err)
		}
		if e.Start != pos || e.Length <= 0 || e.Length > s.Size()-pos {
			t.Fatalf("Region(%#x, %#x) = %+v: no progress, or past the end", pos, s.Size()-pos, e)
		}
		if e.Zero {
			zero += e.Length
		} else {
			for at := pos; at < pos+e.Length; {
				n := min(int64(len(buf)), pos+e.Length-at)
				if _, err := s.ReadAt(buf[:n], at); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				at += n
			}
			data += e.Length
		}
		pos += e.Length
	}
	return zero, data
}

// TestMapCost: what the cluster map reads is the metadata, each table
// once, plus the data: an empty 8 TiB disk is one zero region read from
// the L1 table alone; an image with extended L2 entries reads each L2
// table once; clusters preallocated in the file's holes are zeros that are
// never read.
func TestMapCost(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	dir := t.TempDir()

	s, c := openCounting(t, qemuImage(t, dir, "empty.qcow2", "8T", nil))
	if e, err := s.Region(0, s.Size()); err != nil || !e.Zero || e.Length != s.Size() {
		t.Errorf("empty 8 TiB image: first extent %+v, %v; want all of it, zero", e, err)
	}
	if c.bytes != 0 {
		t.Errorf("empty 8 TiB image: read %d bytes to map it", c.bytes)
	}

	// 6 KiB written every 96 KiB over 96 MiB: subclusters of clusters
	// mapped by one L2 table (4096 entries of 16 bytes: 256 MiB).
	var cmds []string
	for off := 0; off < 96<<20; off += 96 << 10 {
		cmds = append(cmds, "write -P 0x5a "+strconv.Itoa(off)+" 6k")
	}
	path := qemuImage(t, dir, "ext.qcow2", "600M", []string{"-o", "extended_l2=on"}, cmds...)
	s, c = openCounting(t, path)
	zero, data := walk(t, s)
	l2 := 0
	for off, n := range c.reads {
		if n > 1 {
			t.Errorf("extended L2: read at %#x %d times", off, n)
		}
		for _, table := range s.m.l1 {
			if int64(table&offsetMask) == off {
				l2++
			}
		}
	}
	if l2 != 1 {
		t.Errorf("extended L2: %d L2 tables read, want 1", l2)
	}
	if data > 70<<20 || zero < 500<<20 {
		t.Errorf("extended L2: %d bytes mapped as data, %d as zero, for 6 MiB written over 96 MiB", data, zero)
	}

	// Preallocated metadata: every cluster allocated, the file a hole
	// where nothing was written.
	s, c = openCounting(t, qemuImage(t, dir, "prealloc.qcow2", "256M", []string{"-o", "preallocation=metadata"},
		"write -P 0x77 10M 1M"))
	zero, data = walk(t, s)
	if s.m.host == nil {
		t.Fatal("no hole map for a regular file")
	}
	if data > 2<<20 || zero < 254<<20 || c.bytes > 2<<20+256<<10 {
		t.Errorf("preallocated: %d bytes mapped as data, %d as zero, and %d read, for 1 MiB written (a file system without SEEK_HOLE?)", data, zero, c.bytes)
	}
}

// TestHostileTables: corrupt L1 and L2 entries give one error that says
// what and where. qemu refuses the same images (an oracle where it is
// installed); only for tables and data past the end of the file does it
// read zeros, where vmaconv stops: a truncated image is not a disk of
// zeros.
func TestHostileTables(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.raw")
	os.WriteFile(raw, testutil.GenDisk(7, 4<<20, "data"), 0o644)
	mk := func(name string, opts ...string) []byte {
		p := filepath.Join(dir, name)
		testutil.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, opts...), raw, p)...)
		b, _ := os.ReadFile(p)
		return b
	}
	be := binary.BigEndian
	plain, v2, ext := mk("plain.qcow2"), mk("v2.qcow2", "-o", "compat=0.10"), mk("ext.qcow2", "-o", "extended_l2=on")
	l2At := func(b []byte) int { return int(be.Uint64(b[be.Uint64(b[40:]):]) & offsetMask) }
	tests := []struct {
		name      string
		base      []byte
		patch     func(b []byte)
		match     string
		qemuFails bool
	}{
		{"l1-unaligned", plain, func(b []byte) { l1 := be.Uint64(b[40:]); be.PutUint64(b[l1:], be.Uint64(b[l1:])+512) },
			"L2 table offset 0x40200 (L1 entry 0) is not aligned to a cluster", true},
		{"l1-past-eof", plain, func(b []byte) { l1 := be.Uint64(b[40:]); be.PutUint64(b[l1:], 1<<40) },
			"L2 table at 0x10000000000 (L1 entry 0) runs past the end of the file", false},
		{"l2-unaligned", plain, func(b []byte) { l2 := l2At(b); be.PutUint64(b[l2:], be.Uint64(b[l2:])+512) },
			"cluster at virtual offset 0x0 has an unaligned host offset", true},
		{"data-past-eof", plain, func(b []byte) { l2 := l2At(b); be.PutUint64(b[l2+8:], 1<<63|1<<40) },
			"data for virtual offset 0x10000 at host offset 0x10000000000 runs past the end of the file", false},
		{"v2-zero-flag", v2, func(b []byte) { l2 := l2At(b); be.PutUint64(b[l2:], be.Uint64(b[l2:])|1) },
			"zero cluster entry at virtual offset 0x0 in a version 2 image", true},
		{"subcluster-alloc-and-zero", ext, func(b []byte) { l2 := l2At(b); be.PutUint64(b[l2+8:], be.Uint64(b[l2+8:])|1<<32|1) },
			"invalid subcluster 0 at virtual offset 0x0", true},
		{"subcluster-alloc-no-host", ext, func(b []byte) { l2 := l2At(b); be.PutUint64(b[l2:], 0); be.PutUint64(b[l2+8:], 1) },
			"invalid subcluster 0 at virtual offset 0x0 (subcluster bitmap 0x0000000000000001, host offset 0x0)", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(tc.base)
			tc.patch(b)
			p := filepath.Join(dir, tc.name+".qcow2")
			os.WriteFile(p, b, 0o644)
			if out, err := exec.Command("qemu-img", "convert", "-O", "raw", p, p+".raw").CombinedOutput(); (err != nil) != tc.qemuFails {
				t.Errorf("qemu-img convert: %v %s (want failure: %v)", err, out, tc.qemuFails)
			}
			f, _ := os.Open(p)
			s, err := Open(f, format.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			buf := make([]byte, s.Size())
			_, rerr := s.ReadAt(buf, 0)
			_, eerr := s.Region(0, s.Size())
			err = errors.Join(rerr, eerr)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.match) {
				t.Errorf("got %v, want ErrCorrupt: …%s…", err, tc.match)
			}
		})
	}
}

// TestPartialHostHole: in a preallocated image whose host file holds a
// cluster partly as a hole, only the hole part is zero. Every extent is
// checked against qemu-img map over ranges that start and end at every
// 4 KiB inside clusters: an extent is zero exactly when the first piece
// of it (up to the end of its cluster or of the range) lies in a hole, and
// a zero region covers nothing qemu-img maps as data.
func TestPartialHostHole(t *testing.T) {
	testutil.RequireTool(t, "qemu-io")
	dir := t.TempDir()
	const size, csize = 1 << 20, 64 << 10
	// 64 KiB clusters, all allocated, the file a hole where nothing was
	// written: 4 KiB inside cluster 1, 8 KiB across clusters 2 and 3.
	path := qemuImage(t, dir, "partial.qcow2", "1M", []string{"-o", "preallocation=metadata"},
		"write -P 0x11 96k 4k", "write -P 0x22 188k 8k")
	out, err := exec.Command("qemu-img", "map", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		t.Fatalf("qemu-img map: %v", err)
	}
	var qmap []struct {
		Start, Length int64
		Zero          bool
	}
	if err := json.Unmarshal(out, &qmap); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	zero := func(lo, hi int64) bool { // qemu-img maps lo..hi as zeros
		for _, e := range qmap {
			if e.Start < hi && lo < e.Start+e.Length && !e.Zero {
				return false
			}
		}
		return true
	}
	if zero(0, size) || !zero(0, 96<<10) || !zero(100<<10, 188<<10) {
		t.Fatalf("qemu-img maps the image with holes elsewhere than where it was written (a file system without SEEK_HOLE?): %s", out)
	}
	s, _ := openCounting(t, path)
	if s.m.host == nil {
		t.Fatal("no hole map for a regular file")
	}
	for start := int64(0); start < size && !t.Failed(); start += 4 << 10 {
		for _, length := range []int64{4 << 10, 12 << 10, 40 << 10, csize, 100 << 10} {
			length = min(length, size-start)
			e, err := s.Region(start, length)
			if err != nil {
				t.Fatal(err)
			}
			first := min((start/csize+1)*csize, start+length)
			switch {
			case e.Start != start || e.Length < first-start || e.Length > length:
				t.Fatalf("Region(%#x, %#x) = %+v: not a run from the start of at least its first piece (to %#x)", start, length, e, first)
			case e.Zero != zero(start, first):
				t.Errorf("Region(%#x, %#x) = %+v; qemu-img maps %#x..%#x as zero: %v", start, length, e, start, first, zero(start, first))
			case e.Zero && !zero(start, start+e.Length):
				t.Errorf("Region(%#x, %#x) = %+v covers data that qemu-img maps", start, length, e)
			}
		}
	}
	// The whole disk: the untouched clusters are zeros, and what was written
	// reads back.
	z, d := walk(t, s)
	if z < size-3*csize || d > 3*csize {
		t.Errorf("whole disk: %d bytes mapped as zero, %d as data; want at most the 3 written clusters as data", z, d)
	}
	got := make([]byte, size)
	if _, err := s.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want[96<<10:], bytes.Repeat([]byte{0x11}, 4<<10))
	copy(want[188<<10:], bytes.Repeat([]byte{0x22}, 8<<10))
	if !bytes.Equal(got, want) {
		t.Error("the image does not read back as written")
	}
}

package vhdx

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// diffSpec describes a differencing image for buildDiff. qemu-img
// neither writes nor reads differencing VHDX images: they are built here
// from [MS-VHDX], and what they read is worked out here.
type diffSpec struct {
	size      int64
	bs        int64 // block size: 1 MiB if 0
	lss       int64 // logical sector size: 512 if 0
	states    []uint64
	present   []bool // per sector of the disk: in this file (partially present blocks)
	data      []byte // what this file holds for its sectors
	dataWrite guid
	locator   [][2]string
	noBitmap  bool // leave the sector bitmap block not present
}

// buildDiff writes a differencing image: the header section, a 1 MiB
// log, the BAT at 2 MiB, the metadata at 3 MiB (the five items and a
// parent locator), then block b at 4 MiB + b×bs and the chunk's sector
// bitmap after the last block. The disk is at most one chunk.
func buildDiff(t testing.TB, path string, s diffSpec) {
	t.Helper()
	if s.bs == 0 {
		s.bs = 1 << 20
	}
	if s.lss == 0 {
		s.lss = 512
	}
	blocks := (s.size + s.bs - 1) / s.bs
	cr := sectorsPerChunk * s.lss / s.bs
	if blocks > cr {
		t.Fatal("buildDiff makes one chunk")
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	put := func(off int64, b []byte) {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	put(0, Magic[:])
	h := header{seq: 1, dataWrite: s.dataWrite, version: 1, logLength: 1 << 20, logOffset: 1 << 20}
	put(header1Offset, encodeHeader(h))
	h.seq++
	put(header2Offset, encodeHeader(h))
	rt := encodeRegionTable([]regionEntry{
		{id: batGUID, off: 2 << 20, length: 1 << 20, required: true},
		{id: metadataGUID, off: 3 << 20, length: 1 << 20, required: true},
	})
	put(region1Offset, rt)
	put(region2Offset, rt)
	// Metadata: the table, then the items from 64 KiB.
	var loc []byte
	loc = append(loc, vhdxParentTypeGUID[:]...)
	loc = append(loc, 0, 0, byte(len(s.locator)), 0)
	strs := len(loc) + 12*len(s.locator)
	var text []byte
	for _, kv := range s.locator {
		k, v := putUTF16le(kv[0]), putUTF16le(kv[1])
		var e [12]byte
		le32(e[0:], uint32(strs+len(text)))
		le32(e[4:], uint32(strs+len(text)+len(k)))
		e[8], e[9] = byte(len(k)), byte(len(k)>>8)
		e[10], e[11] = byte(len(v)), byte(len(v)>>8)
		loc = append(loc, e[:]...)
		text = append(append(text, k...), v...)
	}
	loc = append(loc, text...)
	params := make([]byte, 8)
	le32(params, uint32(s.bs))
	le32(params[4:], 2) // HasParent
	items := []struct {
		id    guid
		value []byte
	}{
		{fileParamsGUID, params},
		{virtualSizeGUID, le64b(uint64(s.size))},
		{page83GUID, make([]byte, 16)},
		{logicalSectorGUID, le64b(uint64(s.lss))[:4]},
		{physicalSectorGUID, le64b(uint64(s.lss))[:4]},
		{parentLocatorGUID, loc},
	}
	meta := make([]byte, metaTableBytes+64+len(loc))
	copy(meta, "metadata")
	le16b(meta[10:], uint16(len(items)))
	off := metaTableBytes
	for i, it := range items {
		e := meta[32+32*i:]
		copy(e, it.id[:])
		le32(e[16:], uint32(off))
		le32(e[20:], uint32(len(it.value)))
		le32(e[24:], 4)
		copy(meta[off:], it.value)
		off += len(it.value)
	}
	put(3<<20, meta)
	// The BAT, the blocks, the sector bitmap.
	bat := make([]byte, (cr+1)*8)
	sb := int64(4<<20 + blocks*s.bs)
	for b, st := range s.states {
		e := st
		if st == blockFullyPresent || st == blockPartiallyPresent {
			host := 4<<20 + int64(b)*s.bs
			e |= uint64(host)
			put(host, s.data[int64(b)*s.bs:min(s.size, int64(b+1)*s.bs)])
		}
		le64(bat[8*b:], e)
	}
	if !s.noBitmap {
		le64(bat[8*cr:], uint64(sb)|sbPresent)
	}
	put(2<<20, bat)
	bitmap := make([]byte, sectorBitmapSize)
	for sec, in := range s.present {
		if in {
			bitmap[sec/8] |= 1 << (sec % 8)
		}
	}
	put(sb, bitmap)
}

func le64b(v uint64) []byte    { b := make([]byte, 8); le64(b, v); return b }
func le16b(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }

// expected returns what the image of s reads over parent.
func (s diffSpec) expected(parent []byte) []byte {
	bs, lss := s.bs, s.lss
	if bs == 0 {
		bs = 1 << 20
	}
	if lss == 0 {
		lss = 512
	}
	out := make([]byte, s.size)
	for sec := int64(0); sec*lss < s.size; sec++ {
		off := sec * lss
		var from []byte
		switch st := s.states[off/bs]; {
		case st == blockFullyPresent, st == blockPartiallyPresent && s.present[sec]:
			from = s.data
		case st == blockNotPresent, st == blockPartiallyPresent:
			from = parent
		}
		if off < int64(len(from)) {
			copy(out[off:off+lss], from[off:])
		}
	}
	return out
}

// runs returns n flags in runs of random lengths.
func runs(seed uint64, n int) []bool {
	rng := rand.New(rand.NewPCG(seed, 1))
	p := make([]bool, n)
	v := false
	for i := 0; i < n; {
		k := 1 + rng.IntN(40)
		for ; k > 0 && i < n; k-- {
			p[i] = v
			i++
		}
		v = !v
	}
	return p
}

// diffFixture copies a qemu-img-made parent into dir and returns a spec
// of a child over it: a disk 1 MiB and 1536 bytes larger than its parent
// (whose end is in a partially present block: the child reads past it as
// zeros), with blocks in most states (the grandchild of TestDifferencing
// has the others).
func diffFixture(t *testing.T, dir string) (diffSpec, []byte) {
	path := fixtures(t)["odd-size"]
	pm := loadImage(t, path)
	pm.save(t, filepath.Join(dir, "parent.vhdx"))
	parent := oracle(t, path)
	size := int64(len(parent)) + 1<<20 + 1536
	s := diffSpec{
		size:      size,
		states:    []uint64{blockPartiallyPresent, blockNotPresent, blockFullyPresent, blockPartiallyPresent, blockUnmapped},
		present:   runs(1, int(size/512)),
		data:      testutil.GenDisk(11, size, "data"),
		dataWrite: msguid(0xc0ffee, 1, 0x4001, 0x80, 1),
		locator: [][2]string{
			{"parent_linkage", pm.layout(t).head.dataWrite.String()},
			{"relative_path", `.\parent.vhdx`},
			{"absolute_win32_path", `\\?\D:\VMs\base\parent.vhdx`},
		},
	}
	return s, parent
}

// TestDifferencing: a differencing image reads its parent only with
// consent (and says so), sector by sector from the sector bitmap where
// its blocks are partially present, zeros past its parent's end, through
// a chain of parents; its parent is found by relative_path, or by the
// file name of absolute_win32_path, and must have the DataWriteGuid the
// locator names.
func TestDifferencing(t *testing.T) {
	dir := t.TempDir()
	s, parent := diffFixture(t, dir)
	child := filepath.Join(dir, "child.vhdx")
	buildDiff(t, child, s)
	want := s.expected(parent)

	_, err := openPath(t, child, format.OpenOptions{})
	if !errors.Is(err, ErrBacking) || !strings.Contains(err.Error(), `whose parent is ".\\parent.vhdx"; pass --allow-backing to read it`) {
		t.Errorf("without consent: %v", err)
	}
	var notes []string
	o := format.OpenOptions{AllowBacking: true, Note: func(m string) { notes = append(notes, m) }}
	src, err := openPath(t, child, o)
	if err != nil {
		t.Fatal(err)
	}
	formattest.TestSourceSerial(t, src, want)
	src.Close()
	if w := child + ": reading parent " + filepath.Join(dir, "parent.vhdx") + " (relative_path)"; len(notes) != 1 || notes[0] != w {
		t.Errorf("notes %q, want [%q]", notes, w)
	}

	// A grandchild over the child: most blocks from the chain.
	g := s
	g.states = []uint64{blockNotPresent, blockZero, blockPartiallyPresent, blockUndefined, blockNotPresent}
	g.present = runs(2, int(s.size/512))
	g.data = testutil.GenDisk(12, s.size, "data")
	g.dataWrite = msguid(0xbeef, 2, 0x4002, 0x80, 2)
	g.locator = [][2]string{{"parent_linkage", s.dataWrite.String()}, {"relative_path", "child.vhdx"}}
	grand := filepath.Join(dir, "grand.vhdx")
	buildDiff(t, grand, g)
	notes = nil
	src, err = openPath(t, grand, o)
	if err != nil {
		t.Fatal(err)
	}
	gwant := g.expected(want)
	formattest.TestSourceSerial(t, src, gwant)
	// And read whole in parallel, through both sector bitmap caches.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if got := readAll(t, src); !bytes.Equal(got, gwant) {
				t.Error("read in parallel, the grandchild differs")
			}
		})
	}
	wg.Wait()
	src.Close()
	if len(notes) != 2 {
		t.Errorf("notes %q, want one per parent", notes)
	}

	// The parent found by absolute_win32_path's file name; by
	// parent_linkage2; refused by its DataWriteGuid.
	moved := s
	moved.locator = [][2]string{s.locator[0], {"relative_path", `..\elsewhere\parent.vhdx`}, s.locator[2]}
	p := filepath.Join(dir, "moved.vhdx")
	buildDiff(t, p, moved)
	notes = nil
	if src, err := openPath(t, p, o); err != nil {
		t.Errorf("moved: %v", err)
	} else {
		src.Close()
		if len(notes) != 1 || !strings.Contains(notes[0], "parent.vhdx (absolute_win32_path's file name, in the image's directory)") {
			t.Errorf("moved: notes %q", notes)
		}
	}
	other := msguid(1, 2, 3, 4, 5, 6, 7, 8, 9)
	linkage2 := s
	linkage2.locator = [][2]string{{"parent_linkage", other.String()}, {"parent_linkage2", strings.ToUpper(s.locator[0][1])}, s.locator[1]}
	p = filepath.Join(dir, "linkage2.vhdx")
	buildDiff(t, p, linkage2)
	if src, err := openPath(t, p, o); err != nil {
		t.Errorf("parent_linkage2: %v", err)
	} else {
		src.Close()
	}
	wrong := s
	wrong.locator = [][2]string{{"parent_linkage", other.String()}, s.locator[1]}
	p = filepath.Join(dir, "wrong.vhdx")
	buildDiff(t, p, wrong)
	if _, err := openPath(t, p, o); !errors.Is(err, ErrBacking) || !strings.Contains(err.Error(), "is not the parent_linkage "+other.String()) {
		t.Errorf("wrong linkage: %v", err)
	}

	// Info names the parent, as qemu-img names a backing file.
	f, _ := os.Open(child)
	fi, _ := f.Stat()
	in, err := info(f, fi.Size(), format.FileStat{Name: child, Size: fi.Size()})
	f.Close()
	if js, _ := in.MarshalJSON(); err != nil || !strings.Contains(string(js), `"backing-filename":".\\parent.vhdx"`) {
		t.Errorf("info: %s, %v", js, err)
	}
}

// TestDifferencingRefused: a parent chain that loops, is too deep, is
// missing, has other sectors, or is asked of a stream; a partially
// present block without its sector bitmap; a sector bitmap past the end
// of the file.
func TestDifferencingRefused(t *testing.T) {
	dir := t.TempDir()
	s, _ := diffFixture(t, dir)
	o := format.OpenOptions{AllowBacking: true}
	at := func(n string) string { return filepath.Join(dir, n) }
	// A loop: the image is its own parent.
	loop := s
	loop.locator = [][2]string{{"parent_linkage", s.dataWrite.String()}, {"relative_path", "loop.vhdx"}}
	buildDiff(t, at("loop.vhdx"), loop)
	// A chain of 17 differencing images over the parent.
	prev := s.locator[0][1]
	prevName := "parent.vhdx"
	for i := range 17 {
		d := diffSpec{size: 1 << 20, states: make([]uint64, 1), dataWrite: msguid(uint32(100+i), 0, 0x4000),
			locator: [][2]string{{"parent_linkage", prev}, {"relative_path", prevName}}}
		prevName = fmt.Sprintf("deep%d.vhdx", i)
		buildDiff(t, at(prevName), d)
		prev = d.dataWrite.String()
	}
	missing := s
	missing.locator = [][2]string{s.locator[0], {"relative_path", "gone.vhdx"}, s.locator[2]}
	buildDiff(t, at("missing.vhdx"), missing)
	sectors := s
	sectors.lss, sectors.size = 4096, 6<<20
	buildDiff(t, at("sectors.vhdx"), sectors)
	nobitmap := s
	nobitmap.noBitmap = true
	buildDiff(t, at("nobitmap.vhdx"), nobitmap)
	buildDiff(t, at("short.vhdx"), s)
	os.Truncate(at("short.vhdx"), 4<<20+int64(len(s.states))<<20+4096)
	for _, tc := range []struct{ name, match string }{
		{"loop.vhdx", "loop: " + at("loop.vhdx") + " is already in the chain as " + at("loop.vhdx")},
		{"deep16.vhdx", "chain deeper than 16"},
		{"missing.vhdx", "parent not found: " + at("gone.vhdx") + " (relative_path): not found; " + at("parent.vhdx") + " (absolute_win32_path's file name, in the image's directory): not found"},
		{"sectors.vhdx", "logical sectors of 512 bytes, the image's are 4096"},
		{"nobitmap.vhdx", "the sector bitmap block of a chunk with partially present blocks is not present"},
		{"short.vhdx", "sector bitmap block at 0x900000, 1048576 bytes: past the end of the file"},
	} {
		if tc.name == "missing.vhdx" {
			os.Rename(at("parent.vhdx"), at("away.vhdx"))
		}
		src, err := openPath(t, at(tc.name), o)
		if tc.name == "missing.vhdx" {
			os.Rename(at("away.vhdx"), at("parent.vhdx"))
		}
		if err == nil {
			src.Close()
			t.Errorf("%s opened", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.match) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want it mentioning %q, on one line", tc.name, err, tc.match)
		}
	}
	m := loadImage(t, at("deep0.vhdx"))
	if _, err := OpenAt(readerAt(m), int64(len(m)), o); !errors.Is(err, ErrBacking) || !strings.Contains(err.Error(), "no directory to find its parent") {
		t.Errorf("OpenAt: %v", err)
	}
	if !bytes.Equal(m[:8], Magic[:]) {
		t.Error("buildDiff wrote no file identifier")
	}
}

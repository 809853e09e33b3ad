package vpc_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/vpc"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// A parent locator of a differencing disk: its platform code and the
// name it holds, encoded as the platform says.
type loc struct {
	code string // "W2ru", "W2ku", "MacX"
	name string
}

// diffSpec describes a differencing disk for buildDiff.
type diffSpec struct {
	size       int64
	id         uuid.UUID // its own
	parentID   uuid.UUID
	parentName string // parent_unicode_name
	locators   []loc
	sectors    map[int64]byte // the sectors it holds, each filled with the byte
	// dataSpace is the locator's data space field: 512 (bytes, as
	// Hyper-V writes it) or 1 (sectors, as the specification says).
	dataSpace uint32
}

// buildDiff lays out a differencing disk as Hyper-V does: the footer's
// copy, the header, the BAT, the locators' data, a block (bitmap and
// data) for each block holding a sector, the footer.
func buildDiff(s diffSpec) []byte {
	be := binary.BigEndian
	const bs = 2 << 20
	n := (s.size + bs - 1) / bs
	batLen := (4*n + 511) &^ 511
	locOff := 1536 + batLen
	var img bytes.Buffer
	img.Write(make([]byte, locOff))
	hdr := make([]byte, 1024)
	copy(hdr, "cxsparse")
	be.PutUint64(hdr[8:], ^uint64(0))
	be.PutUint64(hdr[16:], 1536)
	be.PutUint32(hdr[24:], 0x00010000)
	be.PutUint32(hdr[28:], uint32(n))
	be.PutUint32(hdr[32:], bs)
	copy(hdr[40:], s.parentID[:])
	be.PutUint32(hdr[56:], 12345)
	for i, u := range utf16.Encode([]rune(s.parentName)) {
		be.PutUint16(hdr[64+2*i:], u)
	}
	for i, l := range s.locators {
		var data []byte
		if l.code == "MacX" {
			data = []byte(l.name)
		} else {
			for _, u := range utf16.Encode([]rune(l.name)) {
				data = binary.LittleEndian.AppendUint16(data, u)
			}
		}
		e := hdr[576+24*i:]
		copy(e, l.code)
		be.PutUint32(e[4:], s.dataSpace)
		be.PutUint32(e[8:], uint32(len(data)))
		be.PutUint64(e[16:], uint64(img.Len()))
		img.Write(data)
		img.Write(make([]byte, (512-len(data)%512)%512))
	}
	fixSum(hdr, 36)
	out := img.Bytes()
	copy(out[512:], hdr)
	bat := make([]byte, batLen)
	for i := range bat {
		bat[i] = 0xff
	}
	for b := range n {
		var mine []int64
		for sec := range s.sectors {
			if sec*512/bs == b {
				mine = append(mine, sec)
			}
		}
		if len(mine) == 0 {
			continue
		}
		be.PutUint32(bat[4*b:], uint32(len(out)/512))
		block := make([]byte, 512+bs)
		for _, sec := range mine {
			in := sec - b*bs/512
			block[in/8] |= 0x80 >> (in % 8)
			for k := range 512 {
				block[512+in*512+int64(k)] = s.sectors[sec]
			}
		}
		out = append(out, block...)
	}
	foot := make([]byte, 512)
	copy(foot, "conectix")
	be.PutUint32(foot[8:], 2)
	be.PutUint32(foot[12:], 0x00010000)
	be.PutUint64(foot[16:], 512)
	copy(foot[28:], "win ")
	be.PutUint32(foot[32:], 0x000a0000)
	copy(foot[36:], "Wi2k")
	be.PutUint64(foot[40:], uint64(s.size))
	be.PutUint64(foot[48:], uint64(s.size))
	be.PutUint16(foot[56:], 65535)
	foot[58], foot[59] = 16, 255
	be.PutUint32(foot[60:], vpc.TypeDifferencing)
	copy(foot[68:], s.id[:])
	fixSum(foot, 64)
	copy(out, foot)
	out = append(out, foot...)
	copy(out[1536:], bat)
	return out
}

// overlay returns parent's content seen as size bytes with the child's
// sectors over it.
func overlay(parent []byte, size int64, sectors map[int64]byte) []byte {
	b := make([]byte, size)
	copy(b, parent)
	for sec, c := range sectors {
		for k := range int64(512) {
			b[sec*512+k] = c
		}
	}
	return b
}

// uuidOf returns the UUID in a VHD's footer.
func uuidOf(t *testing.T, path string) uuid.UUID {
	tl := tail(t, path)
	var id uuid.UUID
	copy(id[:], tl.foot[68:84])
	return id
}

// chain makes a chain in dir: a fixed grandparent qemu-img wrote, a
// differencing parent over it, a differencing child over that, whose
// parents are named as a Hyper-V child names them; it returns the child's
// path and the disk it holds.
func chain(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	needFixtures(t)
	gp := filepath.Join(dir, "base.vhd")
	testutil.Run(t, "cp", fixtures.cases["fixed"], gp)
	gpData, err := os.ReadFile(fixtures.cases["fixed"] + ".oracle")
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(gpData))
	// The parent holds blocks 0 and 2, the child 0 and 1: each leaves a
	// block to the one under it, and holds one the one above reads in
	// part.
	pSectors := map[int64]byte{0: 0x11, 1: 0x12, 7: 0x13, size/512 - 1: 0x17}
	pID := uuid.New()
	pb := buildDiff(diffSpec{size: size, id: pID, parentID: uuidOf(t, gp), parentName: `C:\vms\base.vhd`, dataSpace: 512,
		locators: []loc{{"W2ku", `C:\vms\base.vhd`}, {"W2ru", `.\base.vhd`}}, sectors: pSectors})
	parent := filepath.Join(dir, "snap1.avhd")
	os.WriteFile(parent, pb, 0o644)
	cSectors := map[int64]byte{1: 0x21, 2: 0x22, 4097: 0x23, 8191: 0x24}
	cb := buildDiff(diffSpec{size: size, id: uuid.New(), parentID: pID, parentName: `C:\vms\snap1.avhd`, dataSpace: 512,
		locators: []loc{{"W2ru", `.\snap1.avhd`}, {"W2ku", `C:\vms\snap1.avhd`}}, sectors: cSectors})
	child := filepath.Join(dir, "snap2.avhd")
	os.WriteFile(child, cb, 0o644)
	return child, overlay(overlay(gpData, size, pSectors), size, cSectors)
}

// TestDifferencing: a chain of differencing disks reads as its child
// over its parents (sector by sector, by the child's bitmaps) with
// --allow-backing, each parent found by its locators and told in a note;
// as libvhdi reads it; the map goes down the chain.
func TestDifferencing(t *testing.T) {
	dir := t.TempDir()
	child, want := chain(t, dir)
	var notes []string
	src, err := open(t, child, format.OpenOptions{AllowBacking: true, Note: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Type() != vpc.TypeDifferencing {
		t.Errorf("type %d", src.Type())
	}
	wantNotes := []string{child + ": reading parent " + filepath.Join(dir, "snap1.avhd") + " (vpc)",
		filepath.Join(dir, "snap1.avhd") + ": reading parent " + filepath.Join(dir, "base.vhd") + " (vpc)"}
	if strings.Join(notes, "\n") != strings.Join(wantNotes, "\n") {
		t.Errorf("notes %q, want %q", notes, wantNotes)
	}
	formattest.TestSource(t, src, want)
	// The map: the child's sectors at depth 0, the parent's at 1, the
	// rest from the fixed grandparent at 2.
	depth := map[int]int64{}
	err = pipeline.Map(context.Background(), src, src.Size(), pipeline.MapOptions{End: src.Size()}, func(m format.Mapping, _ bool) error {
		depth[m.Depth] += m.Length
		if m.Depth > 0 && m.Offset >= 0 {
			return fmt.Errorf("an offset in a parent: %+v", m)
		}
		return nil
	})
	if err != nil || depth[0] != 4*512 || depth[1] != 3*512 || depth[0]+depth[1]+depth[2] != src.Size() {
		t.Errorf("map by depth %v, %v", depth, err)
	}
	// info names the parent as the child does, without opening it.
	in, err := input.Describe(context.Background(), all.Registry(), child, input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	in.WriteText(&text)
	if !strings.Contains(text.String(), "\nbacking file: .\\snap1.avhd\n") || !strings.Contains(text.String(), "\nfile format: vpc\n") {
		t.Errorf("info:\n%s", text.String())
	}
	// libvhdi (20210425) reads the parent over the grandparent as we
	// do; over two levels, where child and parent both hold a block, it
	// reads the parent's sectors as the grandparent's, which the
	// specification does not.
	parent := filepath.Join(dir, "snap1.avhd")
	psrc, err := open(t, parent, format.OpenOptions{AllowBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer psrc.Close()
	pwant := make([]byte, psrc.Size())
	if n, err := psrc.ReadAt(pwant, 0); n != len(pwant) {
		t.Fatal(err)
	}
	if got := libvhdiRead(t, parent); got != nil && !bytes.Equal(got, pwant) {
		t.Errorf("libvhdi reads the parent otherwise, from %#x", firstDiff(got, pwant))
	}
}

// libvhdiRead reads a differencing disk and its parents with libvhdi
// (python3-libvhdi), an implementation of the specification that reads
// them: the oracle for differencing disks, which qemu-img does not read.
func libvhdiRead(t *testing.T, child string) []byte {
	t.Helper()
	py := ""
	for _, p := range []string{testutil.RequireTool(t, "python3"), "/usr/bin/python3"} { // the system's, past a virtualenv
		if exec.Command(p, "-c", "import pyvhdi").Run() == nil {
			py = p
			break
		}
	}
	if py == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3-libvhdi missing under CI (.ci/run installs it)")
		}
		t.Logf("python3-libvhdi not installed: libvhdi not asked")
		return nil
	}
	const script = `
import os, sys, pyvhdi
keep = []  # libvhdi does not hold on to a parent: Python would close it
def opened(path):
    f = pyvhdi.file()
    f.open(path)
    keep.append(f)
    if f.parent_identifier is not None:
        name = f.parent_filename.replace("\\", "/").split("/")[-1]
        f.set_parent(opened(os.path.join(os.path.dirname(path), name)))
    return f
f = opened(sys.argv[1])
sys.stdout.buffer.write(f.read_buffer(f.media_size))
`
	out, err := exec.Command(py, "-c", script, child).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("libvhdi: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return out
}

// TestParentPolicy: a parent is read only with consent, found from the
// locators (the relative one first, an absolute Windows path by its base
// name beside the child, a file URL, the unicode name), only if its UUID
// is the one the child records; loops, chains deeper than 16, missing
// parents and locators past the end of the file are refused with one line.
func TestParentPolicy(t *testing.T) {
	needFixtures(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhd")
	testutil.Run(t, "cp", fixtures.cases["fixed-small"], base)
	baseData, _ := os.ReadFile(fixtures.cases["fixed-small"] + ".oracle")
	size := int64(len(baseData))
	baseID := uuidOf(t, base)
	sectors := map[int64]byte{3: 0x5a}
	want := overlay(baseData, size, sectors)
	write := func(name string, s diffSpec) string {
		if s.size == 0 {
			s.size = size
		}
		if s.id == (uuid.UUID{}) {
			s.id = uuid.New()
		}
		if s.sectors == nil {
			s.sectors = sectors
		}
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, buildDiff(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("sub/up.vhd", diffSpec{parentID: baseID, locators: []loc{{"W2ru", `..\base.vhd`}}})
	for name, s := range map[string]diffSpec{
		"relative":   {parentID: baseID, locators: []loc{{"W2ru", `.\base.vhd`}}, dataSpace: 1},
		"absolute":   {parentID: baseID, locators: []loc{{"W2ku", `D:\Hyper-V\Disks\base.vhd`}}},
		"unicode":    {parentID: baseID, parentName: "base.vhd"},
		"url":        {parentID: baseID, locators: []loc{{"MacX", "file://" + strings.ReplaceAll(base, " ", "%20")}}},
		"unix":       {parentID: baseID, locators: []loc{{"W2ku", base}}},
		"nouuid":     {locators: []loc{{"W2ru", `.\base.vhd`}}},
		"sub/up.vhd": {},
	} {
		p := filepath.Join(dir, name)
		if name != "sub/up.vhd" {
			p = write(name+".vhd", s)
		}
		src, err := open(t, p, format.OpenOptions{AllowBacking: true})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got := make([]byte, size)
		if n, err := src.ReadAt(got, 0); n != len(got) || !bytes.Equal(got, want) {
			t.Errorf("%s: read %d, %v, or content differs", name, n, err)
		}
		src.Close()
	}
	// A chain of 17 differencing disks over the base.
	prev, prevID := base, baseID
	for i := range 17 {
		id := uuid.New()
		prev = write(fmt.Sprintf("deep%d.vhd", i), diffSpec{id: id, parentID: prevID, locators: []loc{{"W2ru", `.\` + filepath.Base(prev)}}})
		prevID = id
	}
	aID, bID := uuid.New(), uuid.New()
	loopA := write("loopa.vhd", diffSpec{id: aID, parentID: bID, locators: []loc{{"W2ru", `.\loopb.vhd`}}})
	write("loopb.vhd", diffSpec{id: bID, parentID: aID, locators: []loc{{"W2ru", `.\loopa.vhd`}}})
	selfID := uuid.New()
	self := write("self.vhd", diffSpec{id: selfID, parentID: selfID, locators: []loc{{"W2ru", `.\self.vhd`}}})
	relative := filepath.Join(dir, "relative.vhd")
	for _, tc := range []struct {
		path  string
		o     format.OpenOptions
		kind  error
		match string
	}{
		{relative, format.OpenOptions{}, vpc.ErrBacking, `a differencing disk whose parent is ".\\base.vhd"; pass --allow-backing to read it`},
		{relative, format.OpenOptions{Forced: true}, vpc.ErrBacking, "pass --allow-backing"}, // -f vpc is no consent
		{write("missing.vhd", diffSpec{parentID: baseID, locators: []loc{{"W2ru", `.\gone.vhd`}}}), format.OpenOptions{AllowBacking: true}, vpc.ErrBacking,
			`parent ".\\gone.vhd" not found (looked for ` + filepath.Join(dir, "gone.vhd") + ")"},
		{write("wrongid.vhd", diffSpec{parentID: uuid.New(), locators: []loc{{"W2ru", `.\base.vhd`}}}), format.OpenOptions{AllowBacking: true}, vpc.ErrBacking,
			"its UUID is " + baseID.String()},
		{prev, format.OpenOptions{AllowBacking: true}, vpc.ErrBacking, "deeper than 16"},
		{loopA, format.OpenOptions{AllowBacking: true}, vpc.ErrBacking, "a loop of parents: " + loopA + " is already in the chain"},
		{self, format.OpenOptions{AllowBacking: true}, vpc.ErrBacking, "a loop of parents: " + self},
		{write("farloc.vhd", diffSpec{parentID: baseID, locators: []loc{{"W2ru", `.\base.vhd`}}}), format.OpenOptions{AllowBacking: true}, vpc.ErrCorrupt,
			"parent locator 0 (at 0x440): data at 0x1000000"},
	} {
		if strings.HasSuffix(tc.path, "farloc.vhd") { // its locator's data offset past the end
			b, _ := os.ReadFile(tc.path)
			binary.BigEndian.PutUint64(b[512+576+16:], 1<<24)
			fixSum(b[512:1536], 36)
			os.WriteFile(tc.path, b, 0o644)
		}
		src, err := open(t, tc.path, tc.o)
		if err == nil {
			src.Close()
			t.Errorf("%s opened", filepath.Base(tc.path))
			continue
		}
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.match) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want %v mentioning %q", filepath.Base(tc.path), err, tc.kind, tc.match)
		}
	}
	// A view that is not a file has no directory to find a parent in.
	b, _ := os.ReadFile(relative)
	if _, err := vpc.OpenAt(bytes.NewReader(b), int64(len(b)), format.OpenOptions{AllowBacking: true}); !errors.Is(err, vpc.ErrBacking) || !strings.Contains(err.Error(), "open it as a file") {
		t.Errorf("OpenAt of a differencing disk: %v", err)
	}
}

package lvm

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// pattern fills p with the bytes of LV name at offset off: each 8-byte
// word holds its offset xored with a hash of the name.
func pattern(name string, off int64, p []byte) {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	var w [8]byte
	i := 0
	for o := off &^ 7; i < len(p); o += 8 {
		binary.LittleEndian.PutUint64(w[:], uint64(o)^h)
		skip := int64(0)
		if o < off {
			skip = off - o
		}
		i += copy(p[i:], w[skip:])
	}
}

// countingReader counts ReadAt calls.
type countingReader struct {
	r     io.ReaderAt
	calls atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	return c.r.ReadAt(p, off)
}

const (
	synthExtent  = 64 << 10
	synthSize    = 1536 << 10
	synthPEStart = 64 << 10
	synthPECount = (synthSize - synthPEStart) / synthExtent
	synthA       = "AAAAAAaaaaBBBBbbbbCCCCccccDDDDDD"
	synthB       = "EEEEEEeeeeFFFFffffGGGGggggHHHHHH"
)

// synthLVs is the logical volumes of the synthetic group, as written in
// its text.
var synthLVs = lvText("lin", true, seg(0, 3, 0, "pv0", 0), seg(3, 2, 0, "pv0", 5)) +
	lvText("cont", true, seg(0, 2, 0, "pv0", 8), seg(2, 2, 0, "pv0", 10)) +
	lvText("str", true, seg(0, 4, 16, "pv0", 12, "pv1", 0)) +
	lvText("span", false, seg(0, 2, 0, "pv0", 14), seg(2, 2, 0, "pv1", 2)) +
	lvText("past", true, seg(0, 2, 0, "pv1", synthPECount-1)) +
	lvText("beyond", true, seg(0, 1, 0, "pv1", synthPECount+3)) +
	"\nthin {\nid = \"x\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 100\ntype = \"thin\"\nthin_pool = \"pool\"\ndevice_id = 1\n}\n}\n"

// synthImages builds the two PVs of the synthetic volume group vgs, with
// the text of the first one wrapping at the end of its metadata area, and
// writes pattern data into the extents of lin, cont, str and span.
func synthImages() (a, b []byte) {
	pvs := []synthPVDesc{{synthA, synthPEStart / 512, synthPECount}, {synthB, synthPEStart / 512, synthPECount + 10}}
	text := vgText("vgs", 5, synthExtent/512, pvs, synthLVs)
	const mdaSize = 60 << 10
	a = synthPV{uuid: synthA, size: synthSize, mdaOff: 4096, mdaSize: mdaSize, textOff: mdaSize - 1000, text: text, peStart: synthPEStart}.build()
	b = synthPV{uuid: synthB, size: synthSize, mdaOff: 4096, mdaSize: mdaSize, textOff: 512, text: text, peStart: synthPEStart}.build()
	dev := map[string][]byte{"pv0": a, "pv1": b}
	put := func(lv string, lvOff int64, pv string, pe int64, n int64) {
		pattern(lv, lvOff, dev[pv][synthPEStart+pe*synthExtent:][:n])
	}
	put("lin", 0, "pv0", 0, 3*synthExtent)
	put("lin", 3*synthExtent, "pv0", 5, 2*synthExtent)
	put("cont", 0, "pv0", 8, 4*synthExtent)
	put("span", 0, "pv0", 14, 2*synthExtent)
	put("span", 2*synthExtent, "pv1", 2, 2*synthExtent)
	const chunk = 16 * 512
	for c := int64(0); c < 4*synthExtent/chunk; c++ {
		pv, pe := "pv0", int64(12)
		if c%2 == 1 {
			pv, pe = "pv1", 0
		}
		pattern("str", c*chunk, dev[pv][synthPEStart+pe*synthExtent+(c/2)*chunk:][:chunk])
	}
	return a, b
}

func readPVBytes(t *testing.T, img []byte) *PV {
	t.Helper()
	pv, err := ReadPV(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

func TestSynthetic(t *testing.T) {
	t.Parallel()
	a, b := synthImages()
	if !Probe(bytes.NewReader(a), int64(len(a))) || Probe(bytes.NewReader(make([]byte, 4096)), 4096) || Probe(bytes.NewReader(a[:100]), 100) {
		t.Fatal("Probe")
	}
	ca := &countingReader{r: bytes.NewReader(a)}
	pa, err := ReadPV(ca, int64(len(a)))
	if err != nil {
		t.Fatal(err)
	}
	pb := readPVBytes(t, b)
	if pa.UUID != dashed(synthA) || pa.Size != synthSize || pa.VG == nil || pa.VG.Name != "vgs" || pa.VG.Seqno != 5 {
		t.Fatalf("pv a: %+v", pa)
	}
	gs := Group([]*PV{pa, pb, pa, {UUID: "orphan"}})
	if len(gs) != 1 || len(gs[0].Missing) != 0 {
		t.Fatalf("groups: %+v", gs)
	}
	vg := gs[0]
	for _, name := range []string{"lin", "cont", "str", "span"} {
		v, err := vg.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, v.Size()+10)
		n, err := v.ReadAt(got, 0)
		if int64(n) != v.Size() || err != io.EOF {
			t.Fatalf("%s: ReadAt = %d, %v; want %d, EOF", name, n, err, v.Size())
		}
		want := make([]byte, v.Size())
		pattern(name, 0, want)
		if !bytes.Equal(got[:n], want) {
			t.Fatalf("%s: contents differ", name)
		}
		// Unaligned reads across segment and stripe boundaries.
		for _, r := range [][2]int64{{1, 100}, {synthExtent - 7, 20}, {2*synthExtent - 3, synthExtent + 9}, {8*512 - 1, 3 * 8 * 512}, {v.Size() - 5, 5}} {
			p := make([]byte, r[1])
			if n, err := v.ReadAt(p, r[0]); n != len(p) || err != nil {
				t.Fatalf("%s: ReadAt(%d, %d) = %d, %v", name, r[0], r[1], n, err)
			}
			if !bytes.Equal(p, want[r[0]:r[0]+r[1]]) {
				t.Fatalf("%s: ReadAt(%d, %d): contents differ", name, r[0], r[1])
			}
		}
		if n, err := v.ReadAt(make([]byte, 1), v.Size()); n != 0 || err != io.EOF {
			t.Fatalf("%s: read at end = %d, %v", name, n, err)
		}
	}
	// Contiguous segments on one PV are one device read.
	v, _ := vg.Open("cont")
	before := ca.calls.Load()
	if _, err := v.ReadAt(make([]byte, v.Size()), 0); err != nil {
		t.Fatal(err)
	}
	if n := ca.calls.Load() - before; n != 1 {
		t.Errorf("cont: %d device reads for the whole volume, want 1", n)
	}
	v, _ = vg.Open("lin")
	before = ca.calls.Load()
	if _, err := v.ReadAt(make([]byte, v.Size()), 0); err != nil {
		t.Fatal(err)
	}
	if n := ca.calls.Load() - before; n != 2 {
		t.Errorf("lin: %d device reads for two segments, want 2", n)
	}
	m := vg.Metadata
	if lv := vg.LV("span"); lv == nil || lv.Visible || !lv.Readable || lv.Type != "linear" || lv.Size != 4*synthExtent {
		t.Errorf("span: %+v", lv)
	}
	if lv := vg.LV("str"); lv.Type != "striped" || lv.Segments[0].StripeSize != 8192 || len(lv.Segments[0].Stripes) != 2 {
		t.Errorf("str: %+v", lv)
	}
	if lv := vg.LV("thin"); lv.Readable || lv.Why != "thin volume" || lv.Type != "thin" || lv.Size != 100*synthExtent {
		t.Errorf("thin: %+v", lv)
	}
	if m.ExtentSize != synthExtent || len(m.PVs) != 2 || m.PVs[1].PECount != synthPECount+10 {
		t.Errorf("metadata: %+v", m)
	}
	for name, want := range map[string]error{"thin": ErrUnsupported, "past": ErrCorrupt, "beyond": ErrCorrupt} {
		_, err := vg.Open(name)
		if !errors.Is(err, want) || !strings.Contains(err.Error(), `lv "`+name+`"`) {
			t.Errorf("Open(%s) = %v, want %v naming the LV", name, err, want)
		}
	}
	if _, err := vg.Open("nope"); err == nil {
		t.Error("Open(nope) succeeded")
	}

	// Without the second PV.
	gs = Group([]*PV{pa})
	if len(gs[0].Missing) != 1 || gs[0].Missing[0].Key != "pv1" || gs[0].Missing[0].ID != dashed(synthB) {
		t.Fatalf("missing: %+v", gs[0].Missing)
	}
	if _, err := gs[0].Open("lin"); err != nil {
		t.Error(err)
	}
	if _, err := gs[0].Open("str"); !errors.Is(err, ErrMissingPV) || !strings.Contains(err.Error(), dashed(synthB)) {
		t.Errorf("Open(str) without pv1 = %v", err)
	}
}

// TestNewestCopy checks that Group takes the metadata with the highest
// seqno, and ReadPV the newer of a PV's two metadata areas.
func TestNewestCopy(t *testing.T) {
	t.Parallel()
	pvs := []synthPVDesc{{synthA, synthPEStart / 512, synthPECount}}
	old := vgText("vgs", 3, synthExtent/512, pvs, lvText("lin", true, seg(0, 1, 0, "pv0", 0)))
	newer := vgText("vgs", 4, synthExtent/512, pvs, lvText("lin", true, seg(0, 2, 0, "pv0", 0)))
	a := synthPV{uuid: synthA, size: synthSize, mdaOff: 4096, mdaSize: 32 << 10, textOff: 512, text: old, peStart: synthPEStart}.build()
	b := synthPV{uuid: synthA, size: synthSize, mdaOff: 4096, mdaSize: 32 << 10, textOff: 4096, text: newer, peStart: synthPEStart}.build()
	ga := Group([]*PV{readPVBytes(t, a), readPVBytes(t, b)})
	if len(ga) != 1 || ga[0].Metadata.Seqno != 4 || ga[0].LV("lin").Size != 2*synthExtent {
		t.Fatalf("group: %+v", ga[0].Metadata)
	}
	// A second metadata area at the end of the PV, newer than the first.
	const m2 = synthSize - 32<<10
	second := synthPV{uuid: synthA, size: synthSize, mdaOff: m2, mdaSize: 32 << 10, textOff: 512, text: newer, peStart: synthPEStart}.build()
	img := append([]byte(nil), a...)
	copy(img[m2:], second[m2:])
	h := img[512+32:]
	// Append the second area to the metadata list: offset at 88, size at 96.
	putLE(h[88:], m2)
	putLE(h[96:], 32<<10)
	putLE32(img[512+16:], crc(initialCRC, img[512+20:1024]))
	pv := readPVBytes(t, img)
	if pv.VG.Seqno != 4 {
		t.Errorf("two areas: seqno %d, want 4", pv.VG.Seqno)
	}
	// A damaged first area: the second one is used.
	img[4096+100] ^= 1
	if pv = readPVBytes(t, img); pv.VG.Seqno != 4 {
		t.Errorf("damaged first area: seqno %d, want 4", pv.VG.Seqno)
	}
}

func putLE(p []byte, v int64) {
	for i := 0; i < 8; i++ {
		p[i] = byte(v >> (8 * i))
	}
}

func putLE32(p []byte, v uint32) {
	for i := 0; i < 4; i++ {
		p[i] = byte(v >> (8 * i))
	}
}

// TestDamage checks that damaged structures give one clear error wrapping
// ErrCorrupt.
func TestDamage(t *testing.T) {
	t.Parallel()
	a, _ := synthImages()
	const mda = 4096
	mdaSize := int64(60 << 10)
	for _, c := range []struct {
		name string
		off  int64
		want string
	}{
		{"label checksum", 512 + 40, "label at sector 1: checksum"},
		{"mda checksum", mda + 100, "metadata area 0 at 4096: header checksum"},
		{"text checksum", mda + mdaSize - 500, "metadata checksum"},
		{"wrapped text checksum", mda + 600, "metadata checksum"},
	} {
		img := append([]byte(nil), a...)
		img[c.off] ^= 0x10
		_, err := ReadPV(bytes.NewReader(img), int64(len(img)))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// Truncated: the metadata area lies past the end.
	if _, err := ReadPV(bytes.NewReader(a[:8192]), 8192); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
	// An orphan PV: an area without metadata.
	o := synthPV{uuid: synthA, size: 1 << 20, mdaOff: 4096, mdaSize: 32 << 10, peStart: 64 << 10}.build()
	if pv := readPVBytes(t, o); pv.VG != nil || pv.UUID != dashed(synthA) {
		t.Errorf("orphan: %+v", pv)
	}
	// Text that does not parse.
	bad := synthPV{uuid: synthA, size: 1 << 20, mdaOff: 4096, mdaSize: 32 << 10, textOff: 512, text: "vg { id = ", peStart: 64 << 10}.build()
	if _, err := ReadPV(bytes.NewReader(bad), 1<<20); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad text: %v", err)
	}
	// A PV missing from its own metadata.
	text := vgText("vgs", 1, 128, []synthPVDesc{{synthB, 128, 10}}, "")
	alien := synthPV{uuid: synthA, size: 1 << 20, mdaOff: 4096, mdaSize: 32 << 10, textOff: 512, text: text, peStart: 64 << 10}.build()
	if _, err := ReadPV(bytes.NewReader(alien), 1<<20); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("alien: %v", err)
	}
}

// TestParseSample parses a metadata text written by vgcfgbackup (LVM
// 2.03.16), with thin, RAID1 and snapshot LVs added by hand as LVM writes
// them, and checks what it says.
func TestParseSample(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile("testdata/vg.txt")
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMetadata(text)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "vgt" || m.ID != "uxs2qm-dpiZ-28CL-WReL-Dgrq-3J9D-5tRs6O" || m.Seqno != 7 || m.ExtentSize != 1<<20 {
		t.Fatalf("vg: %+v", m)
	}
	if len(m.PVs) != 2 || m.PVs[1] != (PVRef{Key: "pv1", ID: "NG8jCC-wMBM-WAIw-UR5N-EPw3-IQXc-MGpWTA", PEStart: 1 << 20, PECount: 15}) {
		t.Fatalf("pvs: %+v", m.PVs)
	}
	type want struct {
		typ               string
		size              int64
		visible, readable bool
		why               string
		segs              int
	}
	wants := map[string]want{
		"lin":           {"linear", 5 << 20, true, true, "", 2},
		"lin2":          {"linear", 2 << 20, true, true, "", 1},
		"str":           {"striped", 4 << 20, true, true, "", 1},
		"pool":          {"thin-pool", 2 << 20, true, false, "thin pool", 1},
		"thin":          {"thin", 4 << 20, true, false, "thin volume", 1},
		"lvol0_pmspare": {"linear", 1 << 20, false, true, "", 1},
		"pool_tmeta":    {"linear", 1 << 20, false, true, "", 1},
		"pool_tdata":    {"linear", 2 << 20, false, true, "", 1},
		"snap":          {"snapshot", 1 << 20, true, false, `snapshot of "lin2" (copy-on-write store)`, 1},
		"snapshot0":     {"snapshot", 2 << 20, false, false, "snapshot", 1},
		"r1":            {"raid1", 1 << 20, true, false, "raid1", 1},
		"r1_rmeta_0":    {"linear", 1 << 20, false, true, "", 1},
		"r1_rimage_0":   {"linear", 1 << 20, false, true, "", 1},
		"r1_rmeta_1":    {"linear", 1 << 20, false, true, "", 1},
		"r1_rimage_1":   {"linear", 1 << 20, false, true, "", 1},
	}
	if len(m.LVs) != len(wants) {
		t.Errorf("%d LVs, want %d", len(m.LVs), len(wants))
	}
	for _, lv := range m.LVs {
		w, ok := wants[lv.Name]
		got := want{lv.Type, lv.Size, lv.Visible, lv.Readable, lv.Why, len(lv.Segments)}
		if !ok || got != w {
			t.Errorf("%s: %+v, want %+v", lv.Name, got, w)
		}
	}
	str := m.LVs[2].Segments[0]
	if str.StripeSize != 64<<10 || len(str.Stripes) != 2 || str.Stripes[0] != (Stripe{"pv0", 7}) || str.Stripes[1] != (Stripe{"pv1", 0}) {
		t.Errorf("str: %+v", str)
	}
	if s := m.LVs[0].Segments[1]; s.StartExtent != 3 || s.ExtentCount != 2 || s.Stripes[0] != (Stripe{"pv0", 5}) {
		t.Errorf("lin segment 2: %+v", s)
	}
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	root, err := parseConfig([]byte("# c\nvg {\n a = \"x\\\"y\\\\z\" # tail\n b = -5\n c = [ \"p\", 1, [2] ]\n d = 1.5\n e = bare\n s { t = 'q' }\n}\nx = 1\x00garbage {"))
	if err != nil {
		t.Fatal(err)
	}
	vg := root.sub("vg")
	if s, _ := vg.str("a"); s != `x"y\z` {
		t.Errorf("a = %q", s)
	}
	if n, _ := vg.int("b"); n != -5 {
		t.Errorf("b = %d", n)
	}
	if c, _ := vg.get("c"); len(c.array) != 3 || c.array[2].array[0].num != 2 {
		t.Errorf("c = %+v", c)
	}
	if d, _ := vg.get("d"); d.kind != kindFloat {
		t.Errorf("d = %+v", d)
	}
	if e, _ := vg.str("e"); e != "bare" {
		t.Errorf("e = %q", e)
	}
	if s, _ := vg.sub("s").str("t"); s != "q" {
		t.Errorf("s.t = %q", s)
	}
	for _, bad := range []string{"a {", "a = ", "a = [1", "}", "a = \"x", "a b", "a = [1 2]", "{", "a = ]",
		strings.Repeat("a {", 40) + strings.Repeat("}", 40), "a = " + strings.Repeat("[", 40) + strings.Repeat("]", 40)} {
		if _, err := parseConfig([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("parse %q: %v", bad, err)
		}
	}
	if _, err := parseConfigLimit(bytes.Repeat([]byte("a=1\n"), 101), 100); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "more than 100 items") {
		t.Errorf("too many items: %v", err)
	}
	for _, bad := range []string{"", "x = 1", "vg { }", "vg { id = \"x\" seqno = 1 }", "vg { id = \"x\" seqno = 1 extent_size = 0 }",
		"vg { id = \"x\" seqno = 1 extent_size = 8 physical_volumes { pv0 { pe_start = -1 } } }"} {
		if _, err := parseMetadata([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("metadata %q: %v", bad, err)
		}
	}
	// A damaged LV is kept, unreadable, with its damage reported by Open.
	m, err := parseMetadata([]byte("vg { id = \"x\" seqno = 1 extent_size = 8 logical_volumes { l { segment1 { start_extent = 1 extent_count = 1 type = \"striped\" stripe_count = 1 stripes = [\"pv0\", 0] } } } }"))
	if err != nil || len(m.LVs) != 1 || m.LVs[0].Readable || m.LVs[0].bad == nil {
		t.Fatalf("%+v, %v", m, err)
	}
	if _, err := (&VolumeGroup{Metadata: m}).Open("l"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "segment1: starts at extent 1, not 0") {
		t.Errorf("Open: %v", err)
	}
}

// TestNoMetadataPV groups a PV without metadata areas (pvcreate
// --metadatacopies 0) by the metadata of its group's other PV.
func TestNoMetadataPV(t *testing.T) {
	t.Parallel()
	a, b := synthImages()
	bare := append([]byte(nil), b...)
	// Drop the metadata area from the pv header's list.
	h := bare[512+32:]
	putLE(h[72:], 0)
	putLE(h[80:], 0)
	putLE32(bare[512+16:], crc(initialCRC, bare[512+20:1024]))
	pb := readPVBytes(t, bare)
	if pb.VG != nil || pb.UUID != dashed(synthB) {
		t.Fatalf("pv without metadata: %+v", pb)
	}
	gs := Group([]*PV{pb, readPVBytes(t, a)})
	if len(gs) != 1 || len(gs[0].Missing) != 0 {
		t.Fatalf("Group: %+v", gs)
	}
	v, err := gs[0].Open("str")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, v.Size())
	pattern("str", 0, want)
	got := make([]byte, v.Size())
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("str: %v", err)
	}
}

// realHead returns testdata/pv0-head.bin.gz: the first MiB (label and
// metadata area) of a PV written by lvm2 2.03.16 (pvcreate, vgcreate,
// lvcreate, lvextend, then vgcfgrestore of testdata/vg.txt).
func realHead(t testing.TB) []byte {
	f, err := os.Open("testdata/pv0-head.bin.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.LimitReader(z, 2<<20))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRealHead reads the label and metadata LVM wrote (checked-in, so
// that the checksums are checked against LVM's without loop devices).
func TestRealHead(t *testing.T) {
	t.Parallel()
	img := realHead(t)
	pv := readPVBytes(t, img)
	if pv.UUID != "wa7hez-Dtct-7yp8-96Ui-WoCo-jeP3-wedwue" || pv.Size != 16<<20 || pv.key != "pv0" || pv.peStart != 1<<20 {
		t.Errorf("pv: %+v", pv)
	}
	m := pv.VG
	if m.Name != "vgt" || m.Seqno != 8 || len(m.LVs) != 15 {
		t.Errorf("vg: %s seqno %d, %d LVs", m.Name, m.Seqno, len(m.LVs))
	}
	gs := Group([]*PV{pv})
	if len(gs) != 1 || len(gs[0].Missing) != 1 || gs[0].Missing[0].Key != "pv1" {
		t.Fatalf("Group: %+v", gs)
	}
	// lin lies on pv0 past the captured MiB: an error naming it.
	if _, err := gs[0].Open("lin"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `lv "lin"`) || !strings.Contains(err.Error(), "past the end of pv") {
		t.Errorf("Open(lin) = %v", err)
	}
}

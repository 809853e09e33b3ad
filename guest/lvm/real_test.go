package lvm

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lvmConfig keeps lvm2 from activating anything, waiting for udev or
// writing backups to /etc/lvm.
const lvmConfig = "global { activation=0 } activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }"

// realVG is a volume group made by lvm2 on two loop devices over files,
// with what lvs, pvs and vgs report about it.
type realVG struct {
	files   [2]string
	loops   [2]string // device names while attached (in the reports)
	wrapped bool      // the first PV's current metadata wraps around its area
	thinLV  bool      // lvcreate made the thin LVs (else vgcfgrestore did)
	changes int       // metadata changes made until it wrapped
	elapsed time.Duration
	segs    []segRow
	pvs     []pvRow
	vg      vgRow
}

// segRow is a row of lvs --segments.
type segRow struct {
	Name       string `json:"lv_name"`
	UUID       string `json:"lv_uuid"`
	Attr       string `json:"lv_attr"`
	Size       int64  `json:"lv_size,string"`
	Segtype    string `json:"segtype"`
	Start      int64  `json:"seg_start_pe,string"`
	Count      int64  `json:"seg_size_pe,string"`
	Ranges     string `json:"seg_pe_ranges"`
	Stripes    int    `json:"stripes,string"`
	StripeSize int64  `json:"stripe_size,string"`
}

// pvRow is a row of pvs.
type pvRow struct {
	Name    string `json:"pv_name"`
	UUID    string `json:"pv_uuid"`
	DevSize int64  `json:"dev_size,string"`
	PEStart int64  `json:"pe_start,string"`
	PECount int64  `json:"pv_pe_count,string"`
}

// vgRow is a row of vgs.
type vgRow struct {
	Name       string `json:"vg_name"`
	UUID       string `json:"vg_uuid"`
	Seqno      int    `json:"vg_seqno,string"`
	ExtentSize int64  `json:"vg_extent_size,string"`
	PVCount    int    `json:"pv_count,string"`
}

var (
	realDir  string // removed by TestMain
	realOnce sync.Once
	real     *realVG
	realSkip string
	realErr  error
)

// needLVM returns the volume group built once for the package's tests,
// or skips the test where lvm2 or loop devices are not available (a
// missing lvm2 fails under CI=true).
func needLVM(t *testing.T) *realVG {
	t.Helper()
	realOnce.Do(func() {
		start := time.Now()
		real, realSkip, realErr = buildReal()
		if real != nil {
			real.elapsed = time.Since(start)
		}
	})
	if realSkip != "" {
		// Under CI, a missing or broken lvm2 fails; missing loop devices
		// (an unprivileged container) skip.
		if os.Getenv("CI") == "true" && !strings.HasPrefix(realSkip, "no loop devices") {
			t.Fatal(realSkip)
		}
		t.Skip(realSkip)
	}
	if realErr != nil {
		t.Fatal(realErr)
	}
	return real
}

func TestMain(m *testing.M) {
	code := m.Run()
	if realDir != "" {
		os.RemoveAll(realDir)
	}
	os.Exit(code)
}

// lvmRun runs an lvm2 command with lvmConfig.
func lvmRun(name string, args ...string) ([]byte, error) {
	args = append([]string{"--config", lvmConfig}, args...)
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// report runs an lvm2 report command and decodes its JSON rows.
func report(kind string, dst any, args ...string) error {
	cmd := kind + "s"
	if kind == "seg" {
		cmd = "lvs"
	}
	out, err := lvmRun(cmd, append([]string{"--reportformat", "json", "--units", "b", "--nosuffix"}, args...)...)
	if err != nil {
		return err
	}
	var r struct {
		Report []map[string][]map[string]string
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Report) != 1 {
		return fmt.Errorf("%s: %v: %s", cmd, err, out)
	}
	rows := r.Report[0][kind]
	b, _ := json.Marshal(rows)
	return json.Unmarshal(b, dst)
}

func buildReal() (_ *realVG, skip string, err error) {
	if _, err := exec.LookPath("pvcreate"); err != nil {
		return nil, "lvm2 not installed (apt-get install lvm2)", nil
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return nil, "losetup not installed (apt-get install mount)", nil
	}
	dir, err := os.MkdirTemp("", "lvmtest")
	if err != nil {
		return nil, "", err
	}
	realDir = dir
	r := &realVG{}
	for i := range r.files {
		r.files[i] = filepath.Join(dir, fmt.Sprintf("pv%d.img", i))
		if err := os.WriteFile(r.files[i], nil, 0o644); err != nil {
			return nil, "", err
		}
		if err := os.Truncate(r.files[i], 16<<20); err != nil {
			return nil, "", err
		}
	}
	var attached []string
	defer func() {
		for _, l := range attached {
			exec.Command("losetup", "-d", l).Run()
		}
	}()
	for i, f := range r.files {
		out, err := exec.Command("losetup", "-f", "--show", f).CombinedOutput()
		if err != nil {
			return nil, fmt.Sprintf("no loop devices here (losetup -f --show: %v: %s)", err, bytes.TrimSpace(out)), nil
		}
		r.loops[i] = strings.TrimSpace(string(out))
		attached = append(attached, r.loops[i])
	}
	a, b := r.loops[0], r.loops[1]
	steps := [][]string{
		// Small metadata areas (32 KiB, LVM's minimum) so that the
		// circular buffer wraps after a few changes.
		{"pvcreate", "-q", "--metadatasize", "32k", "--dataalignment", "4k", a, b},
		{"vgcreate", "-q", "-s", "1m", "vgt", a, b},
		{"lvcreate", "-q", "-an", "-Zn", "-L", "3m", "-n", "lin", "vgt", a},
		{"lvcreate", "-q", "-an", "-Zn", "-L", "2m", "-n", "lin2", "vgt", a},
		{"lvextend", "-q", "-L", "5m", "vgt/lin", a},
		{"lvcreate", "-q", "-an", "-Zn", "-i", "2", "-I", "64k", "-L", "4m", "-n", "str", "vgt", a, b},
	}
	for i, s := range steps {
		if _, err := lvmRun(s[0], s[1:]...); err != nil {
			if i == 0 {
				// lvm2 is installed but cannot run here.
				return nil, fmt.Sprintf("lvm2 cannot run here (%v)", err), nil
			}
			return nil, "", err
		}
	}
	// A thin pool and a thin LV: lvcreate refuses them without
	// device-mapper, so write them with vgcfgrestore as LVM writes them.
	if _, err := lvmRun("lvcreate", "-q", "-an", "-Zn", "-L", "2m", "-T", "vgt/pool"); err == nil {
		if _, err := lvmRun("lvcreate", "-q", "-an", "-V", "4m", "-T", "vgt/pool", "-n", "thin"); err != nil {
			return nil, "", err
		}
		r.thinLV = true
	} else {
		backup := filepath.Join(dir, "vgt.txt")
		if _, err := lvmRun("vgcfgbackup", "-q", "-f", backup, "vgt"); err != nil {
			return nil, "", err
		}
		text, err := os.ReadFile(backup)
		if err != nil {
			return nil, "", err
		}
		i := bytes.LastIndex(text, []byte("\t}\n\n}"))
		if i < 0 {
			return nil, "", fmt.Errorf("vgcfgbackup: no logical_volumes end in %s", text)
		}
		text = append(text[:i:i], append([]byte(extraLVs), text[i:]...)...)
		if err := os.WriteFile(backup, text, 0o644); err != nil {
			return nil, "", err
		}
		if _, err := lvmRun("vgcfgrestore", "-q", "--force", "-f", backup, "vgt"); err != nil {
			return nil, "", err
		}
	}
	// Change the metadata until its current copy wraps around the end of
	// the first PV's metadata area.
	for r.changes = 0; r.changes < 40 && !r.wrapped; r.changes++ {
		if _, err := lvmRun("vgchange", "-q", "--addtag", fmt.Sprintf("tag%d", r.changes), "vgt"); err != nil {
			return nil, "", err
		}
		r.wrapped, err = wraps(r.files[0])
		if err != nil {
			return nil, "", err
		}
	}
	if err := report("seg", &r.segs, "-a", "--segments", "-o", "lv_name,lv_uuid,lv_attr,lv_size,segtype,seg_start_pe,seg_size_pe,seg_pe_ranges,stripes,stripe_size", "vgt"); err != nil {
		return nil, "", err
	}
	if err := report("pv", &r.pvs, "-o", "pv_name,pv_uuid,dev_size,pe_start,pv_pe_count", a, b); err != nil {
		return nil, "", err
	}
	var vgs []vgRow
	if err := report("vg", &vgs, "-o", "vg_name,vg_uuid,vg_seqno,vg_extent_size,pv_count", "vgt"); err != nil {
		return nil, "", err
	}
	if len(vgs) != 1 {
		return nil, "", fmt.Errorf("vgs: %d rows", len(vgs))
	}
	r.vg = vgs[0]
	for _, l := range attached {
		if out, err := exec.Command("losetup", "-d", l).CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("losetup -d %s: %v: %s", l, err, out)
		}
	}
	attached = nil
	return r, "", r.writePatterns()
}

// wraps reports whether the current metadata of the PV in file wraps
// around the end of its first metadata area (at 4 KiB, as pvcreate puts it).
func wraps(file string) (bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := make([]byte, 64)
	if _, err := f.ReadAt(h, 4096); err != nil {
		return false, err
	}
	size := binary.LittleEndian.Uint64(h[32:])
	off, n := binary.LittleEndian.Uint64(h[40:]), binary.LittleEndian.Uint64(h[48:])
	return off+n > size, nil
}

// extraLVs are the LVs added with vgcfgrestore: a thin pool with its
// hidden data, metadata and spare LVs, a thin LV, an old-style snapshot of
// lin2 and a RAID1 LV, on extents that lin, lin2 and str leave free.
const extraLVs = `
		pool {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa1"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "thin-pool"
				metadata = "pool_tmeta"
				pool = "pool_tdata"
				transaction_id = 1
				chunk_size = 128
				discards = "passdown"
				zero_new_blocks = 1
			}
		}
		thin {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa2"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 4
				type = "thin"
				thin_pool = "pool"
				transaction_id = 0
				device_id = 1
			}
		}
		lvol0_pmspare {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa3"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv1", 8]
			}
		}
		pool_tmeta {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa4"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv1", 9]
			}
		}
		pool_tdata {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa5"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "striped"
				stripe_count = 1
				stripes = ["pv1", 10]
			}
		}
		snap {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa6"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv1", 12]
			}
		}
		snapshot0 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa7"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "snapshot"
				chunk_size = 8
				origin = "lin2"
				cow_store = "snap"
			}
		}
		r1 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa8"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "raid1"
				device_count = 2
				region_size = 1024
				raids = ["r1_rmeta_0", "r1_rimage_0", "r1_rmeta_1", "r1_rimage_1"]
			}
		}
		r1_rmeta_0 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab0"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 11]
			}
		}
		r1_rimage_0 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab1"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 12]
			}
		}
		r1_rmeta_1 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab2"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv1", 13]
			}
		}
		r1_rimage_1 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaab3"
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 1
				type = "striped"
				stripe_count = 1
				stripes = ["pv1", 14]
			}
		}
`

// stripeRange is one area of a segment as lvs prints it.
type stripeRange struct {
	file     int // index in files
	from, to int64
}

// ranges parses seg_pe_ranges ("/dev/loop0:0-2 /dev/loop1:0-1").
func (r *realVG) ranges(s segRow) ([]stripeRange, error) {
	var out []stripeRange
	for _, f := range strings.Fields(s.Ranges) {
		dev, pe, ok := strings.Cut(f, ":")
		from, to, ok2 := strings.Cut(pe, "-")
		i := -1
		for k, l := range r.loops {
			if l == dev {
				i = k
			}
		}
		a, err1 := strconv.ParseInt(from, 10, 64)
		b, err2 := strconv.ParseInt(to, 10, 64)
		if !ok || !ok2 || i < 0 || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("lvs: %s: bad range %q", s.Name, f)
		}
		out = append(out, stripeRange{i, a, b})
	}
	return out, nil
}

// readable reports whether lvs describes a segment the package reads.
func (s segRow) readable() bool {
	return (s.Segtype == "linear" || s.Segtype == "striped") && s.Attr[0] != 's'
}

// writePatterns writes pattern data into the extents of every linear and
// striped LV, as the lvs and pvs reports map them (the oracle).
func (r *realVG) writePatterns() error {
	es := r.vg.ExtentSize
	for _, s := range r.segs {
		if !s.readable() {
			continue
		}
		rs, err := r.ranges(s)
		if err != nil {
			return err
		}
		name := strings.Trim(s.Name, "[]")
		n := int64(len(rs))
		per := s.Count / n
		chunk := s.StripeSize
		if n == 1 {
			chunk = per * es
		}
		for c := int64(0); c < s.Count*es/chunk; c++ {
			st := rs[c%n]
			if st.to-st.from+1 != per {
				return fmt.Errorf("lvs: %s: range %v is not %d extents", s.Name, st, per)
			}
			buf := make([]byte, chunk)
			pattern(name, s.Start*es+c*chunk, buf)
			f, err := os.OpenFile(r.files[st.file], os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteAt(buf, r.pvs[st.file].PEStart+st.from*es+(c/n)*chunk)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// openReal reads the PVs of the real volume group.
func openReal(t *testing.T, r *realVG) []*PV {
	t.Helper()
	var pvs []*PV
	for _, name := range r.files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		st, _ := f.Stat()
		if !Probe(f, st.Size()) {
			t.Fatalf("%s: Probe false", name)
		}
		pv, err := ReadPV(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		pvs = append(pvs, pv)
	}
	return pvs
}

// TestReal compares what the package reads of a volume group made by
// lvm2 with what pvs, vgs and lvs report, and reads back the pattern
// written into each linear and striped LV's extents.
func TestReal(t *testing.T) {
	t.Parallel()
	r := needLVM(t)
	if !r.wrapped {
		t.Error("the metadata never wrapped around its area: the wrapped read is not tested")
	}
	if !r.thinLV {
		t.Log("lvcreate cannot make thin LVs without device-mapper: the thin pool, thin LV, snapshot and RAID1 LV were written with vgcfgrestore")
	}
	t.Logf("lvm2 built the volume group in %v; the metadata wrapped after %d more changes", r.elapsed.Round(time.Millisecond), r.changes)
	pvs := openReal(t, r)
	for i, pv := range pvs {
		w := r.pvs[i]
		if pv.UUID != w.UUID || pv.Size != w.DevSize || pv.VG == nil || pv.key != fmt.Sprintf("pv%d", i) || pv.peStart != w.PEStart {
			t.Errorf("pv %d: %+v, key %s, pe_start %d; pvs says %+v", i, pv, pv.key, pv.peStart, w)
		}
	}
	gs := Group(pvs)
	if len(gs) != 1 || len(gs[0].Missing) != 0 {
		t.Fatalf("Group: %+v", gs)
	}
	vg := gs[0]
	m := vg.Metadata
	if m.Name != r.vg.Name || m.ID != r.vg.UUID || m.Seqno != r.vg.Seqno || m.ExtentSize != r.vg.ExtentSize || len(m.PVs) != r.vg.PVCount {
		t.Errorf("vg: %s %s %d %d %d; vgs says %+v", m.Name, m.ID, m.Seqno, m.ExtentSize, len(m.PVs), r.vg)
	}
	for i, ref := range m.PVs {
		if ref.ID != r.pvs[i].UUID || ref.PEStart != r.pvs[i].PEStart || ref.PECount != r.pvs[i].PECount {
			t.Errorf("pv ref %d: %+v; pvs says %+v", i, ref, r.pvs[i])
		}
	}
	// The LVs lvs lists (it hides the internal snapshotN LVs).
	byName := map[string][]segRow{}
	var names []string
	for _, s := range r.segs {
		if _, ok := byName[s.Name]; !ok {
			names = append(names, s.Name)
		}
		byName[s.Name] = append(byName[s.Name], s)
	}
	var got []string
	for _, lv := range m.LVs {
		if lv.Segments[0].Type == "snapshot" {
			continue
		}
		name := lv.Name
		if !lv.Visible {
			name = "[" + name + "]"
		}
		got = append(got, name)
	}
	sort.Strings(names)
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("LVs %v; lvs lists %v", got, names)
	}
	for _, name := range names {
		rows := byName[name]
		lv := vg.LV(strings.Trim(name, "[]"))
		if lv == nil {
			continue
		}
		wantType := rows[0].Segtype
		if rows[0].Attr[0] == 's' {
			wantType = "snapshot"
		}
		if lv.ID != rows[0].UUID || lv.Size != rows[0].Size || lv.Type != wantType || lv.Readable != rows[0].readable() || len(lv.Segments) != len(rows) {
			t.Errorf("%s: %s %d %s readable=%v %d segments; lvs says %+v", name, lv.ID, lv.Size, lv.Type, lv.Readable, len(lv.Segments), rows)
			continue
		}
		for i, s := range rows {
			seg := lv.Segments[i]
			if seg.StartExtent != s.Start || seg.ExtentCount != s.Count || seg.Type != s.Segtype || seg.StripeSize != s.StripeSize && s.Stripes > 1 {
				t.Errorf("%s segment %d: %+v; lvs says %+v", name, i, seg, s)
			}
			if !s.readable() {
				continue
			}
			rs, err := r.ranges(s)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != len(seg.Stripes) {
				t.Errorf("%s segment %d: %d stripes; lvs says %s", name, i, len(seg.Stripes), s.Ranges)
				continue
			}
			for k, st := range seg.Stripes {
				if st.PV != fmt.Sprintf("pv%d", rs[k].file) || st.StartExtent != rs[k].from {
					t.Errorf("%s segment %d stripe %d: %+v; lvs says %s", name, i, k, st, s.Ranges)
				}
			}
		}
		if !lv.Readable {
			if _, err := vg.Open(lv.Name); !errors.Is(err, ErrUnsupported) {
				t.Errorf("Open(%s) = %v, want ErrUnsupported", name, err)
			}
			continue
		}
		v, err := vg.Open(lv.Name)
		if err != nil {
			t.Errorf("Open(%s): %v", name, err)
			continue
		}
		checkContents(t, name, v)
	}
	for name, why := range map[string]string{"thin": "thin volume", "pool": "thin pool"} {
		if lv := vg.LV(name); lv == nil || lv.Readable || lv.Why != why {
			t.Errorf("%s: %+v", name, lv)
		}
	}
}

// checkContents reads v whole and at random offsets, concurrently, and
// compares with the pattern of name.
func checkContents(t *testing.T, name string, v Volume) {
	t.Helper()
	name = strings.Trim(name, "[]")
	want := make([]byte, v.Size())
	pattern(name, 0, want)
	got := make([]byte, v.Size())
	if n, err := v.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
		t.Errorf("%s: ReadAt whole = %d, %v", name, n, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: contents differ", name)
		return
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(seed))
			for i := 0; i < 20; i++ {
				off := rnd.Int63n(v.Size())
				p := make([]byte, rnd.Intn(200<<10)+1)
				n, err := v.ReadAt(p, off)
				if off+int64(len(p)) > v.Size() {
					if err != io.EOF || int64(n) != v.Size()-off {
						t.Errorf("%s: ReadAt(%d, %d) past the end = %d, %v", name, off, len(p), n, err)
						return
					}
				} else if err != nil || n != len(p) {
					t.Errorf("%s: ReadAt(%d, %d) = %d, %v", name, off, len(p), n, err)
					return
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					t.Errorf("%s: ReadAt(%d, %d): contents differ", name, off, len(p))
					return
				}
			}
		}(int64(g))
	}
	wg.Wait()
}

// TestRealMissingPV reads the group from its first PV only: the LVs on it
// read, the striped one names the missing PV.
func TestRealMissingPV(t *testing.T) {
	t.Parallel()
	r := needLVM(t)
	pvs := openReal(t, r)
	gs := Group(pvs[:1])
	if len(gs) != 1 || len(gs[0].Missing) != 1 || gs[0].Missing[0].ID != r.pvs[1].UUID {
		t.Fatalf("Group: %+v", gs)
	}
	v, err := gs[0].Open("lin")
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, "lin", v)
	if _, err := gs[0].Open("str"); !errors.Is(err, ErrMissingPV) || !strings.Contains(err.Error(), r.pvs[1].UUID) || !strings.Contains(err.Error(), `lv "str"`) {
		t.Errorf("Open(str) = %v", err)
	}
}

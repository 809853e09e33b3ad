package vma_test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// fixChecksums recomputes the header MD5 and every extent MD5 it can find,
// so that mutated input reaches the checks behind them.
func fixChecksums(b []byte) {
	if len(b) < 12288 {
		return
	}
	hs := int(binary.BigEndian.Uint32(b[56:]))
	if hs < 12288 || hs > len(b) {
		return
	}
	fixHeaderMD5(b[:hs])
	for off := hs; off+512 <= len(b); {
		e := b[off : off+512]
		fixExtentMD5(e)
		off += 512 + int(binary.BigEndian.Uint16(e[6:]))*4096
	}
}

// fuzzAllocBound is what reading any archive may allocate besides a few
// times its own size: the header (at most 64 MiB) and the duplicate
// tracking pages (at most 2^16 partial pages of 512 bytes).
const fuzzAllocBound = 160 << 20

func FuzzReader(f *testing.F) {
	f.Add(writeArchive(f, []testDev{{Name: "drive-scsi0", Data: genDisk(1, 200000, "mixed")}}, []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 1\n")}}, "shuffle", 1), false)
	f.Add(writeArchive(f, []testDev{{Name: "a", Data: genDisk(2, 5000, "data")}, {Name: vma.VMStateName, Data: genDisk(3, 70000, "mixed")}}, nil, "interleave", 1), true)
	f.Add(cat(testHeader(f), extent(complete...)), true)
	if os.Getenv("CI") == "true" || fileExists(filepath.Join(testutil.ModuleRoot(f), "..", "shared", "testdata", "vma")) {
		dir := testutil.GoldenDir(f)
		for _, name := range []string{"case1.vma", "case2.vma", "case6-config-only.vma"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, false)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix {
			data = bytes.Clone(data)
			fixChecksums(data)
		}
		// Memory: parsing the whole input allocates a bounded amount,
		// whatever the input declares (sizes, cluster numbers, headers).
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		readErr := readToEnd(data)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > fuzzAllocBound+8*uint64(len(data)) {
			t.Fatalf("reading %d bytes allocated %d MiB (%v)", len(data), alloc>>20, readErr)
		}
		rd, err := vma.NewReader(bytes.NewReader(data))
		if err != nil {
			checkErr(t, err)
			return
		}
		h := rd.Header()
		// Names that Proxmox's reader accepts but no writer should produce
		// ("", ".", "..", with '/') are exposed as they are; the rewrite
		// below only applies to archives without them.
		for _, c := range h.Configs {
			if !writableName(c.Name) {
				return
			}
		}
		for _, d := range h.Devices {
			if !writableName(d.Name) {
				return
			}
		}
		// Whatever reads back cleanly must survive a rewrite with the same
		// clusters in the same order, and read back identically.
		var out bytes.Buffer
		w := vma.NewWriter(&out, vma.WithUUID(h.UUID), vma.WithCTime(h.CTime))
		for _, c := range h.Configs {
			if err := w.AddConfig(c.Name, c.Data); err != nil {
				t.Fatalf("config %q read but not writable: %v", c.Name, err)
			}
		}
		for _, d := range h.Devices {
			if _, err := w.AddDevice(d.Name, d.Size); err != nil {
				t.Fatalf("device %+v read but not writable: %v", d, err)
			}
		}
		ids := map[int]int{}
		for i, d := range h.Devices {
			ids[d.ID] = i + 1
		}
		buf := make([]byte, vma.ClusterSize)
		var sums [][16]byte
		for {
			c, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				checkErr(t, err)
				return
			}
			if len(c.Data) != 4096*popcount(c.Mask) {
				t.Fatalf("cluster data %d bytes for mask %016b", len(c.Data), c.Mask)
			}
			c.Expand(buf)
			clip(buf, c)
			sums = append(sums, md5.Sum(buf))
			if err := w.WriteCluster(ids[c.Device.ID], c.Index, buf); err != nil {
				if c.Device.IsVMState() && c.Index >= c.Device.Clusters() {
					return // vmstate past its size: readable, not writable
				}
				t.Fatalf("cluster %d of %s read but not writable: %v", c.Index, c.Device.Name, err)
			}
		}
		if err := w.Close(); err != nil {
			if errors.Is(err, vma.ErrIncomplete) { // an incomplete vmstate stream
				return
			}
			t.Fatal(err)
		}
		rd2, err := vma.NewReader(&out)
		if err != nil {
			t.Fatalf("rewritten archive unreadable: %v", err)
		}
		for i := 0; ; i++ {
			c, err := rd2.Next()
			if err == io.EOF {
				if i != len(sums) {
					t.Fatalf("rewritten archive has %d clusters, want %d", i, len(sums))
				}
				break
			}
			if err != nil {
				t.Fatalf("rewritten archive: %v", err)
			}
			c.Expand(buf)
			if md5.Sum(buf) != sums[i] {
				t.Fatalf("cluster %d differs after the rewrite", i)
			}
		}
	})
}

// clip zeroes the bytes of buf past the device's end, which the reader may
// return (junk from writers before 2020) and the writer never stores.
func clip(buf []byte, c vma.Cluster) {
	if end := c.Device.Size - c.Index*vma.ClusterSize; end < vma.ClusterSize {
		clear(buf[max(end, 0):])
	}
}

func popcount(m uint16) int {
	n := 0
	for ; m != 0; m &= m - 1 {
		n++
	}
	return n
}

func checkErr(t *testing.T, err error) {
	var fe *vma.FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("error is not a *FormatError: %v", err)
	}
	for _, k := range []error{vma.ErrCorrupt, vma.ErrChecksum, vma.ErrUnsupported, vma.ErrIncomplete, vma.ErrNotVMA} {
		if errors.Is(err, k) {
			return
		}
	}
	t.Fatalf("error wraps no sentinel: %v", err)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func writableName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.Contains(n, "/")
}

// FuzzSalvage: in salvage mode, whatever one damaged byte past the header
// does, reading ends with io.EOF (damage is recorded and skipped, never
// fatal), and every cluster of every extent the damage is not in comes back
// exactly, at most one (the one holding the damaged byte) differing.
func FuzzSalvage(f *testing.F) {
	f.Add(writeArchive(f, []testDev{{Name: "drive-scsi0", Data: genDisk(1, 300000, "mixed")}}, nil, "seq", 1), 70000, byte(1))
	f.Add(writeArchive(f, []testDev{{Name: "a", Data: genDisk(2, 65536*70, "data")}, {Name: "b", Data: genDisk(3, 70000, "mixed")}}, nil, "interleave", 1), 20000, byte(0x80))
	f.Add(writeArchive(f, []testDev{{Name: "a", Data: genDisk(4, 65536*130, "mixed")}}, nil, "runs", 2), 3814450, byte(0x10))
	f.Fuzz(func(t *testing.T, data []byte, at int, x byte) {
		orig, err := salvageClusters(data, -1)
		if err != nil || len(orig.clusters) == 0 {
			return // only intact archives are damaged here
		}
		data = bytes.Clone(data)
		if at < orig.headerSize || at >= len(data) || x == 0 {
			return
		}
		data[at] ^= x
		got, err := salvageClusters(data, at)
		if err != nil {
			t.Fatalf("salvage failed: %v", err)
		}
		for _, d := range got.damage {
			if d.Offset < 0 || d.Length < 0 || d.Offset+d.Length > int64(len(data)) {
				t.Fatalf("damage %+v outside the %d-byte input", d, len(data))
			}
		}
		// The extent holding the damaged byte.
		hit := -1
		for i, e := range orig.extents {
			if int64(at) >= e[0] && int64(at) < e[1] {
				hit = i
			}
		}
		differ := 0
		for key, c := range orig.clusters {
			g, ok := got.clusters[key]
			if !ok {
				if c.extent != hit {
					t.Fatalf("cluster %v of an undamaged extent (%d; damage in %d) was lost", key, c.extent, hit)
				}
				continue
			}
			if !bytes.Equal(g.data, c.data) {
				differ++
				if c.extent != hit {
					t.Fatalf("cluster %v of an undamaged extent came back different", key)
				}
			}
		}
		if differ > 1 {
			t.Fatalf("%d clusters differ after one damaged byte", differ)
		}
	})
}

type salvaged struct {
	headerSize int
	clusters   map[[2]int64]salvagedCluster // (device id, cluster)
	extents    [][2]int64                   // [start, end) of every extent
	damage     []vma.Damage
}

type salvagedCluster struct {
	data   []byte
	extent int
}

// salvageRead reads raw in salvage mode to its end and returns every
// cluster expanded, by (device id, cluster), and the reader for its reports.
func salvageRead(t testing.TB, raw []byte) (map[[2]int64][]byte, *vma.Reader) {
	t.Helper()
	rd, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	rd.Salvage()
	out := map[[2]int64][]byte{}
	var ex expander
	for {
		c, err := rd.Next()
		if err == io.EOF {
			return out, rd
		}
		if err != nil {
			t.Fatalf("salvage failed: %v", err)
		}
		out[[2]int64{int64(c.Device.ID), c.Index}] = ex.expand(c)
	}
}

// expander expands clusters into new buffers, but for those all zero,
// which share one: a disk of 4096 zero clusters costs 256 MiB otherwise.
type expander struct{ spare []byte }

var zeroCluster = make([]byte, vma.ClusterSize)

func (x *expander) expand(c vma.Cluster) []byte {
	if x.spare == nil {
		x.spare = make([]byte, vma.ClusterSize)
	}
	b := x.spare
	c.Expand(b) // the spare is kept only while all zero, as a new one is
	if zero.IsZero(b) {
		return zeroCluster
	}
	x.spare = nil
	return b
}

// salvageClusters reads an archive in salvage mode (unless damaged < 0:
// then strictly) and returns every cluster expanded.
func salvageClusters(data []byte, damaged int) (*salvaged, error) {
	rd, err := vma.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if damaged >= 0 {
		rd.Salvage()
	}
	s := &salvaged{headerSize: rd.Header().Size, clusters: map[[2]int64]salvagedCluster{}}
	var ex expander
	for {
		e, err := rd.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		end := e.Offset + int64(len(e.Data)) + vma.ExtentHeaderSize
		s.extents = append(s.extents, [2]int64{e.Offset, end})
		for _, c := range e.Clusters {
			s.clusters[[2]int64{int64(c.Device.ID), c.Index}] = salvagedCluster{ex.expand(c), len(s.extents) - 1}
		}
	}
	if damaged >= 0 {
		s.damage = rd.Damaged()
	}
	return s, nil
}

// FuzzSalvageCompressed: salvage over a compressed archive that is cut
// short or has a damaged byte ends with io.EOF and the damage recorded,
// never fatal; when it was only cut, every cluster it returns is the one
// the whole input gives (a cut stream decompresses to a prefix).
func FuzzSalvageCompressed(f *testing.F) {
	arc := writeArchive(f, []testDev{{Name: "a", Data: testutil.GenDisk(5, 65536*20, "text")}}, nil, "seq", 1) // compresses to a few KB
	for _, comp := range []string{compress.Zstd, compress.Gzip} {
		var b bytes.Buffer
		w, err := compress.NewWriter(&b, comp, 1)
		if err != nil {
			f.Fatal(err)
		}
		w.Write(arc)
		w.Close()
		f.Add(b.Bytes(), b.Len()/2, -1, byte(0))
		f.Add(b.Bytes(), b.Len(), b.Len()/3, byte(4))
	}
	f.Fuzz(func(t *testing.T, z []byte, cut, at int, x byte) {
		if cut < 0 || cut > len(z) {
			return
		}
		whole, _ := salvageCompressed(t, z)
		z = bytes.Clone(z[:cut])
		flipped := at >= 0 && at < len(z) && x != 0
		if flipped {
			z[at] ^= x
		}
		got, ok := salvageCompressed(t, z)
		if !ok || flipped || whole == nil {
			return
		}
		for key, c := range got {
			if w, ok := whole[key]; ok && !bytes.Equal(w, c) {
				t.Fatalf("cluster %v of the cut input differs from the whole input's", key)
			}
		}
	})
}

// salvageCompressed reads a compressed archive in salvage mode to the end
// (which must come, without an error) and returns its clusters; ok is
// false if not even the header could be read.
func salvageCompressed(t *testing.T, z []byte) (map[[2]int64][]byte, bool) {
	dr, _, err := compress.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, false
	}
	defer dr.Close()
	rd, err := vma.NewReader(dr)
	if err != nil {
		return nil, false
	}
	rd.Salvage()
	out := map[[2]int64][]byte{}
	for {
		c, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("salvage failed: %v", err)
		}
		if len(out) < 4096 {
			b := make([]byte, vma.ClusterSize)
			c.Expand(b)
			out[[2]int64{int64(c.Device.ID), c.Index}] = b
		}
	}
	return out, true
}

// FuzzOpen: vma.Open accepts exactly what the stream reader accepts, with
// the same error word for word, and then every device reads at random as
// the stream reconstructs it. Its index stays within its limit.
func FuzzOpen(f *testing.F) {
	f.Add(writeArchive(f, []testDev{{Name: "drive-scsi0", Data: genDisk(1, 200000, "mixed")}}, nil, "shuffle", 1), false)
	f.Add(writeArchive(f, []testDev{{Name: "a", Data: genDisk(2, 140000, "mixed")}, {Name: "b", Data: genDisk(4, 70000, "mixed")}}, nil, "runs", 3), true)
	f.Add(writeArchive(f, []testDev{{Name: "a", Data: genDisk(2, 5000, "data")}, {Name: vma.VMStateName, Data: genDisk(3, 70000, "mixed")}}, nil, "interleave", 1), true)
	f.Add(cat(testHeader(f), extent(complete...)), true)
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix {
			data = bytes.Clone(data)
			fixChecksums(data)
		}
		a, oerr := vma.Open(bytes.NewReader(data), int64(len(data)), vma.WithIndexLimit(1<<20))
		if errors.Is(oerr, vma.ErrIndexLimit) {
			return
		}
		want, serr := streamContent(data)
		switch {
		case (oerr == nil) != (serr == nil):
			t.Fatalf("Open: %v; stream: %v", oerr, serr)
		case oerr != nil:
			if oerr.Error() != serr.Error() {
				t.Fatalf("Open: %v\nstream: %v", oerr, serr)
			}
			return
		}
		if a.IndexBytes() > 1<<20 {
			t.Fatalf("index of %d bytes over its limit", a.IndexBytes())
		}
		for _, d := range a.Devices() {
			w := want[d.Device().Name]
			got := make([]byte, len(w))
			if n, err := d.ReadAt(got, 0); n != len(w) || (err != nil && err != io.EOF) {
				t.Fatalf("%s: read %d of %d: %v", d.Device().Name, n, len(w), err)
			}
			if !bytes.Equal(got, w) {
				t.Fatalf("%s: random access differs from the stream", d.Device().Name)
			}
			// The extent map never calls stored data zero.
			for pos := int64(0); pos < int64(len(w)); {
				e, err := d.Region(pos, int64(len(w))-pos)
				if err != nil || e.Length <= 0 {
					t.Fatalf("%s: Extent(%d) = %+v, %v", d.Device().Name, pos, e, err)
				}
				if e.Zero && !bytes.Equal(w[pos:pos+e.Length], make([]byte, e.Length)) {
					t.Fatalf("%s: extent %+v called zero", d.Device().Name, e)
				}
				pos += e.Length
			}
		}
	})
}

// streamContent reads an archive with the stream reader and returns every
// device's content (devices of at most 16 MiB; larger ones are skipped).
func streamContent(data []byte) (map[string][]byte, error) {
	rd, err := vma.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, d := range rd.Header().Devices {
		if d.Size <= 16<<20 {
			out[d.Name] = make([]byte, d.Size)
		}
	}
	buf := make([]byte, vma.ClusterSize)
	for {
		c, err := rd.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b := out[c.Device.Name]
		if b == nil || c.Index*vma.ClusterSize >= int64(len(b)) {
			continue
		}
		c.Expand(buf)
		copy(b[c.Index*vma.ClusterSize:], buf)
	}
}

// TestSalvageFullPage: the reader tracks seen clusters in pages of 4096
// and keeps a full page as one shared marker. When the extent that filled a
// page turns out damaged (its last slot names a cluster seen before, found
// only after the others were marked; or the archive is cut inside it),
// salvage must forget exactly the clusters it has not delivered, full page
// or not: they are reported missing, everything else comes back intact.
func TestSalvageFullPage(t *testing.T) {
	const n = 4096 + 100
	data := make([]byte, n*vma.ClusterSize)
	copy(data[4060*vma.ClusterSize:], genDisk(6, 50*vma.ClusterSize, "data"))
	arc := writeArchive(t, []testDev{{Name: "drive-scsi0", Data: data}}, nil, "seq", 1)
	strict, err := salvageClusters(arc, -1)
	if err != nil {
		t.Fatal(err)
	}
	var dev int64
	for k := range strict.clusters {
		dev = k[0]
	}
	filler := strict.clusters[[2]int64{dev, 4095}].extent // the extent that fills page 0
	ext := strict.extents[filler]
	var inFiller []int64
	for k, c := range strict.clusters {
		if c.extent == filler {
			inFiller = append(inFiller, k[1])
		}
	}
	slices.Sort(inFiller)
	if ext[1]-ext[0] < 4*vma.ClusterSize || len(inFiller) < 2 {
		t.Fatalf("extent %d (%v) holds clusters %v: not the layout this test needs", filler, ext, inFiller)
	}
	mid := ext[0] + vma.ExtentHeaderSize + (ext[1]-ext[0]-vma.ExtentHeaderSize)/2

	read := func(b []byte) (map[[2]int64][]byte, []vma.MissingRanges) {
		got, rd := salvageRead(t, b)
		return got, rd.MissingClusters()
	}
	check := func(name string, got map[[2]int64][]byte, miss []vma.MissingRanges, lost func(c int64) bool) {
		t.Helper()
		var want []vma.Range
		total := int64(0)
		for c := int64(0); c < n; c++ {
			if !lost(c) {
				g, ok := got[[2]int64{dev, c}]
				if !ok {
					t.Errorf("%s: cluster %d of an intact extent not returned", name, c)
				} else if !bytes.Equal(g, data[c*vma.ClusterSize:(c+1)*vma.ClusterSize]) {
					t.Errorf("%s: cluster %d of an intact extent differs", name, c)
				}
				continue
			}
			total++
			if len(want) > 0 && want[len(want)-1].Last == c-1 {
				want[len(want)-1].Last = c
			} else {
				want = append(want, vma.Range{First: c, Last: c})
			}
		}
		if len(miss) != 1 || miss[0].Total != total || !slices.Equal(miss[0].Ranges, want) {
			t.Errorf("%s: missing %+v, want %v (%d clusters)", name, miss, want, total)
		}
	}

	// The filler's last slot made a duplicate of cluster 0: the extent
	// fails after marking the others, and is undone as a whole.
	dup := bytes.Clone(arc)
	last := -1
	for i := range 59 {
		if dup[ext[0]+40+int64(i)*8+3] != 0 { // dev_id
			last = i
		}
	}
	binary.BigEndian.PutUint32(dup[ext[0]+40+int64(last)*8+4:], 0)
	fixChecksums(dup)
	got, miss := read(dup)
	check("duplicate slot", got, miss, func(c int64) bool { return slices.Contains(inFiller, c) })

	// Cut mid-extent: the clusters whose data is wholly before the cut are
	// kept, the rest of the archive is missing.
	got, miss = read(arc[:mid])
	first := int64(-1) // the first slot whose stored blocks run past the cut
	end := ext[0] + vma.ExtentHeaderSize
	for i := range int64(59) {
		bi := binary.BigEndian.Uint64(arc[ext[0]+40+i*8:])
		if bi>>32&0xff == 0 {
			continue
		}
		end += int64(bits.OnesCount16(uint16(bi>>48))) * vma.BlockSize
		if end > mid {
			first = int64(uint32(bi))
			break
		}
	}
	if first < 0 || first > 4095 || first == inFiller[0] {
		t.Fatalf("cut at %d: first cluster cut is %d; the layout this test needs has it past the filler's first (%v) and in page 0", mid, first, inFiller)
	}
	check("cut", got, miss, func(c int64) bool { return c >= first })
}

// TestSalvageShift: bytes inserted into or lost from an extent's data are
// invisible to its MD5 (which covers the header only) and show as the next
// header out of place. Lost bytes: the extent is reported lost, not
// delivered shifted, and the next extent (whose header then starts inside
// it) comes back. Inserted bytes (or garbage after an extent: the same to
// a reader): the extent is delivered and listed by Suspect. A damaged next
// header is neither: nothing is suspect.
func TestSalvageShift(t *testing.T) {
	data := genDisk(6, 300*vma.ClusterSize, "data")
	arc := writeArchive(t, []testDev{{Name: "drive-scsi0", Data: data}}, nil, "seq", 1)
	strict, err := salvageClusters(arc, -1)
	if err != nil {
		t.Fatal(err)
	}
	ext := strict.extents[2]
	var in2 []int64
	for k, c := range strict.clusters {
		if c.extent == 2 {
			in2 = append(in2, k[1])
		}
	}
	slices.Sort(in2)
	mid := int(ext[0]) + vma.ExtentHeaderSize + 1000
	for _, tc := range []struct {
		name    string
		raw     []byte
		lost    bool // extent 2 lost, else delivered
		suspect int64
	}{
		{"1 byte lost", slices.Concat(arc[:mid], arc[mid+1:]), true, 0},
		{"600 bytes lost", slices.Concat(arc[:mid], arc[mid+600:]), true, 0},
		{"1 byte inserted", slices.Concat(arc[:mid], []byte{0}, arc[mid:]), false, 1},
		{"600 bytes inserted", slices.Concat(arc[:mid], make([]byte, 600), arc[mid:]), false, 600},
		{"garbage after the extent", slices.Concat(arc[:ext[1]], []byte("junk"), arc[ext[1]:]), false, 4},
		{"next header damaged", func() []byte {
			b := bytes.Clone(arc)
			b[ext[1]+10] ^= 1 // in its UUID: it no longer starts like a header
			return b
		}(), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rd := salvageRead(t, tc.raw)
			for k, c := range strict.clusters {
				g, ok := got[k]
				switch {
				case c.extent == 2 && tc.lost:
					if ok {
						t.Errorf("cluster %d of the shortened extent delivered", k[1])
					}
				case c.extent == 2 && tc.suspect > 0 && tc.name != "garbage after the extent":
					// shifted: delivered, and listed below
				case c.extent == 3 && tc.name == "next header damaged":
					// its header is the damaged one
				case !ok:
					t.Errorf("cluster %d of extent %d lost", k[1], c.extent)
				case !bytes.Equal(g, c.data):
					t.Errorf("cluster %d of extent %d differs", k[1], c.extent)
				}
			}
			var miss []vma.Range
			if m := rd.MissingClusters(); len(m) == 1 {
				miss = m[0].Ranges
			}
			if tc.lost && !slices.Equal(miss, []vma.Range{{First: in2[0], Last: in2[len(in2)-1]}}) {
				t.Errorf("missing %v, want extent 2's clusters %d-%d", miss, in2[0], in2[len(in2)-1])
			}
			sus := rd.Suspect()
			if tc.suspect == 0 {
				if len(sus) != 0 {
					t.Errorf("suspect %+v, want none", sus)
				}
				return
			}
			if len(sus) != 1 || sus[0].Offset != ext[0] || sus[0].Gap != tc.suspect || len(sus[0].Clusters) != 1 ||
				!slices.Equal(sus[0].Clusters[0].Ranges, []vma.Range{{First: in2[0], Last: in2[len(in2)-1]}}) {
				t.Errorf("suspect %+v, want extent 2 at %d (clusters %d-%d), gap %d", sus, ext[0], in2[0], in2[len(in2)-1], tc.suspect)
			}
		})
	}

	// Extents of zero clusters are headers alone, 512 bytes apart: with one
	// of them damaged the next valid header is on the grid, 512 bytes on,
	// and the extent before is not suspect.
	clear(data[120*vma.ClusterSize : 260*vma.ClusterSize])
	arc = writeArchive(t, []testDev{{Name: "drive-scsi0", Data: data}}, nil, "seq", 1)
	strict, err = salvageClusters(arc, -1)
	if err != nil {
		t.Fatal(err)
	}
	var bare [2]int64 // an extent of zero clusters after one that stores data
	for i := 1; i+1 < len(strict.extents); i++ {
		if e := strict.extents[i]; e[1]-e[0] == vma.ExtentHeaderSize && strict.extents[i-1][1]-strict.extents[i-1][0] > vma.ExtentHeaderSize {
			bare = e
			break
		}
	}
	if bare[1] == 0 {
		t.Fatal("no extent of zero clusters after a stored one: not the layout this test needs")
	}
	b := bytes.Clone(arc)
	b[bare[0]+10] ^= 1 // in its UUID
	if _, rd := salvageRead(t, b); len(rd.Suspect()) != 0 {
		t.Errorf("a damaged header of zero clusters: suspect %+v, want none", rd.Suspect())
	}
}

// FuzzSalvageShift: bytes inserted at or removed from one place of an
// intact archive cost salvage only the extents they touch: every cluster
// of every other extent comes back, exactly; and bytes inserted inside an
// extent's data (not a multiple of 512, within the look-ahead) mark that
// extent suspect.
func FuzzSalvageShift(f *testing.F) {
	arc := writeArchive(f, []testDev{{Name: "a", Data: genDisk(2, 65536*70, "data")}, {Name: "b", Data: genDisk(3, 70000, "mixed")}}, nil, "interleave", 1)
	f.Add(arc, 20000, int16(3))
	f.Add(arc, 3814400+700, int16(-5))
	f.Add(arc, 3814400, int16(100))
	f.Add(writeArchive(f, []testDev{{Name: "drive-scsi0", Data: genDisk(1, 300000, "mixed")}}, nil, "seq", 1), 13000, int16(-1))
	f.Fuzz(func(t *testing.T, data []byte, at int, shift int16) {
		orig, err := salvageClusters(data, -1)
		if err != nil || len(orig.clusters) == 0 || at < orig.headerSize || at >= len(data) || shift == 0 {
			return
		}
		var damaged []byte
		lo, hi := int64(at), int64(at)+1 // bytes of the original touched
		if shift > 0 {
			damaged = slices.Concat(data[:at], bytes.Repeat([]byte{0x5a}, int(shift)), data[at:])
		} else {
			hi = min(int64(at)-int64(shift), int64(len(data)))
			damaged = slices.Concat(data[:lo], data[hi:])
		}
		got, rd := salvageRead(t, damaged)
		touched := func(e int) bool {
			x := orig.extents[e]
			// An insertion at an extent's first byte lands after the one
			// before it, which that one cannot tell from its own data.
			return x[0] < hi && lo < x[1] || shift > 0 && x[1] == lo
		}
		for key, c := range orig.clusters {
			if touched(c.extent) {
				continue
			}
			g, ok := got[key]
			if !ok {
				t.Fatalf("cluster %v of extent %d lost (damage at %d-%d)", key, c.extent, lo, hi)
			}
			if !bytes.Equal(g, c.data) {
				t.Fatalf("cluster %v of extent %d differs (damage at %d-%d)", key, c.extent, lo, hi)
			}
		}
		if shift > 0 && int(shift)%vma.ExtentHeaderSize != 0 {
			for e, x := range orig.extents {
				n := x[1] - x[0] - vma.ExtentHeaderSize
				if x[0]+vma.ExtentHeaderSize < lo && lo < x[1] && e+1 < len(orig.extents) && int64(shift) <= min(n, 64<<10) && n > 0 {
					found := false
					for _, s := range rd.Suspect() {
						found = found || s.Offset == x[0]
					}
					if !found {
						t.Fatalf("%d bytes inserted at %d inside extent %d's data: not suspect (%+v)", shift, lo, e, rd.Suspect())
					}
				}
			}
		}
	})
}

// failingReader returns r's bytes up to n, then err once, then io.EOF (as
// a reader whose errors are not sticky).
type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		err := f.err
		f.err = io.EOF
		return 0, err
	}
	k, err := f.r.Read(p[:min(len(p), f.n)])
	f.n -= k
	return k, err
}

// TestSalvageInputFailsAhead: an input that fails just after an extent,
// where salvage reads ahead to check the next header, is reported as
// the input failing there, not taken for the end of the archive.
func TestSalvageInputFailsAhead(t *testing.T) {
	arc := writeArchive(t, []testDev{{Name: "drive-scsi0", Data: genDisk(3, 150*vma.ClusterSize, "data")}}, nil, "seq", 1)
	strict, err := salvageClusters(arc, -1)
	if err != nil {
		t.Fatal(err)
	}
	cut := int(strict.extents[0][1]) + 100
	boom := errors.New("the disk under the archive failed")
	rd, err := vma.NewReader(&failingReader{bytes.NewReader(arc), cut, boom})
	if err != nil {
		t.Fatal(err)
	}
	rd.Salvage()
	n := 0
	for {
		c, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strict.clusters[[2]int64{int64(c.Device.ID), c.Index}].extent != 0 {
			t.Fatalf("cluster %d delivered from past the failure", c.Index)
		}
		n++
	}
	failed := false
	for _, d := range rd.Damaged() {
		failed = failed || errors.Is(d.Err, boom)
	}
	if !failed || n == 0 {
		t.Errorf("%d clusters, damage %+v: want extent 0's clusters, then the input's failure recorded", n, rd.Damaged())
	}
}

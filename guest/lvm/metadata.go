package lvm

import (
	"fmt"
	"math"
	"strings"
)

// Metadata is a volume group's parsed metadata.
type Metadata struct {
	// Name is the volume group's name; ID its UUID as LVM prints it.
	Name, ID string
	// Seqno is the metadata's sequence number: each change adds one.
	Seqno int
	// ExtentSize is the size of one physical extent in bytes.
	ExtentSize int64
	// PVs are the physical volumes of the group, in metadata order.
	PVs []PVRef
	// LVs are the logical volumes, hidden ones included, in metadata order.
	LVs []LV
}

// PVRef is a physical volume as the volume group's metadata lists it.
type PVRef struct {
	// Key is the PV's name within the metadata ("pv0", "pv1", …); ID its
	// UUID as LVM prints it.
	Key, ID string
	// PEStart is the offset of the first extent on the PV, in bytes.
	PEStart int64
	// PECount is the number of extents on the PV.
	PECount int64
}

// LV is a logical volume.
type LV struct {
	// Name is the LV's name as stored (without the brackets lvs adds to
	// hidden LVs).
	Name string
	// ID is the LV's UUID as LVM prints it.
	ID string
	// Size is the LV's length in bytes (its extents times the extent size;
	// for a thin volume, its virtual size).
	Size int64
	// Type names the segment type(s), comma separated when they differ:
	// "linear", "striped", "thin", "thin-pool", "raid1", "mirror",
	// "snapshot", "cache", "vdo", …. The copy-on-write store of an old-style
	// snapshot has type "snapshot" (lvs reports it as "linear").
	Type string
	// Visible is set by the status flag VISIBLE; hidden sub-LVs (such as
	// pool_tdata or r1_rimage_0) are not. As lvs shows them, the internal
	// snapshotN LV of a snapshot is hidden and its copy-on-write store
	// (the snapshot's name) visible.
	Visible bool
	// Readable is set for LVs made only of linear and striped segments,
	// which Open maps onto the PVs.
	Readable bool
	// Why says why the LV is not readable ("thin volume", "raid1", …).
	Why string
	// Segments are the LV's segments in order.
	Segments []Segment

	bad error // structural damage found while parsing, reported by Open
}

// Segment is one run of an LV's logical extents.
type Segment struct {
	// StartExtent is the first logical extent of the segment in the LV;
	// ExtentCount the number of logical extents.
	StartExtent, ExtentCount int64
	// Type is the segment type: "linear" for a striped segment of one
	// stripe, else as stored ("striped", "thin", "raid1", …).
	Type string
	// StripeSize is the stripe size in bytes (striped segments of more
	// than one stripe, else 0).
	StripeSize int64
	// Stripes are the areas of linear and striped segments: the PV and
	// its first physical extent. Each stripe holds ExtentCount/len(Stripes)
	// extents.
	Stripes []Stripe

	origin, cowStore string // "snapshot" segments
}

// Stripe is one area of a segment on a physical volume.
type Stripe struct {
	// PV is the PV's key in the metadata ("pv0", …).
	PV string
	// StartExtent is the first physical extent of the area on the PV.
	StartExtent int64
}

const (
	sectorSize = 512
	// maxStripes is LVM's limit on the stripes of one segment.
	maxStripes = 128
)

// parseMetadata parses a volume group's metadata text.
func parseMetadata(text []byte) (*Metadata, error) {
	root, err := parseConfig(text)
	if err != nil {
		return nil, err
	}
	return metadataFrom(root)
}

// metadataFrom reads the volume group from a parsed metadata text: its
// first top-level section, as LVM reads it.
func metadataFrom(root *section) (*Metadata, error) {
	if len(root.children) == 0 {
		return nil, fmt.Errorf("metadata text: no volume group section: %w", errCorrupt)
	}
	vg := root.children[0]
	m := &Metadata{Name: vg.name}
	where := "volume group " + quote(vg.name)
	var ok bool
	if m.ID, ok = vg.str("id"); !ok {
		return nil, fmt.Errorf("%s: no id: %w", where, errCorrupt)
	}
	seq, ok := vg.int("seqno")
	if !ok || seq < 0 || seq > math.MaxInt32 {
		return nil, fmt.Errorf("%s: no valid seqno: %w", where, errCorrupt)
	}
	m.Seqno = int(seq)
	es, ok := vg.int("extent_size")
	if !ok || es <= 0 || es > 1<<32 {
		return nil, fmt.Errorf("%s: extent_size %d sectors out of range: %w", where, es, errCorrupt)
	}
	m.ExtentSize = es * sectorSize
	if pvs := vg.sub("physical_volumes"); pvs != nil {
		for _, s := range pvs.children {
			r := PVRef{Key: s.name}
			r.ID, _ = s.str("id")
			start, _ := s.int("pe_start")
			count, _ := s.int("pe_count")
			if start < 0 || start > math.MaxInt64/sectorSize || count < 0 || count > math.MaxInt64/m.ExtentSize {
				return nil, fmt.Errorf("%s: pv %s: pe_start %d or pe_count %d out of range: %w", where, quote(s.name), start, count, errCorrupt)
			}
			r.PEStart, r.PECount = start*sectorSize, count
			if r.PEStart > math.MaxInt64-r.PECount*m.ExtentSize {
				return nil, fmt.Errorf("%s: pv %s: extents end past 2^63: %w", where, quote(s.name), errCorrupt)
			}
			m.PVs = append(m.PVs, r)
		}
	}
	if lvs := vg.sub("logical_volumes"); lvs != nil {
		for _, s := range lvs.children {
			m.LVs = append(m.LVs, m.lvFrom(s))
		}
	}
	m.markSnapshots()
	return m, nil
}

// quote quotes a name from the metadata for an error message.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// lvFrom reads one logical volume; damage is kept in LV.bad.
func (m *Metadata) lvFrom(s *section) LV {
	lv := LV{Name: s.name}
	lv.ID, _ = s.str("id")
	if st, ok := s.get("status"); ok && st.kind == kindArray {
		for _, f := range st.array {
			if f.kind == kindString && f.str == "VISIBLE" {
				lv.Visible = true
			}
		}
	}
	var types []string
	seen := map[string]bool{}
	var next int64
	for _, c := range s.children {
		if !strings.HasPrefix(c.name, "segment") {
			continue
		}
		seg, err := m.segmentFrom(c)
		if err == nil && seg.StartExtent != next {
			err = fmt.Errorf("starts at extent %d, not %d", seg.StartExtent, next)
		}
		if err == nil && seg.ExtentCount > math.MaxInt64/m.ExtentSize-next {
			err = fmt.Errorf("ends past 2^63 bytes")
		}
		if err != nil {
			if lv.bad == nil {
				lv.bad = fmt.Errorf("%s: %w: %w", c.name, err, errCorrupt)
			}
			continue
		}
		next += seg.ExtentCount
		lv.Segments = append(lv.Segments, seg)
		if !seen[seg.Type] {
			seen[seg.Type] = true
			types = append(types, seg.Type)
		}
	}
	lv.Size = next * m.ExtentSize
	lv.Type = strings.Join(types, ",")
	lv.Readable = true
	for _, seg := range lv.Segments {
		if seg.Type != "linear" && seg.Type != "striped" {
			lv.Readable = false
			lv.Why = why(seg.Type)
			break
		}
	}
	if lv.bad != nil {
		lv.Readable = false
		lv.Why = "corrupt metadata"
	} else if len(lv.Segments) == 0 {
		lv.Readable = false
		lv.Why = "no segments"
	}
	return lv
}

// why says why a segment type is not read.
func why(typ string) string {
	switch typ {
	case "thin":
		return "thin volume"
	case "thin-pool":
		return "thin pool"
	case "cache", "cache-pool":
		return "cache"
	case "vdo":
		return "vdo volume"
	case "vdo-pool":
		return "vdo pool"
	}
	return typ
}

// segmentFrom reads one segment.
func (m *Metadata) segmentFrom(s *section) (Segment, error) {
	var seg Segment
	var ok bool
	if seg.StartExtent, ok = s.int("start_extent"); !ok || seg.StartExtent < 0 {
		return seg, fmt.Errorf("no valid start_extent")
	}
	if seg.ExtentCount, ok = s.int("extent_count"); !ok || seg.ExtentCount <= 0 {
		return seg, fmt.Errorf("no valid extent_count")
	}
	if seg.Type, ok = s.str("type"); !ok {
		return seg, fmt.Errorf("no type")
	}
	if seg.Type == "snapshot" {
		seg.origin, _ = s.str("origin")
		seg.cowStore, _ = s.str("cow_store")
	}
	if seg.Type != "striped" {
		return seg, nil
	}
	n, ok := s.int("stripe_count")
	if !ok || n < 1 || n > maxStripes {
		return seg, fmt.Errorf("stripe_count %d out of range 1–%d", n, maxStripes)
	}
	if seg.ExtentCount%n != 0 {
		return seg, fmt.Errorf("%d extents not a multiple of %d stripes", seg.ExtentCount, n)
	}
	if n == 1 {
		seg.Type = "linear"
	} else {
		ss, ok := s.int("stripe_size")
		if !ok || ss <= 0 || ss > m.ExtentSize/sectorSize || (m.ExtentSize/sectorSize)%ss != 0 {
			return seg, fmt.Errorf("stripe_size %d sectors does not divide the extent size", ss)
		}
		seg.StripeSize = ss * sectorSize
	}
	a, ok := s.get("stripes")
	if !ok || a.kind != kindArray || int64(len(a.array)) != 2*n {
		return seg, fmt.Errorf("stripes is not %d pairs of pv and extent", n)
	}
	for i := 0; i < len(a.array); i += 2 {
		pv, pe := a.array[i], a.array[i+1]
		if pv.kind != kindString || pe.kind != kindInt || pe.num < 0 {
			return seg, fmt.Errorf("stripe %d is not a pv and an extent", i/2)
		}
		seg.Stripes = append(seg.Stripes, Stripe{PV: pv.str, StartExtent: pe.num})
	}
	return seg, nil
}

// markSnapshots marks the copy-on-write stores of old-style snapshots,
// which hold exceptions rather than the snapshot's contents, and the
// internal snapshotN LVs.
func (m *Metadata) markSnapshots() {
	byName := make(map[string]int, len(m.LVs))
	for i, lv := range m.LVs {
		if _, dup := byName[lv.Name]; !dup {
			byName[lv.Name] = i
		}
	}
	for i := range m.LVs {
		for _, seg := range m.LVs[i].Segments {
			if seg.Type != "snapshot" {
				continue
			}
			// LVM keeps VISIBLE on the internal snapshotN LV; lvs shows
			// the snapshot under the copy-on-write store's name.
			visible := m.LVs[i].Visible
			m.LVs[i].Visible = false
			if j, ok := byName[seg.cowStore]; ok && j != i {
				cow := &m.LVs[j]
				cow.Visible = cow.Visible || visible
				cow.Type = "snapshot"
				cow.Readable = false
				cow.Why = "snapshot of " + quote(seg.origin) + " (copy-on-write store)"
			}
		}
	}
}

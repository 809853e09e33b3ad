package lvm

import (
	"fmt"
	"io"
	"sort"
)

// VolumeGroup is a volume group assembled from its physical volumes.
type VolumeGroup struct {
	// Metadata is the newest metadata (highest seqno) found on the
	// group's PVs.
	Metadata *Metadata
	// Missing lists the PVs of the metadata that were not found: their
	// logical volumes' extents there cannot be read.
	Missing []PVRef

	pvs map[string]*PV // by key in Metadata
}

// Group collects the PVs of each volume group (by VG id, taking the
// highest seqno copy of the metadata), e.g. PVs found on several disks of
// one archive. A PV without metadata of its own (created with
// --metadatacopies 0) joins the group whose metadata lists it; other
// orphan PVs are left out. Of two PVs with one UUID (the same
// disk given twice) the first is used. Groups come in the order their
// first PV was given.
func Group(pvs []*PV) []*VolumeGroup {
	var groups []*VolumeGroup
	byID := map[string]*VolumeGroup{}
	members := map[string][]*PV{}
	for _, pv := range pvs {
		if pv == nil || pv.VG == nil {
			continue
		}
		id := pv.VG.ID
		g, ok := byID[id]
		if !ok {
			g = &VolumeGroup{Metadata: pv.VG}
			byID[id] = g
			groups = append(groups, g)
		} else if pv.VG.Seqno > g.Metadata.Seqno {
			g.Metadata = pv.VG
		}
		members[id] = append(members[id], pv)
	}
	// PVs without metadata (pvcreate --metadatacopies 0, or areas LVM
	// ignores) belong to the group whose metadata lists them.
	bare := map[string]*PV{}
	for _, pv := range pvs {
		if pv != nil && pv.VG == nil {
			if _, dup := bare[pv.UUID]; !dup {
				bare[pv.UUID] = pv
			}
		}
	}
	for _, g := range groups {
		byUUID := map[string]*PV{}
		for _, pv := range members[g.Metadata.ID] {
			if _, dup := byUUID[pv.UUID]; !dup {
				byUUID[pv.UUID] = pv
			}
		}
		for id, pv := range bare {
			if _, dup := byUUID[id]; !dup {
				byUUID[id] = pv
			}
		}
		g.pvs = map[string]*PV{}
		for _, ref := range g.Metadata.PVs {
			pv, ok := byUUID[ref.ID]
			if !ok {
				g.Missing = append(g.Missing, ref)
				continue
			}
			// The newest metadata says where this PV's extents start.
			c := *pv
			c.key, c.peStart = ref.Key, ref.PEStart
			g.pvs[ref.Key] = &c
		}
	}
	return groups
}

// Volume is a logical volume's contents.
type Volume interface {
	io.ReaderAt
	// Size returns the volume's length in bytes.
	Size() int64
}

// LV returns the logical volume named name, or nil.
func (vg *VolumeGroup) LV(name string) *LV {
	for i := range vg.Metadata.LVs {
		if vg.Metadata.LVs[i].Name == name {
			return &vg.Metadata.LVs[i]
		}
	}
	return nil
}

// run is a piece of a volume: size bytes at LV offset off, on one PV.
// A striped run of n stripes maps chunk c of its stripe size to stripe
// c%n, at chunk c/n of that stripe's area.
type run struct {
	off, size  int64
	stripeSize int64 // 0: linear
	devs       []io.ReaderAt
	starts     []int64 // byte offsets of each stripe's area on its PV
	names      []string
}

// volume maps a linear or striped LV onto its PVs.
type volume struct {
	name string
	size int64
	runs []run
}

// Open returns a logical volume's contents as an io.ReaderAt with Size:
// linear and striped segments mapped onto the PVs' ReaderAts (pe_start +
// extent*extent_size), one device read per contiguous run. A missing PV,
// an unreadable type or an extent past its PV's end is an error naming
// them.
func (vg *VolumeGroup) Open(name string) (Volume, error) {
	m := vg.Metadata
	where := fmt.Sprintf("lvm: vg %s: lv %s", quote(m.Name), quote(name))
	lv := vg.LV(name)
	if lv == nil {
		return nil, fmt.Errorf("%s: no such logical volume", where)
	}
	if lv.bad != nil {
		return nil, fmt.Errorf("%s: %w", where, lv.bad)
	}
	if !lv.Readable {
		return nil, fmt.Errorf("%s: %s: %w", where, lv.Why, ErrUnsupported)
	}
	refs := map[string]PVRef{}
	for _, r := range m.PVs {
		refs[r.Key] = r
	}
	v := &volume{name: name, size: lv.Size}
	es := m.ExtentSize
	for si, seg := range lv.Segments {
		n := int64(len(seg.Stripes))
		if n == 0 {
			return nil, fmt.Errorf("%s: segment %d has no stripes: %w", where, si+1, errCorrupt)
		}
		per := seg.ExtentCount / n // extents in each stripe's area
		r := run{off: seg.StartExtent * es, size: seg.ExtentCount * es, stripeSize: seg.StripeSize}
		for _, st := range seg.Stripes {
			ref, ok := refs[st.PV]
			if !ok {
				return nil, fmt.Errorf("%s: segment %d: pv %s not in the metadata: %w", where, si+1, quote(st.PV), errCorrupt)
			}
			pv, ok := vg.pvs[st.PV]
			if !ok {
				return nil, fmt.Errorf("%s: segment %d: pv %s (%s): %w", where, si+1, quote(st.PV), ref.ID, ErrMissingPV)
			}
			if st.StartExtent > ref.PECount || per > ref.PECount-st.StartExtent {
				return nil, fmt.Errorf("%s: segment %d: extents %d–%d past pv %s's %d extents: %w",
					where, si+1, st.StartExtent, st.StartExtent+per-1, quote(st.PV), ref.PECount, errCorrupt)
			}
			start := ref.PEStart + st.StartExtent*es // no overflow: checked against PECount
			if end := start + per*es; end > pv.size {
				return nil, fmt.Errorf("%s: segment %d: extents end at byte %d, past the end of pv %s (%d bytes): %w",
					where, si+1, end, quote(st.PV), pv.size, errCorrupt)
			}
			r.devs = append(r.devs, pv.r)
			r.starts = append(r.starts, start)
			r.names = append(r.names, st.PV)
		}
		// Merge a linear run that continues the previous one on its PV.
		if k := len(v.runs) - 1; k >= 0 && n == 1 && v.runs[k].stripeSize == 0 && len(v.runs[k].devs) == 1 &&
			v.runs[k].names[0] == r.names[0] && v.runs[k].starts[0]+v.runs[k].size == r.starts[0] {
			v.runs[k].size += r.size
			continue
		}
		v.runs = append(v.runs, r)
	}
	return v, nil
}

func (v *volume) Size() int64 { return v.size }

// ReadAt reads p at off: one device read per contiguous piece (a linear
// run, or one stripe chunk).
func (v *volume) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("lvm: lv %s: negative offset %d", quote(v.name), off)
	}
	if off >= v.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > v.size-off {
		p = p[:v.size-off]
	}
	done := 0
	i := sort.Search(len(v.runs), func(i int) bool { return v.runs[i].off+v.runs[i].size > off })
	for done < len(p) && i < len(v.runs) {
		r := &v.runs[i]
		rel := off + int64(done) - r.off
		chunk := p[done:]
		if int64(len(chunk)) > r.size-rel {
			chunk = chunk[:r.size-rel]
		}
		k, devOff := 0, r.starts[0]+rel
		if r.stripeSize > 0 {
			c := rel / r.stripeSize
			in := rel % r.stripeSize
			n := int64(len(r.devs))
			k = int(c % n)
			devOff = r.starts[k] + (c/n)*r.stripeSize + in
			if int64(len(chunk)) > r.stripeSize-in {
				chunk = chunk[:r.stripeSize-in]
			}
		}
		got, err := r.devs[k].ReadAt(chunk, devOff)
		done += got
		if got < len(chunk) {
			return done, fmt.Errorf("lvm: lv %s: reading pv %s at %d: %w", quote(v.name), quote(r.names[k]), devOff+int64(got), noEOF(err))
		}
		if int64(done)+off >= r.off+r.size {
			i++
		}
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

package vma

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/text"
)

// What an archive holds and what Proxmox would make of it, for the
// capabilities of format: Verifier, Reporter, Salvager, Located.

// Verify implements format.Verifier: the archive is read through (Unpack,
// every extent's data included), and reported with Proxmox's restore
// problems (RestoreProblems, and a name Proxmox would not take) and the
// names extract and mount could not tell apart.
func (s *stream) Verify(ctx context.Context, o format.VerifyOptions) (*format.Report, error) {
	res, err := Unpack(ctx, s.r, nil, UnpackOptions{Digest: o.Digest, Progress: s.progress(o.Progress)})
	s.res = res
	s.done.Store(s.r.Offset())
	rep := &format.Report{Records: res.Extents, Bytes: res.Bytes}
	if err != nil {
		return rep, err
	}
	rep.Disks = diskReports(res)
	h := s.r.Header()
	rep.Restorer = "Proxmox"
	rep.Unrestorable = RestoreProblems(h)
	if o.Path != "-" {
		if ok, _ := CheckArchiveName(o.Path); !ok {
			rep.Unrestorable = append(rep.Unrestorable, "its name: Proxmox restores only archives named vzdump-qemu-<VMID>-YYYY_MM_DD-HH_MM_SS.vma[.zst|.gz|.lzo] (pve-storage: \"couldn't determine archive info\")")
		}
	}
	var cnames, dnames []string
	for _, c := range h.Configs {
		cnames = append(cnames, c.Name)
	}
	for _, d := range h.Devices {
		dnames = append(dnames, d.Name)
	}
	rep.NameClashes = format.NameClashes(archiveRules{}, cnames, dnames)
	return rep, nil
}

// Report implements format.Reporter: what Read (or Verify) saw; nil
// before.
func (s *stream) Report() *format.Report {
	if s.res == nil {
		return nil
	}
	return &format.Report{Disks: diskReports(s.res), Records: s.res.Extents, Bytes: s.res.Bytes}
}

// diskReports are the devices Unpack saw.
func diskReports(res *Result) []format.DiskReport {
	var ds []format.DiskReport
	for _, d := range res.Devices {
		ds = append(ds, format.DiskReport{ID: d.Device.ID, Name: d.Device.Name, Size: d.Device.Size, Stored: d.Stored, Zero: d.Zero, SHA256: d.SHA256})
	}
	return ds
}

// Report implements format.Reporter: the devices as the archive's index
// describes them, as Unpack would after reading it.
func (i *image) Report() *format.Report {
	rep := &format.Report{Records: i.a.Extents(), Bytes: i.a.size}
	for _, d := range i.a.Devices() {
		dev := d.Device()
		rep.Disks = append(rep.Disks, format.DiskReport{ID: dev.ID, Name: dev.Name, Size: dev.Size, Stored: d.Stored(), Zero: dev.Size - d.Stored()})
	}
	return rep
}

// Location implements format.Located.
func (e *FormatError) Location() format.Location {
	return format.Location{Offset: e.Offset, Disk: e.Device, Cluster: e.Cluster}
}

// Salvage implements format.Salvager: the Reader salvages (see
// Reader.Salvage).
func (s *stream) Salvage() { s.r.Salvage() }

// Salvaged implements format.Salvager: the damaged ranges skipped, the
// data that may be wrong (a compression layer whose checksum failed only
// at its end; an extent followed by unexpected bytes, which may have been
// inserted into its data), and the clusters lost, by device.
func (s *stream) Salvaged() format.SalvageReport {
	r := s.r
	var rep format.SalvageReport
	for _, d := range r.Damaged() {
		if d.Length <= 0 {
			rep.Damaged = append(rep.Damaged, fmt.Sprintf("input ends at byte %d: %v", d.Offset, d.Err))
			continue
		}
		rep.Damaged = append(rep.Damaged, fmt.Sprintf("bytes %d-%d (%d bytes) skipped: %v", d.Offset, d.Offset+d.Length-1, d.Length, d.Err))
	}
	if n := r.DamagedDropped(); n > 0 {
		rep.Damaged = append(rep.Damaged, fmt.Sprintf("%d more ranges not listed", n))
	}
	rep.DamagedRanges = int64(len(r.Damaged())) + r.DamagedDropped()
	for _, d := range r.Damaged() {
		var ce *compress.Error
		if errors.As(d.Err, &ce) && ce.Late() {
			rep.Doubtful = append(rep.Doubtful, fmt.Sprintf("the %s layer's checksum failed only at its end: clusters restored before it may hold damaged data; compare them with another copy", ce.Format))
		}
	}
	for _, x := range r.Suspect() {
		for _, m := range x.Clusters {
			rep.Doubtful = append(rep.Doubtful, fmt.Sprintf("the extent at byte %d is followed by %d unexpected bytes: if they were inserted into its data, %s clusters %s hold shifted data (VMA has no data checksums); compare them with another copy",
				x.Offset, x.Gap, text.Printable(m.Device.Name), clusterRanges(m)))
		}
	}
	for _, m := range r.MissingClusters() {
		rep.Lost = append(rep.Lost, fmt.Sprintf("%s: %d of %d clusters, written as zeros: %s", text.Printable(m.Device.Name), m.Total, m.Device.Clusters(), clusterRanges(m)))
	}
	return rep
}

// clusterRanges lists m's ranges with their device byte ranges, and "…"
// when there are more than listed.
func clusterRanges(m MissingRanges) string {
	var rs []string
	listed := int64(0)
	for _, r := range m.Ranges {
		rs = append(rs, fmt.Sprintf("%d-%d (bytes %d-%d)", r.First, r.Last, r.First*ClusterSize, min((r.Last+1)*ClusterSize, m.Device.Size)-1))
		listed += r.Last - r.First + 1
	}
	more := ""
	if n := len(m.Ranges); n > 0 && int64(n) < m.Total && listed < m.Total {
		more = ", …"
	}
	return strings.Join(rs, ", ") + more
}

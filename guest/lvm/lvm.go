// Package lvm reads LVM2 physical volumes and maps the logical volumes of
// their volume groups onto them, without device-mapper: the label and pv
// header (LVM2 001), the metadata area header, and the newest metadata
// text of each PV, in LVM's config syntax. Linear and striped logical
// volumes are read; thin, RAID, mirror, snapshot, cache and VDO volumes are
// listed but not read.
//
// It reads the on-disk format only; it neither activates nor writes
// anything. Package guest builds its tree of volumes from it (guest
// imports lvm, so lvm does not import guest: its errors wrap ErrCorrupt
// and ErrUnsupported, defined here).
package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// Errors wrapped by the errors of this package.
var (
	// ErrCorrupt is wrapped by every error about on-disk structures that
	// do not hold together (a bad checksum, a bad magic, metadata that
	// does not parse, an extent past a PV's end).
	ErrCorrupt = errors.New("corrupt")
	// ErrUnsupported is wrapped by Open's error for a logical volume it
	// does not read (thin, RAID, mirror, snapshot, …).
	ErrUnsupported = errors.New("not supported")
	// ErrMissingPV is wrapped by Open's error for a logical volume with
	// extents on a physical volume that was not given to Group.
	ErrMissingPV = errors.New("physical volume missing")
)

// errCorrupt is the error wrapped internally for ErrCorrupt.
var errCorrupt = ErrCorrupt

const (
	labelScanSectors = 4
	labelID          = "LABELONE"
	labelType        = "LVM2 001"
	// initialCRC is LVM's initial CRC value (INITIAL_CRC in lib/misc/crc.h).
	initialCRC    = 0xf597a6cf
	mdaHeaderSize = 512
	mdaMagic      = " LVM2 x[5A%r0N*>"
	mdaVersion    = 1
	// rawLocnIgnored marks a metadata area that LVM does not use.
	rawLocnIgnored = 1
	// maxAreas bounds the data and metadata area lists read from a pv
	// header (they end with a zero entry inside the label sector anyway).
	maxAreas = 8
)

// crc computes LVM's checksum (calc_crc in lib/misc/crc.c): the reflected
// CRC-32 of polynomial 0xEDB88320 without the pre and post inversion,
// started from initial.
func crc(initial uint32, p []byte) uint32 {
	return ^crc32.Update(^initial, crc32.IEEETable, p)
}

// Probe reports whether r holds an LVM2 physical volume label
// ("LABELONE" in one of the first four 512-byte sectors, type "LVM2 001").
// It checks the label's sector number too but not its checksum.
func Probe(r io.ReaderAt, size int64) bool {
	_, _, ok := findLabel(r, size)
	return ok
}

// findLabel returns the label sector and its number.
func findLabel(r io.ReaderAt, size int64) ([]byte, int, bool) {
	n := int64(labelScanSectors * sectorSize)
	if size < n {
		n = size - size%sectorSize
	}
	if n <= 0 {
		return nil, 0, false
	}
	buf := make([]byte, n)
	if m, _ := r.ReadAt(buf, 0); m < len(buf) {
		return nil, 0, false
	}
	for i := 0; i < len(buf)/sectorSize; i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		if string(s[:8]) == labelID && binary.LittleEndian.Uint64(s[8:]) == uint64(i) && string(s[24:32]) == labelType {
			return s, i, true
		}
	}
	return nil, 0, false
}

// PV is one physical volume, read from its label and its newest metadata
// copy.
type PV struct {
	// UUID is the PV's UUID as LVM prints it (6-4-4-4-4-4-6 with dashes).
	UUID string
	// Size is the device size recorded in the pv header in bytes (pvs's
	// dev_size), or the size given to ReadPV where the header has 0.
	Size int64
	// VG is the volume group metadata found on the PV: nil for an orphan
	// PV, and for a PV created without metadata areas (--metadatacopies
	// 0), which Group places by its UUID.
	VG *Metadata

	r       io.ReaderAt
	size    int64 // bytes readable through r
	peStart int64 // bytes, from the metadata
	key     string
}

// area is a disk_locn: an offset and a size in bytes.
type area struct{ offset, size uint64 }

// formatUUID formats a 32-character LVM id with dashes as LVM prints it.
func formatUUID(id []byte) string {
	var b bytes.Buffer
	for i, n := range []int{6, 4, 4, 4, 4, 4, 6} {
		if i > 0 {
			b.WriteByte('-')
		}
		b.Write(id[:n])
		id = id[n:]
	}
	return b.String()
}

// ReadPV reads the label, the pv header (data areas, metadata areas), the
// metadata area headers (magic " LVM2 x[5A%r0N*>", version 1, checksums
// CRC as LVM computes them), their raw location descriptors, and parses
// the newest metadata text (the one the mda header points to, wrapping at
// the end of the metadata area as LVM writes it in a circular buffer). Of
// a PV's two metadata areas, the copy with the higher seqno is kept; a
// damaged copy is skipped when the other one reads. r must be safe for
// concurrent use to read the PV's logical volumes concurrently.
func ReadPV(r io.ReaderAt, size int64) (*PV, error) {
	label, sector, ok := findLabel(r, size)
	if !ok {
		return nil, fmt.Errorf("lvm: no LVM2 label in the first %d sectors: %w", labelScanSectors, errCorrupt)
	}
	where := fmt.Sprintf("lvm: label at sector %d", sector)
	if got, want := crc(initialCRC, label[20:]), binary.LittleEndian.Uint32(label[16:]); got != want {
		return nil, fmt.Errorf("%s: checksum %#08x, computed %#08x: %w", where, want, got, errCorrupt)
	}
	off := binary.LittleEndian.Uint32(label[20:])
	if off < 32 || off > sectorSize-32-8-16 {
		return nil, fmt.Errorf("%s: pv header offset %d out of range: %w", where, off, errCorrupt)
	}
	h := label[off:]
	pv := &PV{UUID: formatUUID(h[:32]), r: r, size: size}
	devSize := binary.LittleEndian.Uint64(h[32:])
	if devSize > math.MaxInt64 {
		return nil, fmt.Errorf("%s: device size %d out of range: %w", where, devSize, errCorrupt)
	}
	pv.Size = int64(devSize)
	if pv.Size == 0 {
		pv.Size = size
	}
	where = "lvm: pv " + pv.UUID
	// The data areas, then the metadata areas, each list ending with a
	// zero entry.
	p := h[40:]
	var lists [2][]area
	for l := range lists {
		for {
			if len(p) < 16 {
				return nil, fmt.Errorf("%s: area list runs past the label sector: %w", where, errCorrupt)
			}
			a := area{binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])}
			p = p[16:]
			if a.offset == 0 {
				break
			}
			if len(lists[l]) >= maxAreas {
				return nil, fmt.Errorf("%s: more than %d areas: %w", where, maxAreas, errCorrupt)
			}
			lists[l] = append(lists[l], a)
		}
	}
	var best *Metadata
	var firstErr error
	for i, a := range lists[1] {
		m, err := readMDA(r, size, a)
		if err != nil {
			err = fmt.Errorf("%s: metadata area %d at %d: %w", where, i, a.offset, err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if m != nil && (best == nil || m.Seqno > best.Seqno) {
			best = m
		}
	}
	if best == nil && firstErr != nil {
		return nil, firstErr
	}
	if best == nil {
		return pv, nil // orphan, or no metadata area in use
	}
	found := false
	for _, ref := range best.PVs {
		if ref.ID == pv.UUID {
			pv.key, pv.peStart, found = ref.Key, ref.PEStart, true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%s: not listed in the metadata of volume group %s: %w", where, quote(best.Name), errCorrupt)
	}
	pv.VG = best
	return pv, nil
}

// readMDA reads one metadata area: its header and the metadata text its
// first raw location points to. It returns nil, nil for an area without
// metadata (an orphan PV's, or one LVM ignores).
func readMDA(r io.ReaderAt, size int64, a area) (*Metadata, error) {
	if a.offset > uint64(size) || a.size > uint64(size)-a.offset || a.size < mdaHeaderSize {
		return nil, fmt.Errorf("area of %d bytes at %d outside the %d-byte device: %w", a.size, a.offset, size, errCorrupt)
	}
	h := make([]byte, mdaHeaderSize)
	if n, err := r.ReadAt(h, int64(a.offset)); n < len(h) {
		return nil, fmt.Errorf("reading header: %w", noEOF(err))
	}
	if got, want := crc(initialCRC, h[4:]), binary.LittleEndian.Uint32(h); got != want {
		return nil, fmt.Errorf("header checksum %#08x, computed %#08x: %w", want, got, errCorrupt)
	}
	if string(h[4:20]) != mdaMagic {
		return nil, fmt.Errorf("header magic %q: %w", h[4:20], errCorrupt)
	}
	if v := binary.LittleEndian.Uint32(h[20:]); v != mdaVersion {
		return nil, fmt.Errorf("header version %d, not %d: %w", v, mdaVersion, errCorrupt)
	}
	start, msize := binary.LittleEndian.Uint64(h[24:]), binary.LittleEndian.Uint64(h[32:])
	if start != a.offset || msize != a.size {
		return nil, fmt.Errorf("header says %d bytes at %d, the pv header %d at %d: %w", msize, start, a.size, a.offset, errCorrupt)
	}
	// The first raw location descriptor is the current metadata.
	loc := h[40:]
	off, tsize := binary.LittleEndian.Uint64(loc), binary.LittleEndian.Uint64(loc[8:])
	sum, flags := binary.LittleEndian.Uint32(loc[16:]), binary.LittleEndian.Uint32(loc[20:])
	if off == 0 || tsize == 0 || flags&rawLocnIgnored != 0 {
		return nil, nil
	}
	ring := msize - mdaHeaderSize // the circular buffer after the header
	if off < mdaHeaderSize || off >= msize || tsize > ring {
		return nil, fmt.Errorf("metadata of %d bytes at %d outside the %d-byte area: %w", tsize, off, msize, errCorrupt)
	}
	if tsize > MaxMetadataText {
		return nil, fmt.Errorf("metadata of %d bytes > %d: %w", tsize, MaxMetadataText, errCorrupt)
	}
	text := make([]byte, tsize)
	first := tsize
	if off+tsize > msize {
		first = msize - off // the rest wraps to the start of the buffer
	}
	if n, err := r.ReadAt(text[:first], int64(start+off)); uint64(n) < first {
		return nil, fmt.Errorf("reading metadata at %d: %w", start+off, noEOF(err))
	}
	if first < tsize {
		if n, err := r.ReadAt(text[first:], int64(start+mdaHeaderSize)); uint64(n) < tsize-first {
			return nil, fmt.Errorf("reading wrapped metadata at %d: %w", start+mdaHeaderSize, noEOF(err))
		}
	}
	if got := crc(initialCRC, text); got != sum {
		return nil, fmt.Errorf("metadata checksum %#08x, computed %#08x: %w", sum, got, errCorrupt)
	}
	return parseMetadata(text)
}

// noEOF turns a short read's io.EOF (or nil) into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Package part reads a disk's partition table: a GPT behind its protective
// MBR (with the backup GPT at the disk's end used when the primary is
// damaged), or a DOS (MBR) table with its extended partitions and their
// chain of logical partitions, numbered as Linux numbers them.
//
// Read reads only the sectors that hold the table (at most about 1 MiB of
// GPT entries), bounds every loop by a constant and never trusts an
// on-disk count for an allocation; damage it cannot read past makes an
// error wrapping ErrCorrupt, damage it can is reported in Table.Warnings.
package part

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
	"unicode/utf16"
)

// ErrCorrupt is wrapped by every error about a partition table that does
// not hold together. (Package guest imports this package, so this is not
// guest.ErrCorrupt; the caller wraps or translates it.)
var ErrCorrupt = errors.New("corrupt")

// Limits on what Read reads, so that a hostile table costs bounded time
// and memory.
const (
	// MaxGPTArray bounds the bytes of a GPT's partition entry array
	// (8192 entries of 128 bytes). The UEFI minimum is 16 KiB.
	MaxGPTArray = 1 << 20
	// MaxGPTEntrySize bounds the size of one GPT partition entry.
	MaxGPTEntrySize = 4096
	// MaxLogical bounds the logical partitions of a DOS table (Linux
	// numbers partitions up to 256 in all).
	MaxLogical = 256
	// maxEBRs bounds the extended boot records followed, including those
	// that hold no logical partition.
	maxEBRs = 2 * MaxLogical
	// maxOverlapWarnings bounds the warnings about overlapping partitions.
	maxOverlapWarnings = 16
)

// Table is a disk's partition table.
type Table struct {
	// Kind is "gpt" or "dos".
	Kind string
	// SectorSize is the logical sector size the table was found with:
	// 512 or 4096. A GPT tells it by where its header lies; a DOS table
	// is read with 512-byte sectors unless its first extended boot record
	// is found only at the 4096-byte reading.
	SectorSize int
	// DiskID is the GPT disk GUID (canonical upper case) or the MBR disk
	// signature as "0x1234abcd".
	DiskID string
	// Partitions are the table's partitions in number order. A DOS
	// table's extended partitions are among them (see Extended).
	Partitions []Partition
	// Warnings are things a user should know about the table: the backup
	// GPT header used in place of a damaged primary, a partition clipped
	// at the disk's end, overlapping partitions, a hybrid MBR ignored.
	Warnings []string
}

// Partition is one entry of a partition table.
type Partition struct {
	// Number is the partition's number as Linux numbers them (sda1...):
	// MBR primaries 1–4 by slot, logical partitions from 5 in chain order;
	// a GPT entry's index+1.
	Number int
	// Start is the partition's offset in bytes from the disk's start.
	Start int64
	// Size is the partition's length in bytes (clipped at the disk's end).
	Size int64
	// Type is the partition type: "0x83" for MBR, the type GUID in
	// canonical upper case for GPT.
	Type string
	// TypeName names the well-known types ("Linux filesystem", "Linux
	// LVM", "EFI System", "Microsoft basic data", "W95 Ext'd (LBA)", ...),
	// "" if the type is unknown.
	TypeName string
	// Name is a GPT partition's name (UTF-16LE decoded, cut at the first
	// NUL); "" for MBR.
	Name string
	// GUID is a GPT partition's unique GUID in canonical upper case; ""
	// for MBR.
	GUID string
	// Bootable is an MBR partition's active flag (status byte 0x80).
	Bootable bool
}

// Extended reports whether p is a DOS extended partition (types 0x05,
// 0x0F, 0x85): a container of logical partitions, which are listed
// after the primaries, not a file system.
func (p Partition) Extended() bool {
	return p.Type == "0x05" || p.Type == "0x0f" || p.Type == "0x85"
}

// Read reads the partition table at the start of r (size bytes). It
// returns (nil, nil) when there is none: no 0x55AA signature at byte 510,
// or a sector that is a file system's boot sector rather than an MBR (as
// Linux's msdos parser and libblkid tell them apart: a status byte other
// than 0x00 or 0x80, or a FAT, exFAT, NTFS, ReFS or BitLocker boot
// sector). A DOS table with no partitions is returned as a Table with
// none. Errors are one line, naming what is wrong and where; those about
// the table's structures wrap ErrCorrupt, those of r are wrapped as they
// come.
func Read(r io.ReaderAt, size int64) (*Table, error) {
	if r == nil || size < 512 {
		return nil, nil
	}
	d := &disk{r: r, size: size}
	mbr, err := d.read("MBR", 0, 512)
	if err != nil {
		return nil, err
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, nil
	}
	ents := mbrEntries(mbr)
	boot := isFSBootSector(mbr)
	for _, e := range ents {
		if e.typ == 0xEE {
			t, err := readGPT(d, ents)
			if err != nil && boot {
				// A file system's boot sector that happens to hold 0xEE
				// where an MBR keeps its types.
				return nil, nil
			}
			return t, err
		}
	}
	for _, e := range ents {
		if e.status != 0 && e.status != 0x80 {
			return nil, nil
		}
	}
	if boot {
		return nil, nil
	}
	return readDOS(d, mbr, ents)
}

// disk reads sectors of the disk.
type disk struct {
	r    io.ReaderAt
	size int64
}

// read reads n bytes at off, all within the disk; what names them in errors.
func (d *disk) read(what string, off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > d.size || int64(n) > d.size-off {
		return nil, fmt.Errorf("%s at byte %d: past the disk's end (%d bytes): %w", what, off, d.size, ErrCorrupt)
	}
	b := make([]byte, n)
	m, err := d.r.ReadAt(b, off)
	if m == n {
		return b, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("reading %s at byte %d: %w", what, off, err)
}

// mbrEntry is one of the four entries of an MBR or EBR.
type mbrEntry struct {
	status byte
	typ    byte
	start  uint32 // LBA
	count  uint32 // sectors
}

func mbrEntries(sec []byte) [4]mbrEntry {
	var es [4]mbrEntry
	for i := range es {
		b := sec[446+16*i : 446+16*i+16]
		es[i] = mbrEntry{
			status: b[0],
			typ:    b[4],
			start:  binary.LittleEndian.Uint32(b[8:]),
			count:  binary.LittleEndian.Uint32(b[12:]),
		}
	}
	return es
}

func isExtendedType(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

// isFSBootSector reports whether the first sector is a file system's boot
// sector (which carries 0x55AA too): NTFS, exFAT, ReFS and BitLocker by
// their OEM names, FAT by its BIOS parameter block, checked as libblkid's
// fat_valid_superblock does.
func isFSBootSector(b []byte) bool {
	switch string(b[3:11]) {
	case "NTFS    ", "EXFAT   ", "ReFS\x00\x00\x00\x00", "-FVE-FS-":
		return true
	}
	return isFATBootSector(b)
}

func isFATBootSector(b []byte) bool {
	le16 := func(o int) uint32 { return uint32(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }
	// libblkid matches the 0x55AA signature (or a jump) as a weak FAT
	// magic and then rules out OS/2's pseudo-superblocks of JFS and HPFS.
	magic36, magic52 := string(b[0x36:0x3E]), string(b[0x52:0x5A])
	strong := strings.HasPrefix(magic52, "MSWIN") || magic52 == "FAT32   " ||
		strings.HasPrefix(magic36, "MSDOS") || magic36 == "FAT16   " ||
		magic36 == "FAT12   " || magic36 == "FAT     "
	if !strong && (magic36 == "JFS     " || magic36 == "HPFS    ") {
		return false
	}
	clusterSize := uint32(b[0x0D])
	reserved := le16(0x0E)
	fats := uint32(b[0x10])
	media := b[0x15]
	if fats == 0 || reserved == 0 || !(media >= 0xF8 || media == 0xF0) || !isPow2(clusterSize) {
		return false
	}
	sectorSize := le16(0x0B)
	if !isPow2(sectorSize) || sectorSize < 512 || sectorSize > 4096 {
		return false
	}
	dirEntries := le16(0x11)
	sectors := le16(0x13)
	if sectors == 0 {
		sectors = le32(0x20)
	}
	fatLength := le16(0x16)
	fat32Length := le32(0x24)
	if fatLength == 0 {
		fatLength = fat32Length
	}
	// uint32 arithmetic wrapping as libblkid's does.
	fatSize := fatLength * fats
	dirSize := (dirEntries*32 + sectorSize - 1) / sectorSize
	clusters := (sectors - (reserved + fatSize + dirSize)) / clusterSize
	var max uint32
	switch {
	case le16(0x16) == 0 && fat32Length != 0:
		max = 0x0FFFFFF6
	case clusters > 0xFF4:
		max = 0xFFF4
	default:
		max = 0xFF4
	}
	return clusters <= max
}

func isPow2(x uint32) bool { return x != 0 && x&(x-1) == 0 }

// readDOS reads a DOS partition table from its MBR sector.
func readDOS(d *disk, mbr []byte, ents [4]mbrEntry) (*Table, error) {
	t := &Table{
		Kind:       "dos",
		SectorSize: 512,
		DiskID:     fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(mbr[440:])),
	}
	if dosSector4096(d, ents) {
		t.SectorSize = 4096
	}
	ss := int64(t.SectorSize)
	parent := map[int]int{} // logical partition number -> its extended partition
	for i, e := range ents {
		if e.count == 0 {
			continue
		}
		t.Partitions = append(t.Partitions, mbrPartition(i+1, int64(e.start)*ss, e, ss))
	}
	next := 5
	for i, e := range ents {
		if e.count == 0 || !isExtendedType(e.typ) {
			continue
		}
		if int64(e.start)*ss >= d.size {
			continue // reported as past the disk's end below
		}
		logical, err := readChain(d, t, i+1, int64(e.start)*ss, int64(e.count)*ss, ss, &next)
		if err != nil {
			return nil, err
		}
		for _, p := range logical {
			parent[p.Number] = i + 1
		}
		t.Partitions = append(t.Partitions, logical...)
	}
	if err := finish(d, t, "dos", parent); err != nil {
		return nil, err
	}
	return t, nil
}

func mbrPartition(n int, start int64, e mbrEntry, ss int64) Partition {
	return Partition{
		Number:   n,
		Start:    start,
		Size:     int64(e.count) * ss,
		Type:     fmt.Sprintf("0x%02x", e.typ),
		TypeName: mbrTypeNames[e.typ],
		Bootable: e.status == 0x80,
	}
}

// dosSector4096 reports whether a DOS table was written with 4096-byte
// sectors: its first extended partition's EBR is not found at the 512-byte
// reading of its start but a plausible one is at the 4096-byte reading.
func dosSector4096(d *disk, ents [4]mbrEntry) bool {
	for _, e := range ents {
		if e.count == 0 || !isExtendedType(e.typ) {
			continue
		}
		if isEBR(d, int64(e.start)*512) {
			return false
		}
		for _, f := range ents {
			if f.count != 0 && (int64(f.start)+int64(f.count))*4096 > d.size {
				return false // the primaries do not fit at 4096 bytes a sector
			}
		}
		return isEBR(d, int64(e.start)*4096)
	}
	return false
}

// isEBR reports whether the sector at off looks like an extended boot
// record: the 0x55AA signature, status bytes 0 or 0x80, no 0xEE, and at
// least one entry in use.
func isEBR(d *disk, off int64) bool {
	if off <= 0 || off > d.size-512 {
		return false
	}
	b, err := d.read("EBR", off, 512)
	if err != nil || b[510] != 0x55 || b[511] != 0xAA {
		return false
	}
	used := false
	for _, e := range mbrEntries(b) {
		if (e.status != 0 && e.status != 0x80) || e.typ == 0xEE {
			return false
		}
		used = used || e.count != 0
	}
	return used && !isFSBootSector(b)
}

// readChain follows the chain of extended boot records of the extended
// partition number ext at [first, first+firstSize) bytes, as Linux's
// parse_extended does: every used non-extended entry of an EBR is a logical
// partition relative to that EBR (the third and fourth only if they lie
// within it), and the first extended entry links to the next EBR, relative
// to the extended partition's start. *next is the next logical number.
func readChain(d *disk, t *Table, ext int, first, firstSize, ss int64, next *int) ([]Partition, error) {
	var out []Partition
	visited := map[int64]bool{}
	this, thisSize := first, firstSize
	for n := 0; ; n++ {
		where := fmt.Sprintf("dos: extended partition %d: EBR at byte %d", ext, this)
		if n >= maxEBRs {
			return nil, fmt.Errorf("dos: extended partition %d: more than %d EBRs in its chain: %w", ext, maxEBRs, ErrCorrupt)
		}
		if visited[this] {
			return nil, fmt.Errorf("%s: the EBR chain loops back to it: %w", where, ErrCorrupt)
		}
		visited[this] = true
		if this > d.size-512 {
			return nil, fmt.Errorf("%s: past the disk's end (%d bytes): %w", where, d.size, ErrCorrupt)
		}
		b, err := d.read("EBR", this, 512)
		if err != nil {
			return nil, fmt.Errorf("dos: extended partition %d: %w", ext, err)
		}
		if b[510] != 0x55 || b[511] != 0xAA {
			if n == 0 {
				t.Warnings = append(t.Warnings, fmt.Sprintf("extended partition %d: no EBR signature (0x55AA) at its start (byte %d): it holds no logical partitions", ext, this))
			} else {
				t.Warnings = append(t.Warnings, fmt.Sprintf("extended partition %d: EBR at byte %d has no signature (0x55AA): the logical partitions from there on are ignored", ext, this))
			}
			return out, nil
		}
		es := mbrEntries(b)
		for i, e := range es {
			if e.count == 0 || isExtendedType(e.typ) {
				continue
			}
			offs, size := int64(e.start)*ss, int64(e.count)*ss
			start := this + offs
			if i >= 2 && (offs+size > thisSize || start < first || start+size > first+firstSize) {
				continue // the third and fourth entries often hold garbage
			}
			if *next-4 > MaxLogical {
				return nil, fmt.Errorf("dos: extended partition %d: more than %d logical partitions: %w", ext, MaxLogical, ErrCorrupt)
			}
			out = append(out, mbrPartition(*next, start, e, ss))
			*next++
		}
		link := -1
		for i, e := range es {
			if e.count != 0 && isExtendedType(e.typ) {
				link = i
				break
			}
		}
		if link < 0 {
			return out, nil
		}
		this = first + int64(es[link].start)*ss
		thisSize = int64(es[link].count) * ss
	}
}

// finish checks every partition against the disk's end (an error when
// one starts past it, a warning and a clip when one runs past it) and
// warns of overlaps. parent maps a logical partition to its container.
func finish(d *disk, t *Table, kind string, parent map[int]int) error {
	for i := range t.Partitions {
		p := &t.Partitions[i]
		if p.Start >= d.size {
			return fmt.Errorf("%s: partition %d: starts at byte %d, past the disk's end (%d bytes): %w", kind, p.Number, p.Start, d.size, ErrCorrupt)
		}
		if p.Size > d.size-p.Start {
			t.Warnings = append(t.Warnings, fmt.Sprintf("partition %d runs %d bytes past the disk's end: clipped to %d bytes", p.Number, p.Size-(d.size-p.Start), d.size-p.Start))
			p.Size = d.size - p.Start
		}
	}
	for _, p := range t.Partitions {
		if c, ok := parent[p.Number]; ok {
			for _, q := range t.Partitions {
				if q.Number == c && (p.Start < q.Start || p.Start+p.Size > q.Start+q.Size) {
					t.Warnings = append(t.Warnings, fmt.Sprintf("logical partition %d lies outside its extended partition %d", p.Number, c))
				}
			}
		}
	}
	byStart := make([]int, len(t.Partitions))
	for i := range byStart {
		byStart[i] = i
	}
	sort.SliceStable(byStart, func(a, b int) bool { return t.Partitions[byStart[a]].Start < t.Partitions[byStart[b]].Start })
	warned := 0
	for a, i := range byStart {
		p := t.Partitions[i]
		for _, j := range byStart[a+1:] {
			q := t.Partitions[j]
			if q.Start >= p.Start+p.Size {
				break
			}
			if parent[q.Number] == p.Number || parent[p.Number] == q.Number {
				continue
			}
			if warned == maxOverlapWarnings {
				t.Warnings = append(t.Warnings, "more partitions overlap")
				return nil
			}
			lo, hi := p.Number, q.Number
			if lo > hi {
				lo, hi = hi, lo
			}
			t.Warnings = append(t.Warnings, fmt.Sprintf("partitions %d and %d overlap", lo, hi))
			warned++
		}
	}
	return nil
}

// gptHeader is a GPT header that passed its checks, and its entry array.
type gptHeader struct {
	ss            int64
	myLBA, altLBA uint64
	entrySize     int
	diskGUID      string
	array         []byte
}

// errNoGPT says that no "EFI PART" signature is where a header would be.
var errNoGPT = errors.New("no GPT header")

// readGPT reads the GPT behind a protective MBR: the primary header at
// LBA 1 with 512- then 4096-byte sectors, else the backup header at the
// disk's last LBA.
func readGPT(d *disk, ents [4]mbrEntry) (*Table, error) {
	var problems []string
	var h *gptHeader
	var warn []string
	type place struct {
		ss  int64
		lba uint64
	}
	var backups []place // where to look for the backup header
	for _, ss := range []int64{512, 4096} {
		if d.size < 2*ss {
			continue
		}
		g, err := readGPTHeader(d, ss, 1)
		if err == nil {
			h = g
			break
		}
		if !errors.Is(err, errNoGPT) {
			if !errors.Is(err, ErrCorrupt) {
				return nil, err // an I/O error
			}
			problems = append(problems, problem(err))
		}
		if g != nil && g.altLBA > 1 && g.altLBA < uint64(d.size/ss)-1 {
			// A primary whose header holds together knows where its
			// backup is, though the disk may have grown since.
			backups = append(backups, place{ss, g.altLBA})
		}
	}
	if h == nil {
		for _, ss := range []int64{512, 4096} {
			if d.size >= 3*ss {
				backups = append(backups, place{ss, uint64(d.size/ss) - 1})
			}
		}
		for _, b := range backups {
			g, err := readGPTHeader(d, b.ss, b.lba)
			if err == nil {
				h = g
				why := "missing"
				if len(problems) > 0 {
					why = "damaged (" + strings.Join(problems, "; ") + ")"
				}
				warn = append(warn, fmt.Sprintf("the primary GPT header is %s: the backup GPT at LBA %d is used", why, b.lba))
				break
			}
			if !errors.Is(err, errNoGPT) {
				if !errors.Is(err, ErrCorrupt) {
					return nil, err
				}
				problems = append(problems, problem(err))
			}
		}
	}
	if h == nil {
		if len(problems) == 0 {
			return nil, fmt.Errorf("gpt: a protective MBR but no GPT header at LBA 1 or at the disk's last LBA: %w", ErrCorrupt)
		}
		return nil, fmt.Errorf("gpt: no valid GPT header: %s: %w", strings.Join(problems, "; "), ErrCorrupt)
	}
	if h.myLBA == 1 {
		// Check the backup too, so that the user learns it is gone.
		if h.altLBA <= 1 || h.altLBA > uint64(d.size/h.ss)-1 {
			warn = append(warn, fmt.Sprintf("the primary GPT header's backup LBA %d is not on the disk", h.altLBA))
		} else if _, err := readGPTHeader(d, h.ss, h.altLBA); err != nil {
			warn = append(warn, fmt.Sprintf("the backup GPT header is damaged: %s", problem(err)))
		}
	}
	t := &Table{Kind: "gpt", SectorSize: int(h.ss), DiskID: h.diskGUID, Warnings: warn}
	var hybrid []string
	for i, e := range ents {
		if e.typ != 0xEE && e.typ != 0 && e.count != 0 {
			hybrid = append(hybrid, fmt.Sprint(i+1))
		}
	}
	if len(hybrid) > 0 {
		t.Warnings = append(t.Warnings, fmt.Sprintf("hybrid MBR ignored (its entries %s): the partitions are the GPT's", strings.Join(hybrid, ", ")))
	}
	lastLBA := uint64(d.size/h.ss) - 1
	for i := 0; (i+1)*h.entrySize <= len(h.array); i++ {
		e := h.array[i*h.entrySize : (i+1)*h.entrySize]
		if allZero(e[0:16]) {
			continue
		}
		n := i + 1
		start, end := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		if end < start {
			return nil, fmt.Errorf("gpt: partition %d: ends at LBA %d, before its start at LBA %d: %w", n, end, start, ErrCorrupt)
		}
		if start > lastLBA {
			return nil, fmt.Errorf("gpt: partition %d: starts at LBA %d, past the disk's end (LBA %d): %w", n, start, lastLBA, ErrCorrupt)
		}
		p := Partition{
			Number: n,
			Start:  int64(start) * h.ss,
			Type:   guidString(e[0:16]),
			GUID:   guidString(e[16:32]),
			Name:   utf16Name(e[56:128]),
		}
		p.TypeName = gptTypeNames[p.Type]
		if end > lastLBA {
			p.Size = d.size - p.Start
			t.Warnings = append(t.Warnings, fmt.Sprintf("partition %d ends at LBA %d, past the disk's last LBA %d: clipped to %d bytes", n, end, lastLBA, p.Size))
		} else {
			p.Size = int64(end-start+1) * h.ss
		}
		t.Partitions = append(t.Partitions, p)
	}
	if err := finish(d, t, "gpt", nil); err != nil {
		return nil, err
	}
	return t, nil
}

// problem returns an error's message without its "gpt: " and ": corrupt".
func problem(err error) string {
	return strings.TrimSuffix(strings.TrimPrefix(err.Error(), "gpt: "), ": "+ErrCorrupt.Error())
}

// readGPTHeader reads and checks the GPT header at lba with ss-byte
// sectors, and its partition entry array. When the header's CRC holds but
// a later check fails, it returns the header (without its array) with the
// error.
func readGPTHeader(d *disk, ss int64, lba uint64) (*gptHeader, error) {
	where := fmt.Sprintf("gpt: header at LBA %d (%d-byte sectors)", lba, ss)
	if lba > uint64(d.size/ss)-1 {
		return nil, errNoGPT
	}
	b, err := d.read("GPT header", int64(lba)*ss, int(ss))
	if err != nil {
		return nil, fmt.Errorf("gpt: %w", err)
	}
	if string(b[0:8]) != "EFI PART" {
		return nil, errNoGPT
	}
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }
	le64 := func(o int) uint64 { return binary.LittleEndian.Uint64(b[o:]) }
	hsize := le32(12)
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("%s: header size %d not in 92..%d: %w", where, hsize, ss, ErrCorrupt)
	}
	hdr := bytes.Clone(b[:hsize])
	copy(hdr[16:20], []byte{0, 0, 0, 0})
	if sum := crc32.ChecksumIEEE(hdr); sum != le32(16) {
		return nil, fmt.Errorf("%s: header CRC32 %#08x, computed %#08x: %w", where, le32(16), sum, ErrCorrupt)
	}
	h := &gptHeader{ss: ss, myLBA: le64(24), altLBA: le64(32), diskGUID: guidString(b[56:72])}
	if h.myLBA != lba {
		return h, fmt.Errorf("%s: the header says it lies at LBA %d: %w", where, h.myLBA, ErrCorrupt)
	}
	if first, last := le64(40), le64(48); first > last {
		return h, fmt.Errorf("%s: first usable LBA %d after the last usable LBA %d: %w", where, first, last, ErrCorrupt)
	}
	count, esize := le32(80), le32(84)
	// UEFI: the entry size is 128 × 2^n bytes.
	if esize < 128 || esize%128 != 0 || !isPow2(esize/128) || esize > MaxGPTEntrySize {
		return h, fmt.Errorf("%s: partition entry size %d is not 128 × 2^n bytes (at most %d): %w", where, esize, MaxGPTEntrySize, ErrCorrupt)
	}
	if uint64(count)*uint64(esize) > MaxGPTArray {
		return h, fmt.Errorf("%s: %d partition entries of %d bytes are more than vmaconv reads (%d bytes): %w", where, count, esize, MaxGPTArray, ErrCorrupt)
	}
	h.entrySize = int(esize)
	arrayLBA := le64(72)
	n := int(count) * int(esize)
	if arrayLBA > uint64(d.size/ss) || int64(arrayLBA)*ss > d.size-int64(n) {
		return h, fmt.Errorf("%s: partition entry array at LBA %d (%d bytes) runs past the disk's end: %w", where, arrayLBA, n, ErrCorrupt)
	}
	if arrayLBA == lba && n > 0 {
		return h, fmt.Errorf("%s: partition entry array at the header's own LBA: %w", where, ErrCorrupt)
	}
	h.array, err = d.read("GPT partition entries", int64(arrayLBA)*ss, n)
	if err != nil {
		return nil, fmt.Errorf("gpt: %w", err)
	}
	if sum := crc32.ChecksumIEEE(h.array); sum != le32(88) {
		return h, fmt.Errorf("%s: partition entry array CRC32 %#08x, computed %#08x: %w", where, le32(88), sum, ErrCorrupt)
	}
	return h, nil
}

// guidString formats a GUID stored in the mixed-endian layout of GPT
// (its first three fields little-endian) in canonical upper case.
func guidString(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

// utf16Name decodes a GPT partition name, cut at its first NUL.
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

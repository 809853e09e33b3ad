// Package iso9660 reads ISO 9660 file systems (ECMA-119: installer,
// live and cloud-init CD images) read-only, for the guest tree, with the
// Rock Ridge (RRIP 1.09/1.10/1.12 over SUSP 1.12) and Joliet extensions.
//
// The volume descriptor set is read from sector 16 on, up to its
// terminator (at most 64 descriptors). Of the three possible trees, the
// reader picks one for the whole volume: the primary tree with Rock Ridge
// when its root's "." record starts with an SP entry and announces Rock
// Ridge (an ER entry or Rock Ridge fields), else the Joliet tree (a
// supplementary descriptor with the escape sequence %/@, %/C or %/E) when
// there is one, else the plain primary tree.
//
// Names: Rock Ridge NM names (as stored, usually UTF-8); Joliet names
// (UCS-2/UTF-16 big endian, decoded to UTF-8) with their ";1" version
// suffix removed; plain ISO 9660 names with ";1" and a trailing "."
// removed. Associated files (flag 0x04) are not listed.
//
// Metadata: with Rock Ridge, the PX mode, link count, uid, gid, the PN
// device number, the TF times (short and long form) and SL symbolic links
// (with their ROOT, CURRENT and PARENT components). Without Rock Ridge,
// directories have mode 0555|ModeDir, files 0444, and every time is the
// directory record's recording date (1 s granularity). Ino is the Rock
// Ridge PX serial number where present and nonzero, else the node's extent
// location (its logical block number; hard links made by sharing one
// extent then share it); an empty file without a serial number gets 1<<63
// plus the byte offset of its directory record instead, so that empty
// files, which writers place on one shared block, do not look like links.
// Nlink is PX's link count, else 1.
//
// Files are contiguous extents; a file of several extents (records with
// the multi-extent flag 0x80, as ISO level 3 writes files over 4 GiB) is
// one file, and a read within one extent is one read of the device. ISO
// 9660 knows no holes: files do not implement guest.Sparse. Interleaved
// files (file unit size or gap set) are not read.
//
// Deep directories relocated by Rock Ridge (CL, RE, PL) appear at their
// original place, and their RE entries in the relocation directory (often
// "rr_moved") are hidden; that directory itself is listed unless it has an
// RE entry too (as libisofs writes it).
//
// Bounds against hostile images: a directory lists at most
// guest.MaxDirEntries entries; one record's system use entries may follow
// at most 32 continuation areas (CE), of at most one block each and
// 64 KiB in all; a Rock Ridge name is at most 1024 bytes and a link
// target guest.MaxLinkLen; a file has at most 65,536 extents; directory
// trees deeper than 1024 levels, or whose directories point at an
// ancestor, are reported corrupt. UDF (the other file system of hybrid
// DVD images) is not read: only its ISO 9660 side, where there is one.
//
// Specifications: ECMA-119 (https://ecma-international.org/publications-and-standards/standards/ecma-119/),
// SUSP and RRIP (IEEE P1281/P1282 drafts), Joliet (Microsoft, 1995).
package iso9660

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
	"unicode/utf16"

	"github.com/vmaconv/vmaconv/guest"
)

// Name is the file system family's name, as Probe returns it.
const Name = "iso9660"

const (
	sectorSize  = 2048 // volume descriptors and directory sectors
	firstVD     = 16   // sector of the first volume descriptor
	maxVDs      = 64   // volume descriptors read before giving up
	maxDepth    = 1024 // directory levels
	maxCE       = 32   // continuation areas per record
	maxSUSP     = 64 << 10
	maxNameLen  = 1024
	maxExtents  = 1 << 16
	dirReadSize = 64 << 10 // directory bytes read at once
)

func init() {
	guest.Register(guest.Filesystem{
		Name:  Name,
		Probe: Probe,
		Open: func(r io.ReaderAt, size int64) (guest.FS, error) {
			f, err := Open(r, size)
			if err != nil {
				return nil, err
			}
			return f, nil
		},
	})
}

// Probe returns "iso9660" if r holds a volume descriptor ("CD001") at
// sector 16, else "". A UDF-only disc (no ISO 9660 bridge) is not one.
func Probe(r io.ReaderAt, size int64) string {
	var b [6]byte
	if size < (firstVD+1)*sectorSize {
		return ""
	}
	if n, _ := r.ReadAt(b[:], firstVD*sectorSize); n != len(b) {
		return ""
	}
	if string(b[1:6]) != "CD001" {
		return ""
	}
	return Name
}

// FS is an ISO 9660 file system opened read-only. It is safe for
// concurrent use: it holds no mutable state.
type FS struct {
	r       io.ReaderAt
	size    int64
	bs      int64 // logical block size
	rr      bool  // Rock Ridge in use (primary tree)
	skip    int   // SUSP bytes to skip at the start of each system use area
	joliet  bool  // Joliet tree in use
	rootRec []byte
	rootOff int64 // byte offset of the root directory's "." record
}

// errorf returns an error wrapping guest.ErrCorrupt.
func errorf(format string, args ...any) error {
	return fmt.Errorf("iso9660: "+format+": %w", append(args, guest.ErrCorrupt)...)
}

// Open opens the ISO 9660 file system at the start of r, size bytes long.
// It reads the volume descriptors and the root directory's first record,
// and fails with an error wrapping guest.ErrCorrupt if they do not hold
// together.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	f := &FS{r: r, size: size}
	var pvd, svd []byte
	buf := make([]byte, sectorSize)
	for i := int64(0); ; i++ {
		if i == maxVDs {
			return nil, errorf("no volume descriptor set terminator in %d sectors from sector %d", maxVDs, firstVD)
		}
		off := (firstVD + i) * sectorSize
		if err := f.readFull(buf, off); err != nil {
			return nil, fmt.Errorf("iso9660: volume descriptor %d: %w", i, err)
		}
		if string(buf[1:6]) != "CD001" {
			if pvd != nil {
				break // a set without a terminator: tolerate
			}
			return nil, errorf("sector %d: no volume descriptor (CD001)", firstVD+i)
		}
		typ := buf[0]
		if typ == 255 {
			break
		}
		switch {
		case typ == 1 && pvd == nil:
			pvd = bytes.Clone(buf)
		case typ == 2 && svd == nil && isJoliet(buf[88:120]):
			svd = bytes.Clone(buf)
		}
	}
	if pvd == nil {
		return nil, errorf("no primary volume descriptor")
	}
	bs := int64(binary.LittleEndian.Uint16(pvd[128:]))
	if bs != 512 && bs != 1024 && bs != 2048 {
		return nil, errorf("logical block size %d, want 512, 1024 or 2048", bs)
	}
	f.bs = bs
	// Rock Ridge: the primary root's "." record starts with SP.
	root := pvd[156 : 156+34]
	if root[0] != 34 {
		return nil, errorf("primary root directory record length %d, want 34", root[0])
	}
	rr, skip, err := f.detectRR(root)
	if err != nil {
		return nil, err
	}
	switch {
	case rr:
		f.rr, f.skip = true, skip
	case svd != nil:
		if svd[156] != 34 {
			return nil, errorf("Joliet root directory record length %d, want 34", svd[156])
		}
		f.joliet = true
		root = svd[156 : 156+34]
	}
	f.rootRec = bytes.Clone(root)
	f.rootOff = (int64(le32(root[2:])) + int64(root[1])) * bs
	return f, nil
}

// isJoliet reports whether a supplementary volume descriptor's escape
// sequences name UCS-2 level 1, 2 or 3.
func isJoliet(esc []byte) bool {
	for i := 0; i+3 <= len(esc); i++ {
		if esc[i] == '%' && esc[i+1] == '/' && (esc[i+2] == '@' || esc[i+2] == 'C' || esc[i+2] == 'E') {
			return true
		}
	}
	return false
}

// detectRR reads the first record of the root directory that root (the
// primary descriptor's root record) points at, and reports whether it
// starts with a SUSP SP entry and announces Rock Ridge, and SP's skip.
func (f *FS) detectRR(root []byte) (bool, int, error) {
	off := (int64(le32(root[2:])) + int64(root[1])) * f.bs
	var b [255]byte
	n, err := f.readSome(b[:], off)
	if n < 34 {
		if err == nil || err == io.EOF {
			return false, 0, errorf("root directory at byte %d: past the end of the device (%d bytes)", off, f.size)
		}
		return false, 0, fmt.Errorf("iso9660: root directory at byte %d: %w", off, err)
	}
	rec := b[:n]
	if int(rec[0]) < 34 || int(rec[0]) > len(rec) {
		return false, 0, errorf("root directory at byte %d: first record length %d", off, rec[0])
	}
	rec = rec[:rec[0]]
	su := sysUse(rec)
	if len(su) < 7 || su[0] != 'S' || su[1] != 'P' || su[2] < 7 || su[4] != 0xBE || su[5] != 0xEF {
		return false, 0, nil
	}
	skip := int(su[6])
	// Look for ER (any Rock Ridge identifier) or Rock Ridge fields in the
	// root's "." record, following its continuation areas.
	found := false
	err = f.eachSUSP(su, 0, func(sig string, e []byte) bool {
		switch sig {
		case "ER":
			if len(e) >= 8 {
				idLen := int(e[4])
				if 8+idLen <= len(e) {
					id := string(e[8 : 8+idLen])
					if id == "RRIP_1991A" || id == "IEEE_P1282" || id == "IEEE_1282" {
						found = true
					}
				}
			}
		case "PX", "NM", "TF", "SL", "RR", "PN":
			found = true
		}
		return !found
	})
	if err != nil {
		return false, 0, fmt.Errorf("iso9660: root directory: %w", err)
	}
	return found, skip, nil
}

// readFull reads len(p) bytes at off, past the end of the device being
// corruption.
func (f *FS) readFull(p []byte, off int64) error {
	if off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return errorf("%d bytes at byte %d: past the end of the device (%d bytes)", len(p), off, f.size)
	}
	n, err := f.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("iso9660: reading %d bytes at byte %d: %w", len(p), off, err)
}

// readSome reads at most len(p) bytes at off, never past the end of the
// file system.
func (f *FS) readSome(p []byte, off int64) (int, error) {
	if off < 0 || off >= f.size {
		return 0, io.EOF
	}
	if int64(len(p)) > f.size-off {
		p = p[:f.size-off]
	}
	return f.r.ReadAt(p, off)
}

// Root returns the root directory.
func (f *FS) Root() (guest.Node, error) {
	n, err := f.newNode(nil, f.rootRec, f.rootOff, nil)
	if err != nil {
		return nil, err
	}
	n.dir, n.loc, n.dirSize = true, le32(f.rootRec[2:])+uint32(f.rootRec[1]), int64(le32(f.rootRec[10:]))
	n.info.Mode, n.ext = fs.ModeDir|0o555, nil
	// The root's metadata is in the "." record of its directory (Rock
	// Ridge fields live there, not in the descriptor's copy).
	if f.rr {
		dot, off, err := f.readDot(n.loc)
		if err != nil {
			return nil, fmt.Errorf("iso9660: root directory: %w", err)
		}
		attr, err := f.rrAttrs(dot, off, true)
		if err != nil {
			return nil, fmt.Errorf("iso9660: root directory: %w", err)
		}
		n.applyRR(attr)
	}
	n.info.Name = ""
	return n, nil
}

// readDot reads the first ("."), record of the directory at block loc.
func (f *FS) readDot(loc uint32) ([]byte, int64, error) {
	off := int64(loc) * f.bs
	b := make([]byte, 255)
	n, err := f.readSome(b, off)
	if n < 34 {
		if err == nil || err == io.EOF {
			return nil, 0, errorf("directory at block %d: past the end of the device", loc)
		}
		return nil, 0, fmt.Errorf("iso9660: directory at block %d: %w", loc, err)
	}
	if l := int(b[0]); l < 34 || l > n {
		return nil, 0, errorf("directory at block %d: first record length %d", loc, b[0])
	}
	return b[:b[0]], off, nil
}

// sysUse returns the system use area of directory record rec.
func sysUse(rec []byte) []byte {
	nl := int(rec[32])
	s := 33 + nl
	if nl%2 == 0 {
		s++
	}
	if s >= len(rec) {
		return nil
	}
	return rec[s:]
}

// eachSUSP calls fn with every system use entry of area su (the skip
// bytes already removed) and of its continuation areas, until fn returns
// false, an ST entry or the end. Entries are bounds-checked; a malformed
// entry ends the area (as Linux does).
func (f *FS) eachSUSP(su []byte, recOff int64, fn func(sig string, e []byte) bool) error {
	total := 0
	for hop := 0; ; hop++ {
		var ce []byte
		for len(su) >= 4 {
			l := int(su[2])
			if l < 4 || l > len(su) {
				break
			}
			e := su[:l]
			su = su[l:]
			sig := string(e[:2])
			switch sig {
			case "ST":
				return nil
			case "CE":
				if l >= 28 {
					ce = e
				}
				continue
			}
			if !fn(sig, e) {
				return nil
			}
		}
		if ce == nil {
			return nil
		}
		if hop == maxCE {
			return errorf("record at byte %d: more than %d SUSP continuation areas", recOff, maxCE)
		}
		blk, off, n := int64(le32(ce[4:])), int64(le32(ce[12:])), int64(le32(ce[20:]))
		if off+n > f.bs || n == 0 {
			return errorf("record at byte %d: SUSP continuation area of %d bytes at %d in block %d, block size %d", recOff, n, off, blk, f.bs)
		}
		if total += int(n); total > maxSUSP {
			return errorf("record at byte %d: SUSP areas over %d bytes", recOff, maxSUSP)
		}
		su = make([]byte, n)
		if err := f.readFull(su, blk*f.bs+off); err != nil {
			return fmt.Errorf("record at byte %d: SUSP continuation area: %w", recOff, err)
		}
	}
}

// rrInfo is what a record's Rock Ridge entries say.
type rrInfo struct {
	px                    bool
	mode, nlink, uid, gid uint32
	serial                uint32
	pn                    bool
	rdev                  uint64
	name                  []byte
	nameSet               bool
	nameCont              bool
	link                  []byte
	linkSet               bool
	linkCont              bool // the last component continues
	linkSlash             bool // a "/" is due before the next component
	mtime, atime, ctime   time.Time
	cl                    bool
	clLoc                 uint32
	re                    bool
}

// rrAttrs parses the Rock Ridge entries of record rec (at byte recOff).
// rootDot says rec is the root's "." record (SP there, no skip).
func (f *FS) rrAttrs(rec []byte, recOff int64, rootDot bool) (*rrInfo, error) {
	su := sysUse(rec)
	if !rootDot {
		if f.skip >= len(su) {
			return &rrInfo{}, nil
		}
		su = su[f.skip:]
	}
	a := &rrInfo{}
	var perr error
	err := f.eachSUSP(su, recOff, func(sig string, e []byte) bool {
		switch sig {
		case "PX":
			if len(e) >= 36 {
				a.px = true
				a.mode, a.nlink, a.uid, a.gid = le32(e[4:]), le32(e[12:]), le32(e[20:]), le32(e[28:])
				if len(e) >= 44 {
					a.serial = le32(e[36:])
				}
			}
		case "PN":
			if len(e) >= 20 {
				hi, lo := le32(e[4:]), le32(e[12:])
				if hi == 0 && lo&^0xff != 0 {
					hi, lo = lo>>8, lo&0xff
				}
				a.pn, a.rdev = true, mkdev(hi, lo)
			}
		case "NM":
			if len(e) >= 5 {
				fl := e[4]
				if a.nameSet && !a.nameCont {
					break // a second name: keep the first
				}
				a.nameSet = true
				switch {
				case fl&0x02 != 0:
					a.name = append(a.name, '.')
				case fl&0x04 != 0:
					a.name = append(a.name, ".."...)
				default:
					a.name = append(a.name, e[5:]...)
				}
				a.nameCont = fl&0x01 != 0
				if len(a.name) > maxNameLen {
					perr = errorf("record at byte %d: Rock Ridge name over %d bytes", recOff, maxNameLen)
					return false
				}
			}
		case "SL":
			if len(e) >= 5 {
				if err := a.addLink(e[5:]); err != nil {
					perr = errorf("record at byte %d: %v", recOff, err)
					return false
				}
			}
		case "TF":
			if len(e) >= 5 {
				a.parseTF(e[4], e[5:])
			}
		case "CL":
			if len(e) >= 12 {
				a.cl, a.clLoc = true, le32(e[4:])
			}
		case "RE":
			a.re = true
		}
		return true
	})
	if perr != nil {
		return nil, perr
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

// addLink adds the components of one SL entry to the link target.
func (a *rrInfo) addLink(c []byte) error {
	a.linkSet = true
	for len(c) >= 2 {
		fl, l := c[0], int(c[1])
		if 2+l > len(c) {
			return errors.New("symbolic link (SL) component past its entry")
		}
		text := c[2 : 2+l]
		c = c[2+l:]
		if fl&0x08 != 0 { // ROOT
			a.link = append(a.link[:0], '/')
			a.linkSlash, a.linkCont = false, false
			continue
		}
		if fl&0x30 != 0 { // VOLROOT, HOST: no meaning here
			continue
		}
		if a.linkSlash && !a.linkCont {
			a.link = append(a.link, '/')
		}
		switch {
		case fl&0x02 != 0:
			a.link = append(a.link, '.')
		case fl&0x04 != 0:
			a.link = append(a.link, ".."...)
		default:
			a.link = append(a.link, text...)
		}
		a.linkSlash, a.linkCont = true, fl&0x01 != 0
		if len(a.link) > guest.MaxLinkLen {
			return fmt.Errorf("symbolic link (SL) target over %d bytes", guest.MaxLinkLen)
		}
	}
	return nil
}

// parseTF reads a TF entry's times (flags fl, data d).
func (a *rrInfo) parseTF(fl byte, d []byte) {
	size := 7
	if fl&0x80 != 0 {
		size = 17
	}
	for bit := range 7 {
		if fl&(1<<bit) == 0 {
			continue
		}
		if len(d) < size {
			return
		}
		var t time.Time
		if size == 7 {
			t = shortTime(d)
		} else {
			t = longTime(d)
		}
		d = d[size:]
		switch bit {
		case 1:
			a.mtime = t
		case 2:
			a.atime = t
		case 3:
			a.ctime = t
		}
	}
}

// shortTime decodes a 7-byte directory record date.
func shortTime(d []byte) time.Time {
	if d[0] == 0 && d[1] == 0 && d[2] == 0 {
		return time.Time{}
	}
	zone := time.FixedZone("", int(int8(d[6]))*15*60)
	return time.Date(1900+int(d[0]), time.Month(d[1]), int(d[2]), int(d[3]), int(d[4]), int(d[5]), 0, zone).UTC()
}

// longTime decodes a 17-byte volume descriptor date ("YYYYMMDDHHMMSScc"
// and a zone offset); all zeros or invalid digits give the zero time.
func longTime(d []byte) time.Time {
	var v [7]int
	widths := [7]int{4, 2, 2, 2, 2, 2, 2}
	p := 0
	for i, w := range widths {
		for range w {
			c := d[p]
			if c < '0' || c > '9' {
				return time.Time{}
			}
			v[i] = v[i]*10 + int(c-'0')
			p++
		}
	}
	if v[0] == 0 {
		return time.Time{}
	}
	zone := time.FixedZone("", int(int8(d[16]))*15*60)
	return time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], v[6]*10_000_000, zone).UTC()
}

// mkdev encodes a device number as Linux does (new_encode_dev).
func mkdev(major, minor uint32) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return (ma&0xfffff000)<<32 | (ma&0xfff)<<8 | (mi&0xffffff00)<<12 | mi&0xff
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// decodeJoliet decodes a UCS-2/UTF-16 big endian name.
func decodeJoliet(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// isoName strips a plain or Joliet identifier's ";version" and, for
// plain names, a trailing ".".
func isoName(s string, plain bool) string {
	if i := lastIndexByte(s, ';'); i >= 0 && allDigits(s[i+1:]) {
		s = s[:i]
	}
	if plain && len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func lastIndexByte(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// mode converts a POSIX st_mode to an fs.FileMode.
func mode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	switch m & 0o170000 {
	case 0o040000:
		fm |= fs.ModeDir
	case 0o120000:
		fm |= fs.ModeSymlink
	case 0o020000:
		fm |= fs.ModeDevice | fs.ModeCharDevice
	case 0o060000:
		fm |= fs.ModeDevice
	case 0o010000:
		fm |= fs.ModeNamedPipe
	case 0o140000:
		fm |= fs.ModeSocket
	}
	return fm
}

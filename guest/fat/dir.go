package fat

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/vmaconv/vmaconv/guest"
)

const (
	dirMode  = fs.ModeDir | 0o755
	fileMode = 0o644
	roMode   = 0o444

	attrReadOnly = 0x01
	attrVolume   = 0x08
	attrDir      = 0x10
	attrLFNMask  = 0x3F
	attrLFN      = 0x0F

	maxLFNSlots = 20 // 255 UTF-16 units
)

// node is a file or directory of a FAT file system.
type node struct {
	v      *volume
	info   guest.Info
	path   string // for errors
	first  uint32 // first cluster (FAT32 root: the root cluster)
	root   bool
	depth  int
	parent *node // for the directory loop check
}

// Info returns the node's metadata (see the package documentation).
func (n *node) Info() guest.Info { return n.info }

// Readlink returns ErrNotLink: FAT has no symbolic links.
func (n *node) Readlink() (string, error) {
	return "", fmt.Errorf("%s: %s: %w", n.v.typ, n.path, guest.ErrNotLink)
}

// ReadDir returns the directory's entries in their on-disk order, without
// "." and "..", deleted entries and volume labels.
func (n *node) ReadDir() ([]guest.Node, error) {
	v := n.v
	if !n.info.Mode.IsDir() {
		return nil, fmt.Errorf("%s: %s: %w", v.typ, n.path, guest.ErrNotDir)
	}
	if n.depth >= maxDepth {
		return nil, v.corrupt(n.path, "directory tree deeper than %d", maxDepth)
	}
	if !n.root {
		if !v.valid(n.first) {
			return nil, v.corrupt(n.path, "directory's first cluster %d outside 2..%d", n.first, v.nclu+1)
		}
		for p := n.parent; p != nil; p = p.parent {
			if p.first == n.first {
				return nil, v.corrupt(n.path, "directory cluster %d is also its ancestor %s", n.first, p.path)
			}
		}
	}
	d := dirParser{n: n}
	if n.root && v.bits != 32 {
		// The fixed root directory of FAT12/16.
		buf := make([]byte, min(v.rootLen, 64<<10))
		for off := int64(0); off < v.rootLen && !d.end; off += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), v.rootLen-off)]
			if err := v.readAt(b, v.rootOff+off, n.path, "root directory"); err != nil {
				return nil, err
			}
			if err := d.parse(b, v.rootOff+off); err != nil {
				return nil, err
			}
		}
		return d.nodes, nil
	}
	buf := make([]byte, v.cs)
	c := n.first
	for read := int64(0); ; read += v.cs {
		if read+v.cs > maxDirBytes {
			return nil, v.corrupt(n.path, "directory longer than %d bytes (a loop in its cluster chain?)", maxDirBytes)
		}
		if err := v.readAt(buf, v.clusterOff(c), n.path, fmt.Sprintf("directory cluster %d", c)); err != nil {
			return nil, err
		}
		if err := d.parse(buf, v.clusterOff(c)); err != nil {
			return nil, err
		}
		if d.end {
			break
		}
		next, err := v.next(c, n.path)
		if err != nil {
			return nil, err
		}
		if next == 0 {
			break
		}
		c = next
	}
	return d.nodes, nil
}

// dirParser decodes the 32-byte entries of one directory.
type dirParser struct {
	n     *node
	nodes []guest.Node
	end   bool // a 0x00 entry ended the directory

	lfn     [maxLFNSlots * 13]uint16
	lfnN    int  // slots of the long name being collected; 0: none
	lfnWant int  // next slot number expected (0: complete)
	lfnSum  byte // its checksum
}

// parse decodes the entries in b, which lies at byte off of the device.
func (d *dirParser) parse(b []byte, off int64) error {
	for i := 0; i+32 <= len(b); i += 32 {
		e := b[i : i+32]
		switch {
		case e[0] == 0x00:
			d.end = true
			return nil
		case e[0] == 0xE5:
			d.lfnN = 0
		case e[11]&attrLFNMask == attrLFN:
			d.slot(e)
		case e[11]&attrVolume != 0:
			d.lfnN = 0
		default:
			name := d.name(e)
			d.lfnN = 0
			if name == "." || name == ".." {
				continue
			}
			if len(d.nodes) >= guest.MaxDirEntries {
				return fmt.Errorf("%s: %s: %w", d.n.v.typ, d.n.path, guest.ErrTooManyEntries)
			}
			d.nodes = append(d.nodes, d.n.child(e, name, off+int64(i)))
		}
	}
	return nil
}

// slot collects one long-name slot. Slots come last first (0x40 flag),
// numbered down to 1, all with the checksum of their 8.3 entry.
func (d *dirParser) slot(e []byte) {
	seq := int(e[0] &^ 0x40)
	if seq < 1 || seq > maxLFNSlots {
		d.lfnN = 0
		return
	}
	if e[0]&0x40 != 0 {
		d.lfnN, d.lfnWant, d.lfnSum = seq, seq, e[13]
	} else if d.lfnN == 0 || seq != d.lfnWant || e[13] != d.lfnSum {
		d.lfnN = 0
		return
	}
	u := d.lfn[(seq-1)*13 : seq*13]
	for k := range 5 {
		u[k] = binary.LittleEndian.Uint16(e[1+2*k:])
	}
	for k := range 6 {
		u[5+k] = binary.LittleEndian.Uint16(e[14+2*k:])
	}
	for k := range 2 {
		u[11+k] = binary.LittleEndian.Uint16(e[28+2*k:])
	}
	d.lfnWant = seq - 1
}

// name returns the name of the 8.3 entry e: its long name if one was
// collected whole and matches, else its short name.
func (d *dirParser) name(e []byte) string {
	if d.lfnN > 0 && d.lfnWant == 0 && checksum(e) == d.lfnSum {
		u := d.lfn[:d.lfnN*13]
		for k, c := range u {
			if c == 0 {
				u = u[:k]
				break
			}
		}
		if len(u) > 0 {
			return string(utf16.Decode(u))
		}
	}
	return shortName(e)
}

// checksum is the VFAT checksum of an 8.3 name.
func checksum(e []byte) byte {
	var s byte
	for _, c := range e[:11] {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}

// shortName decodes an 8.3 name (code page 437), lowercasing the base
// name or the extension where the NT flags (byte 12: 0x08, 0x10) say so.
func shortName(e []byte) string {
	var base, ext [11]byte
	nb := copy(base[:], e[0:8])
	ne := copy(ext[:], e[8:11])
	if base[0] == 0x05 {
		base[0] = 0xE5
	}
	for nb > 0 && base[nb-1] == ' ' {
		nb--
	}
	for ne > 0 && ext[ne-1] == ' ' {
		ne--
	}
	var s strings.Builder
	dec := func(b []byte, lower bool) {
		for _, c := range b {
			switch {
			case c >= 0x80:
				s.WriteRune(cp437[c-0x80])
			case lower && c >= 'A' && c <= 'Z':
				s.WriteByte(c + 'a' - 'A')
			default:
				s.WriteByte(c)
			}
		}
	}
	dec(base[:nb], e[12]&0x08 != 0)
	if ne > 0 {
		s.WriteByte('.')
		dec(ext[:ne], e[12]&0x10 != 0)
	}
	return s.String()
}

// child makes the node of the 8.3 entry e, found at byte off.
func (n *node) child(e []byte, name string, off int64) *node {
	v := n.v
	le16 := func(o int) uint16 { return binary.LittleEndian.Uint16(e[o:]) }
	first := uint32(le16(26))
	if v.bits == 32 {
		first |= uint32(le16(20)) << 16
	}
	c := &node{v: v, first: first, depth: n.depth + 1, parent: n}
	if n.root {
		c.path = "/" + name
	} else {
		c.path = n.path + "/" + name
	}
	i := guest.Info{Name: name, Nlink: 1, Ino: uint64(off)}
	switch {
	case e[11]&attrDir != 0:
		i.Mode = dirMode
	case e[11]&attrReadOnly != 0:
		i.Mode = roMode
		i.Size = int64(binary.LittleEndian.Uint32(e[28:]))
	default:
		i.Mode = fileMode
		i.Size = int64(binary.LittleEndian.Uint32(e[28:]))
	}
	i.ModTime = dosTime(le16(24), le16(22), 0)
	i.ATime = dosTime(le16(18), 0, 0)
	i.CTime = dosTime(le16(16), le16(14), e[13])
	if i.ModTime.IsZero() {
		i.ModTime = i.CTime
	}
	c.info = i
	if !i.Mode.IsDir() {
		// Regular files keep no parent: only directories need the chain.
		c.parent = nil
	}
	return c
}

// dosTime decodes a FAT date and time (local time, taken as UTC), with
// the creation time's count of 10 ms (0..199). A zero or invalid date is
// the zero time.
func dosTime(date, tm uint16, tenms byte) time.Time {
	mon, day := int(date>>5&15), int(date&31)
	if date == 0 || mon < 1 || mon > 12 || day < 1 {
		return time.Time{}
	}
	h, m, s := int(tm>>11), int(tm>>5&63), int(tm&31)*2
	if h > 23 || m > 59 || s > 59 {
		h, m, s = 0, 0, 0
	}
	ns := 0
	if tenms < 200 {
		s += int(tenms) / 100
		ns = int(tenms) % 100 * 10e6
	}
	return time.Date(1980+int(date>>9), time.Month(mon), day, h, m, s, ns, time.UTC)
}

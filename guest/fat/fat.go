// Package fat reads FAT12, FAT16 and FAT32 file systems (EFI system
// partitions, USB sticks, floppies) read-only, for the guest tree.
//
// The FAT type is chosen by the count of data clusters, as Microsoft's
// specification says (fewer than 4085: FAT12, fewer than 65525: FAT16,
// else FAT32), except that a boot sector with the FAT32 layout (16-bit
// FAT size and root entry count both 0) is FAT32 whatever its cluster
// count, as Linux reads it. The FAT is read on demand, a few 16 KiB pieces at a time
// through a small cache, never whole; a file's cluster chain is walked
// lazily on ReadAt, remembering the last position reached and a bounded
// set of checkpoints, and physically contiguous clusters become one read
// of the device.
//
// Names are VFAT long names (UTF-16, decoded to UTF-8) where the long
// name slots are complete, in order and match the checksum of their 8.3
// entry, else the 8.3 name (code page 437, lowercased where the NT flags
// say so). Directories have mode 0755|ModeDir, files 0644, or 0444 with
// the read-only attribute. Times are stored as local time without a zone:
// they are returned as if they were UTC. ModTime is the last write time
// (2 s granularity), ATime the last access date, and CTime holds the
// creation time (with its 10 ms field). Ino is the byte offset of the
// node's 8.3 directory entry within the volume (the root's is 1); Nlink
// is 1. FAT has no holes, so files do not implement guest.Sparse.
//
// A directory may hold at most 65,536 32-byte entries (2 MiB), as the
// FAT specification says; longer directories are reported corrupt,
// which also bounds a looping directory chain. Directory trees deeper
// than 256 levels, or whose directories point back at an ancestor, are
// reported corrupt.
package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/vmaconv/vmaconv/guest"
)

const (
	// maxDirBytes bounds a directory: 65,536 entries of 32 bytes.
	maxDirBytes = 65536 * 32
	// maxDepth bounds the directory tree.
	maxDepth = 256
	// chunkSize is the unit of the FAT cache.
	chunkSize = 16 << 10
	// cacheChunks is the number of FAT pieces cached per volume.
	cacheChunks = 32
	// maxCheckpoints bounds the remembered chain positions of a file.
	maxCheckpoints = 1024
)

func init() {
	guest.Register(guest.Filesystem{
		Name:  "fat",
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

// volume is the geometry of an opened FAT file system, and its FAT cache.
type volume struct {
	r       io.ReaderAt
	size    int64
	typ     string // "fat12", "fat16", "fat32"
	bits    int    // 12, 16, 32
	cs      int64  // bytes per cluster
	fatOff  int64  // byte offset of the FAT in use
	fatLen  int64  // bytes of one FAT
	rootOff int64  // FAT12/16: the fixed root directory
	rootLen int64
	rootClu uint32 // FAT32: the root directory's first cluster
	dataOff int64  // byte offset of cluster 2
	nclu    uint32 // data clusters: valid cluster numbers are 2..nclu+1
	eoc     uint32 // first end-of-chain value
	bad     uint32 // bad cluster marker

	mu     sync.Mutex
	chunks [cacheChunks]chunk
	hand   int // clock hand
	last   int // the chunk last used
}

// chunk is one cached piece of the FAT.
type chunk struct {
	idx   int64
	data  []byte
	valid bool
	used  bool
}

// FS is a FAT file system opened read-only. It is safe for concurrent use.
type FS struct {
	v *volume
}

// Type returns "fat12", "fat16" or "fat32".
func (f *FS) Type() string { return f.v.typ }

// Root returns the root directory.
func (f *FS) Root() (guest.Node, error) {
	n := &node{v: f.v, path: "/", root: true, first: f.v.rootClu}
	n.info = guest.Info{Mode: dirMode, Nlink: 1, Ino: 1}
	return n, nil
}

// Probe returns "fat12", "fat16" or "fat32" if r starts with a FAT boot
// sector (a 0x55AA signature, a sane BIOS parameter block and media byte,
// and not NTFS or exFAT), else "".
func Probe(r io.ReaderAt, size int64) string {
	var b [512]byte
	if size < int64(len(b)) {
		return ""
	}
	if n, _ := r.ReadAt(b[:], 0); n != len(b) {
		return ""
	}
	if b[510] != 0x55 || b[511] != 0xAA {
		return ""
	}
	if oem := string(b[3:11]); oem == "EXFAT   " || oem == "NTFS    " {
		return ""
	}
	if m := b[21]; m != 0xF0 && m < 0xF8 {
		return ""
	}
	v, err := parse(b[:], size)
	if err != nil {
		return ""
	}
	return v.typ
}

// Open opens the FAT file system at the start of r, size bytes long. It
// checks the boot sector's BIOS parameter block and fails with an error
// wrapping guest.ErrCorrupt where it does not hold together.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	var b [512]byte
	if size < int64(len(b)) {
		return nil, fmt.Errorf("fat: device of %d bytes is smaller than a boot sector: %w", size, guest.ErrCorrupt)
	}
	if n, err := r.ReadAt(b[:], 0); n != len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("fat: reading the boot sector: %w", err)
	}
	v, err := parse(b[:], size)
	if err != nil {
		return nil, err
	}
	v.r = r
	return &FS{v: v}, nil
}

func bpbErr(format string, args ...any) error {
	return fmt.Errorf("fat: boot sector: %s: %w", fmt.Sprintf(format, args...), guest.ErrCorrupt)
}

func pow2(x int64) bool { return x > 0 && x&(x-1) == 0 }

// parse checks the BIOS parameter block in b (the first 512 bytes) and
// computes the layout.
func parse(b []byte, size int64) (*volume, error) {
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	bps := le16(11)
	spc := int64(b[13])
	reserved := le16(14)
	nfats := int64(b[16])
	rootEntries := le16(17)
	tot := le16(19)
	if tot == 0 {
		tot = le32(32)
	}
	fatsz := le16(22)
	// A FAT32 layout (no 16-bit FAT size, no fixed root directory) is
	// read as FAT32 even with fewer than 65,525 clusters, as Linux does
	// (mkfs.vfat -F 32 makes such small volumes).
	fat32Layout := fatsz == 0 && rootEntries == 0
	if fatsz == 0 {
		fatsz = le32(36)
	}
	switch {
	case bps < 512 || bps > 4096 || !pow2(bps):
		return nil, bpbErr("%d bytes per sector, not a power of two in 512..4096", bps)
	case !pow2(spc):
		return nil, bpbErr("%d sectors per cluster, not a power of two", spc)
	case reserved == 0:
		return nil, bpbErr("no reserved sectors")
	case nfats == 0:
		return nil, bpbErr("no FATs")
	case tot == 0:
		return nil, bpbErr("total sectors 0")
	case fatsz == 0:
		return nil, bpbErr("FAT size 0")
	}
	rootSectors := (rootEntries*32 + bps - 1) / bps
	meta := reserved + nfats*fatsz + rootSectors
	if meta >= tot {
		return nil, bpbErr("%d sectors of reserved area, FATs and root directory, %d sectors in all", meta, tot)
	}
	nclu := (tot - meta) / spc
	v := &volume{size: size, cs: bps * spc}
	switch {
	case nclu == 0:
		return nil, bpbErr("no data clusters")
	case nclu < 4085 && !fat32Layout:
		v.typ, v.bits, v.eoc, v.bad = "fat12", 12, 0xFF8, 0xFF7
	case nclu < 65525 && !fat32Layout:
		v.typ, v.bits, v.eoc, v.bad = "fat16", 16, 0xFFF8, 0xFFF7
	case nclu <= 0x0FFFFFF5:
		v.typ, v.bits, v.eoc, v.bad = "fat32", 32, 0x0FFFFFF8, 0x0FFFFFF7
	default:
		return nil, bpbErr("%d clusters, more than FAT32 holds", nclu)
	}
	v.nclu = uint32(nclu)
	v.fatLen = fatsz * bps
	v.fatOff = reserved * bps
	if need := ((nclu+2)*int64(v.bits) + 7) / 8; v.fatLen < need {
		return nil, bpbErr("%s FAT of %d bytes cannot hold %d clusters", v.typ, v.fatLen, nclu)
	}
	if v.bits == 32 {
		if !fat32Layout {
			return nil, bpbErr("%d clusters make FAT32, but the boot sector has a FAT12/16 layout (root entries %d, 16-bit FAT size %d)",
				nclu, rootEntries, le16(22))
		}
		if ver := le16(42); ver != 0 {
			return nil, bpbErr("FAT32 version %#x not supported", ver)
		}
		if flags := le16(40); flags&0x80 != 0 {
			active := flags & 0x0F
			if active >= nfats {
				return nil, bpbErr("active FAT %d of %d", active, nfats)
			}
			v.fatOff += active * v.fatLen
		}
		v.rootClu = uint32(le32(44))
		if v.rootClu < 2 || v.rootClu > v.nclu+1 {
			return nil, bpbErr("root directory cluster %d outside 2..%d", v.rootClu, v.nclu+1)
		}
	} else if rootEntries == 0 {
		return nil, bpbErr("%d clusters make %s, but the root directory has no entries", nclu, v.typ)
	}
	v.rootOff = (reserved + nfats*fatsz) * bps
	v.rootLen = rootEntries * 32
	v.dataOff = meta * bps
	if v.dataOff > size {
		return nil, bpbErr("data area at byte %d, past the end of the device (%d bytes)", v.dataOff, size)
	}
	return v, nil
}

// corrupt returns an error about the structures of the node at path.
func (v *volume) corrupt(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s: %w", v.typ, path, fmt.Sprintf(format, args...), guest.ErrCorrupt)
}

// readAt reads len(p) bytes at off of the device, for what at path.
func (v *volume) readAt(p []byte, off int64, path, what string) error {
	if off < 0 || off > v.size || int64(len(p)) > v.size-off {
		return v.corrupt(path, "%s at byte %d (%d bytes) past the end of the device (%d bytes)", what, off, len(p), v.size)
	}
	n, err := v.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %s: reading %s at byte %d: %w", v.typ, path, what, off, err)
}

// clusterOff returns the byte offset of data cluster c (2..nclu+1).
func (v *volume) clusterOff(c uint32) int64 {
	return v.dataOff + int64(c-2)*v.cs
}

// valid reports whether c is a data cluster.
func (v *volume) valid(c uint32) bool { return c >= 2 && c <= v.nclu+1 }

// fatRead copies the FAT's bytes at off into p, through the cache.
func (v *volume) fatRead(p []byte, off int64, path string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for len(p) > 0 {
		ci := off / chunkSize
		d, err := v.chunk(ci, path)
		if err != nil {
			return err
		}
		o := off - ci*chunkSize
		if o >= int64(len(d)) {
			return v.corrupt(path, "FAT byte %d past the FAT's %d bytes", off, v.fatLen)
		}
		n := copy(p, d[o:])
		p = p[n:]
		off += int64(n)
	}
	return nil
}

// chunk returns FAT piece ci, from the cache or the device (clock
// replacement). v.mu is held.
func (v *volume) chunk(ci int64, path string) ([]byte, error) {
	if c := &v.chunks[v.last]; c.valid && c.idx == ci {
		c.used = true
		return c.data, nil
	}
	for i := range v.chunks {
		if c := &v.chunks[i]; c.valid && c.idx == ci {
			c.used = true
			v.last = i
			return c.data, nil
		}
	}
	var c *chunk
	for {
		c = &v.chunks[v.hand]
		v.last = v.hand
		v.hand = (v.hand + 1) % cacheChunks
		if !c.valid || !c.used {
			break
		}
		c.used = false
	}
	n := min(chunkSize, v.fatLen-ci*chunkSize)
	if n <= 0 {
		return nil, v.corrupt(path, "FAT piece %d past the FAT's %d bytes", ci, v.fatLen)
	}
	if cap(c.data) < int(n) {
		c.data = make([]byte, chunkSize)
	}
	c.data = c.data[:n]
	c.valid = false
	if err := v.readAt(c.data, v.fatOff+ci*chunkSize, path, "FAT"); err != nil {
		return nil, err
	}
	c.idx, c.valid, c.used = ci, true, true
	return c.data, nil
}

// next returns the cluster after c in its chain (c must be valid), or 0
// at the end of the chain. A free, reserved, bad or out-of-range entry
// inside a chain is corrupt.
func (v *volume) next(c uint32, path string) (uint32, error) {
	var b [4]byte
	var e uint32
	switch v.bits {
	case 12:
		if err := v.fatRead(b[:2], int64(c)+int64(c/2), path); err != nil {
			return 0, err
		}
		e = uint32(binary.LittleEndian.Uint16(b[:]))
		if c&1 != 0 {
			e >>= 4
		}
		e &= 0xFFF
	case 16:
		if err := v.fatRead(b[:2], 2*int64(c), path); err != nil {
			return 0, err
		}
		e = uint32(binary.LittleEndian.Uint16(b[:]))
	default:
		if err := v.fatRead(b[:4], 4*int64(c), path); err != nil {
			return 0, err
		}
		e = binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF
	}
	switch {
	case e >= v.eoc:
		return 0, nil
	case v.valid(e):
		return e, nil
	case e == 0:
		return 0, v.corrupt(path, "cluster %d is followed by a free cluster in the FAT", c)
	case e == v.bad:
		return 0, v.corrupt(path, "cluster %d is followed by a bad-cluster mark", c)
	default:
		return 0, v.corrupt(path, "cluster %d is followed by %d, outside 2..%d", c, e, v.nclu+1)
	}
}

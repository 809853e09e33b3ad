package ext4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"time"

	"github.com/vmaconv/vmaconv/guest"
)

const (
	rootIno = 2

	modeFIFO = 0x1000
	modeChr  = 0x2000
	modeDir  = 0x4000
	modeBlk  = 0x6000
	modeReg  = 0x8000
	modeLnk  = 0xA000
	modeSock = 0xC000

	flagExtents    = 0x80000
	flagInlineData = 0x10000000

	xattrMagic       = 0xEA020000
	xattrIndexSystem = 7
)

// inode is a parsed inode: everything Info and the readers need, without
// the in-inode extended attributes (re-read by inlineData when needed).
type inode struct {
	ino                 uint64
	mode                uint16
	uid, gid            uint32
	size                uint64
	nlink               uint16
	flags               uint32
	atime, ctime, mtime time.Time
	block               [60]byte
}

// blockCache holds the last inode table block read, for ReadDir reading
// the inodes of one directory (usually neighbours). Not shared.
type blockCache struct {
	blk  uint64
	data []byte
}

// inodeLoc returns the byte offset of inode ino on the device.
func (f *fsys) inodeLoc(ino uint64) (blk uint64, off int64, err error) {
	s := f.s
	if ino == 0 || ino > uint64(s.inodesCount) {
		return 0, 0, fmt.Errorf("ext4: inode %d out of range 1..%d: %w", ino, s.inodesCount, guest.ErrCorrupt)
	}
	g := (ino - 1) / uint64(s.inodesPerGroup)
	i := (ino - 1) % uint64(s.inodesPerGroup)
	t, err := f.inodeTable(g)
	if err != nil {
		return 0, 0, fmt.Errorf("inode %d: %w", ino, err)
	}
	byteOff := i * uint64(s.inodeSize)
	return t + byteOff/uint64(f.bs), int64(byteOff % uint64(f.bs)), nil
}

// rawInode reads inode ino's bytes (s.inodeSize of them), through c if
// not nil.
func (f *fsys) rawInode(ino uint64, c *blockCache) ([]byte, error) {
	blk, off, err := f.inodeLoc(ino)
	if err != nil {
		return nil, err
	}
	what := func() string { return fmt.Sprintf("inode %d", ino) }
	if c == nil {
		b := make([]byte, f.s.inodeSize)
		if err := f.read(b, int64(blk)*f.bs+off, what); err != nil {
			return nil, err
		}
		return b, nil
	}
	if c.data == nil || c.blk != blk {
		if c.data == nil {
			c.data = make([]byte, f.bs)
		}
		c.data = c.data[:f.bs]
		if err := f.read(c.data, int64(blk)*f.bs, what); err != nil {
			c.data = nil
			return nil, err
		}
		c.blk = blk
	}
	return c.data[off : off+int64(f.s.inodeSize)], nil
}

// extraIsize returns the inode's i_extra_isize, checked.
func (f *fsys) extraIsize(ino uint64, b []byte) (int, error) {
	if len(b) <= 128 {
		return 0, nil
	}
	x := int(binary.LittleEndian.Uint16(b[0x80:]))
	if x&3 != 0 || 128+x > len(b) {
		return 0, fmt.Errorf("ext4: inode %d: extra inode size %d (inode size %d): %w", ino, x, len(b), guest.ErrCorrupt)
	}
	return x, nil
}

// inode reads and parses inode ino.
func (f *fsys) inode(ino uint64, c *blockCache) (*inode, error) {
	b, err := f.rawInode(ino, c)
	if err != nil {
		return nil, err
	}
	extra, err := f.extraIsize(ino, b)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	in := &inode{
		ino:   ino,
		mode:  le.Uint16(b[0x0:]),
		uid:   uint32(le.Uint16(b[0x2:])) | uint32(le.Uint16(b[0x78:]))<<16,
		gid:   uint32(le.Uint16(b[0x18:])) | uint32(le.Uint16(b[0x7A:]))<<16,
		size:  uint64(le.Uint32(b[0x4:])) | uint64(le.Uint32(b[0x6C:]))<<32,
		nlink: le.Uint16(b[0x1A:]),
		flags: le.Uint32(b[0x20:]),
	}
	copy(in.block[:], b[0x28:0x28+60])
	tm := func(lo int, xoff int) time.Time {
		sec := int64(int32(le.Uint32(b[lo:])))
		var ns int64
		if xoff+4 <= 128+extra {
			x := le.Uint32(b[xoff:])
			sec += int64(x&3) << 32
			ns = int64(x >> 2)
		}
		return time.Unix(sec, ns)
	}
	in.atime = tm(0x8, 0x8C)
	in.ctime = tm(0xC, 0x84)
	in.mtime = tm(0x10, 0x88)
	if in.mode == 0 {
		return nil, fmt.Errorf("ext4: inode %d: not in use (mode 0): %w", ino, guest.ErrCorrupt)
	}
	// Sizes fit int64 and the 2^32 logical blocks an inode can map.
	if in.size > uint64(f.bs)<<32 {
		return nil, fmt.Errorf("ext4: inode %d: size %d past 2^32 blocks: %w", ino, in.size, guest.ErrCorrupt)
	}
	return in, nil
}

// info returns the inode's metadata under name.
func (in *inode) info(name string) guest.Info {
	i := guest.Info{
		Name:    name,
		Mode:    fs.FileMode(in.mode & 0o777),
		Size:    int64(in.size),
		ModTime: in.mtime,
		ATime:   in.atime,
		CTime:   in.ctime,
		UID:     in.uid,
		GID:     in.gid,
		Nlink:   uint32(in.nlink),
		Ino:     in.ino,
	}
	if in.mode&0o4000 != 0 {
		i.Mode |= fs.ModeSetuid
	}
	if in.mode&0o2000 != 0 {
		i.Mode |= fs.ModeSetgid
	}
	if in.mode&0o1000 != 0 {
		i.Mode |= fs.ModeSticky
	}
	switch in.mode & 0xF000 {
	case modeReg:
	case modeDir:
		i.Mode |= fs.ModeDir
	case modeLnk:
		i.Mode |= fs.ModeSymlink
	case modeChr:
		i.Mode |= fs.ModeDevice | fs.ModeCharDevice
		i.Rdev = in.rdev()
	case modeBlk:
		i.Mode |= fs.ModeDevice
		i.Rdev = in.rdev()
	case modeFIFO:
		i.Mode |= fs.ModeNamedPipe
	case modeSock:
		i.Mode |= fs.ModeSocket
	default:
		i.Mode |= fs.ModeIrregular
	}
	return i
}

// rdev decodes a device node's number from i_block (the old 8:8 encoding
// in word 0, else the new one in word 1) into Linux's dev_t encoding.
func (in *inode) rdev() uint64 {
	var major, minor uint64
	if w := binary.LittleEndian.Uint32(in.block[0:]); w != 0 {
		major, minor = uint64(w>>8&0xff), uint64(w&0xff)
	} else {
		w := binary.LittleEndian.Uint32(in.block[4:])
		major = uint64(w >> 8 & 0xfff)
		minor = uint64(w&0xff) | uint64(w>>12&0xfff00)
	}
	return (major&0xfffff000)<<32 | (major&0xfff)<<8 | (minor&0xffffff00)<<12 | minor&0xff
}

// inlineData returns an inline-data inode's contents beyond i_block: the
// value of its system.data extended attribute, in the inode's extra
// space (empty if there is none).
func (f *fsys) inlineData(ino uint64) ([]byte, error) {
	b, err := f.rawInode(ino, nil)
	if err != nil {
		return nil, err
	}
	extra, err := f.extraIsize(ino, b)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	start := 128 + extra
	if len(b) <= 128 || start+4 > len(b) || le.Uint32(b[start:]) != xattrMagic {
		return nil, nil
	}
	base := start + 4
	end := len(b)
	for p := base; p+4 <= end && le.Uint32(b[p:]) != 0; {
		if p+16 > end {
			return nil, fmt.Errorf("ext4: inode %d: extended attribute entry at %d past the inode: %w", ino, p, guest.ErrCorrupt)
		}
		nameLen := int(b[p])
		index := b[p+1]
		voff := int(le.Uint16(b[p+2:]))
		vino := le.Uint32(b[p+4:])
		vsize := int64(le.Uint32(b[p+8:]))
		if p+16+nameLen > end {
			return nil, fmt.Errorf("ext4: inode %d: extended attribute name at %d past the inode: %w", ino, p, guest.ErrCorrupt)
		}
		if index == xattrIndexSystem && bytes.Equal(b[p+16:p+16+nameLen], []byte("data")) {
			if vino != 0 {
				return nil, fmt.Errorf("ext4: inode %d: inline data stored in inode %d (ea_inode) not supported", ino, vino)
			}
			if int64(base+voff)+vsize > int64(end) {
				return nil, fmt.Errorf("ext4: inode %d: inline data value %d+%d past the inode: %w", ino, voff, vsize, guest.ErrCorrupt)
			}
			return bytes.Clone(b[base+voff : base+voff+int(vsize)]), nil
		}
		p += (16 + nameLen + 3) &^ 3
	}
	return nil, nil
}

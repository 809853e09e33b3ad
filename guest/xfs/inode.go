package xfs

import (
	"fmt"
	"io/fs"
	"time"

	"github.com/vmaconv/vmaconv/guest"
)

// Inode data fork formats (di_format).
const (
	fmtDev     = 0
	fmtLocal   = 1
	fmtExtents = 2
	fmtBtree   = 3
)

// Inode mode type bits.
const (
	sIFMT   = 0o170000
	sIFIFO  = 0o010000
	sIFCHR  = 0o020000
	sIFDIR  = 0o040000
	sIFBLK  = 0o060000
	sIFREG  = 0o100000
	sIFLNK  = 0o120000
	sIFSOCK = 0o140000
)

const (
	diflagRealtime = 0x0001
	diflag2Bigtime = 0x0008
	diflag2Nrext64 = 0x0010
)

// inode is the part of an on-disk inode the reader uses.
type inode struct {
	ino                 uint64
	mode                uint16
	format              uint8
	uid, gid, nlink     uint32
	size                int64
	atime, mtime, ctime time.Time
	nextents            uint64
	flags               uint16
	rdev                uint64
	fork                []byte // the data fork's literal area (a copy)
}

// xfsTime decodes an inode timestamp.
func xfsTime(b []byte, bigtime bool) time.Time {
	if bigtime {
		ns := be.Uint64(b)
		// Nanoseconds since 1901-12-13T20:45:52Z (-2^31 s).
		return time.Unix(int64(ns/1e9)-(1<<31), int64(ns%1e9))
	}
	return time.Unix(int64(int32(be.Uint32(b))), int64(be.Uint32(b[4:])))
}

// inode reads and checks inode ino.
func (f *FS) inode(ino uint64) (*inode, error) {
	pos, bpos, err := f.sb.inoPos(ino)
	if err != nil {
		return nil, err
	}
	blk, err := f.block(bpos)
	if err != nil {
		return nil, fmt.Errorf("xfs: inode %d: %w", ino, unprefix(err))
	}
	b := blk[pos-bpos : pos-bpos+int64(f.sb.inodeSize)]
	if string(b[0:2]) != "IN" {
		return nil, corrupt("inode %d: bad magic %q, want \"IN\"", ino, b[0:2])
	}
	ip := &inode{ino: ino, mode: be.Uint16(b[2:]), format: b[5]}
	version := b[4]
	core := 100
	switch {
	case f.sb.version == 5 && version == 3:
		core = 176
		if got := be.Uint64(b[152:]); got != ino {
			return nil, corrupt("inode %d: records inode number %d", ino, got)
		}
	case f.sb.version == 4 && (version == 1 || version == 2):
	default:
		return nil, corrupt("inode %d: version %d on a version %d file system", ino, version, f.sb.version)
	}
	ip.uid = be.Uint32(b[8:])
	ip.gid = be.Uint32(b[12:])
	if version == 1 {
		ip.nlink = uint32(be.Uint16(b[6:]))
	} else {
		ip.nlink = be.Uint32(b[16:])
	}
	var flags2 uint64
	if version == 3 {
		flags2 = be.Uint64(b[120:])
	}
	bigtime := flags2&diflag2Bigtime != 0
	ip.atime = xfsTime(b[32:], bigtime)
	ip.mtime = xfsTime(b[40:], bigtime)
	ip.ctime = xfsTime(b[48:], bigtime)
	ip.size = int64(be.Uint64(b[56:]))
	if ip.size < 0 {
		return nil, corrupt("inode %d: size %d", ino, ip.size)
	}
	if flags2&diflag2Nrext64 != 0 {
		ip.nextents = be.Uint64(b[24:])
	} else {
		ip.nextents = uint64(be.Uint32(b[76:]))
	}
	forkoff := int(b[82])
	ip.flags = be.Uint16(b[90:])
	lit := int(f.sb.inodeSize) - core
	dsize := lit
	if forkoff != 0 {
		dsize = forkoff << 3
		if dsize >= lit {
			return nil, corrupt("inode %d: attribute fork offset %d past the inode's end", ino, dsize)
		}
	}
	ip.fork = append([]byte(nil), b[core:core+dsize]...)

	var okFormat bool
	switch ip.mode & sIFMT {
	case sIFDIR, sIFLNK:
		okFormat = ip.format == fmtLocal || ip.format == fmtExtents || ip.format == fmtBtree
	case sIFREG:
		okFormat = ip.format == fmtExtents || ip.format == fmtBtree || ip.format == fmtLocal
	case sIFCHR, sIFBLK, sIFIFO, sIFSOCK:
		okFormat = ip.format == fmtDev
		if ip.mode&sIFMT == sIFCHR || ip.mode&sIFMT == sIFBLK {
			d := be.Uint32(ip.fork)
			major, minor := uint64(d>>18), uint64(d&0x3ffff)
			ip.rdev = (major&0xfffff000)<<32 | (major&0xfff)<<8 | (minor&0xffffff00)<<12 | minor&0xff
		}
	default:
		return nil, corrupt("inode %d: unknown file type in mode 0%o", ino, ip.mode)
	}
	if !okFormat {
		return nil, corrupt("inode %d: data fork format %d for mode 0%o", ino, ip.format, ip.mode)
	}
	if ip.format == fmtExtents && ip.nextents > uint64(dsize/16) {
		return nil, corrupt("inode %d: %d extents do not fit in a %d-byte data fork", ino, ip.nextents, dsize)
	}
	if ip.format == fmtLocal && ip.size > int64(dsize) {
		return nil, corrupt("inode %d: inline data of %d bytes in a %d-byte data fork", ino, ip.size, dsize)
	}
	return ip, nil
}

// fileMode converts an XFS mode to an fs.FileMode.
func fileMode(m uint16) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	case sIFIFO:
		mode |= fs.ModeNamedPipe
	case sIFSOCK:
		mode |= fs.ModeSocket
	}
	return mode
}

// node is a guest.Node: the inode's metadata, read again when its
// contents are asked for.
type node struct {
	fs   *FS
	info guest.Info
}

func (f *FS) newNode(ip *inode, name string) *node {
	return &node{fs: f, info: guest.Info{
		Name:    name,
		Mode:    fileMode(ip.mode),
		Size:    ip.size,
		ModTime: ip.mtime,
		ATime:   ip.atime,
		CTime:   ip.ctime,
		UID:     ip.uid,
		GID:     ip.gid,
		Nlink:   ip.nlink,
		Ino:     ip.ino,
		Rdev:    ip.rdev,
	}}
}

// Info returns the node's metadata.
func (n *node) Info() guest.Info { return n.info }

// ReadDir returns a directory's entries, in the order stored.
func (n *node) ReadDir() ([]guest.Node, error) {
	if !n.info.Mode.IsDir() {
		return nil, fmt.Errorf("xfs: inode %d: %w", n.info.Ino, guest.ErrNotDir)
	}
	ip, err := n.fs.inode(n.info.Ino)
	if err != nil {
		return nil, err
	}
	return n.fs.readDir(ip)
}

// Open returns a regular file's contents.
func (n *node) Open() (guest.File, error) {
	if !n.info.Mode.IsRegular() {
		return nil, fmt.Errorf("xfs: inode %d: %w", n.info.Ino, guest.ErrNotRegular)
	}
	ip, err := n.fs.inode(n.info.Ino)
	if err != nil {
		return nil, err
	}
	if ip.flags&diflagRealtime != 0 {
		return nil, fmt.Errorf("xfs: inode %d: data on the realtime device, which vmaconv does not read", ip.ino)
	}
	return n.fs.newFile(ip), nil
}

// Readlink returns a symbolic link's target.
func (n *node) Readlink() (string, error) {
	if n.info.Mode&fs.ModeType != fs.ModeSymlink {
		return "", fmt.Errorf("xfs: inode %d: %w", n.info.Ino, guest.ErrNotLink)
	}
	ip, err := n.fs.inode(n.info.Ino)
	if err != nil {
		return "", err
	}
	return n.fs.readlink(ip)
}

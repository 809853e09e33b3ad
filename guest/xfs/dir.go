package xfs

import (
	"errors"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/guest"
)

// leafOffset is where a directory's leaf blocks start (XFS_DIR2_LEAF_OFFSET):
// its data blocks lie below.
const leafOffset = 32 << 30

// dirent is one entry of a directory as stored.
type dirent struct {
	name string
	ino  uint64
}

// readDir lists directory ip and reads every entry's inode.
func (f *FS) readDir(ip *inode) ([]guest.Node, error) {
	if ip.mode&sIFMT != sIFDIR {
		return nil, fmt.Errorf("xfs: inode %d: %w", ip.ino, guest.ErrNotDir)
	}
	var ents []dirent
	add := func(name []byte, ino uint64) error {
		if string(name) == "." || string(name) == ".." {
			return nil
		}
		if len(ents) >= guest.MaxDirEntries {
			return fmt.Errorf("xfs: directory inode %d: %w", ip.ino, guest.ErrTooManyEntries)
		}
		ents = append(ents, dirent{string(name), ino})
		return nil
	}
	var err error
	if ip.format == fmtLocal {
		err = f.shortformDir(ip, add)
	} else {
		err = f.blockDir(ip, add)
	}
	if err != nil {
		return nil, err
	}
	nodes := make([]guest.Node, 0, len(ents))
	for _, e := range ents {
		cp, err := f.inode(e.ino)
		if err != nil {
			return nil, fmt.Errorf("xfs: directory inode %d: entry %q: %w", ip.ino, e.name, unprefix(err))
		}
		nodes = append(nodes, f.newNode(cp, e.name))
	}
	return nodes, nil
}

// unprefix strips the "xfs: " of a nested error's message, keeping it
// wrapped, so that an error reads as one line with one prefix.
func unprefix(err error) error {
	if s := err.Error(); len(s) > 5 && s[:5] == "xfs: " {
		return prefixless{s[5:], err}
	}
	return err
}

type prefixless struct {
	msg string
	err error
}

func (p prefixless) Error() string { return p.msg }
func (p prefixless) Unwrap() error { return p.err }

// shortformDir lists a directory stored in the inode (xfs_dir2_sf).
func (f *FS) shortformDir(ip *inode, add func([]byte, uint64) error) error {
	b := ip.fork[:ip.size]
	if len(b) < 6 {
		return corrupt("directory inode %d: shortform header of %d bytes", ip.ino, len(b))
	}
	count, i8 := int(b[0]), b[1] != 0
	isz := 4
	if i8 {
		isz = 8
	}
	pos := 2 + isz
	ft := 0
	if f.sb.ftype {
		ft = 1
	}
	for i := 0; i < count; i++ {
		if pos+3 > len(b) {
			return corrupt("directory inode %d: shortform entry %d past the end", ip.ino, i)
		}
		nl := int(b[pos])
		name := pos + 3
		num := name + nl + ft
		if nl == 0 || num+isz > len(b) {
			return corrupt("directory inode %d: shortform entry %d of %d name bytes past the end", ip.ino, i, nl)
		}
		var ino uint64
		if i8 {
			ino = be.Uint64(b[num:])
		} else {
			ino = uint64(be.Uint32(b[num:]))
		}
		if err := add(b[name:name+nl], ino); err != nil {
			return err
		}
		pos = num + isz
	}
	return nil
}

// blockDir lists a directory in block, leaf or node format: the entries
// of its data blocks, which lie below leafOffset.
func (f *FS) blockDir(ip *inode, add func([]byte, uint64) error) error {
	m := &bmap{fs: f, ip: ip}
	dbs := int64(f.sb.dirBlkSize)
	limit := min(int64(leafOffset), ip.size)
	buf := make([]byte, dbs)
	blocks := 0
	for off := int64(0); off < limit; {
		start, end, err := m.data(off, limit)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		for d := start / dbs * dbs; d < end; d += dbs {
			if blocks++; blocks > guest.MaxDirEntries {
				return fmt.Errorf("xfs: directory inode %d: more than %d data blocks: %w", ip.ino, guest.MaxDirEntries, guest.ErrTooManyEntries)
			}
			if _, err := m.readAt(buf, d, d+dbs); err != nil {
				return err
			}
			if err := f.dirDataBlock(ip, buf, d, add); err != nil {
				return err
			}
		}
		off = (end + dbs - 1) / dbs * dbs
	}
	return nil
}

// dirDataBlock lists the entries of one directory block (a data block,
// or the single block of a block-format directory) at offset d.
func (f *FS) dirDataBlock(ip *inode, b []byte, d int64, add func([]byte, uint64) error) error {
	hdr := 16
	magicBlock, magicData := "XD2B", "XD2D"
	if f.sb.version == 5 {
		hdr = 64
		magicBlock, magicData = "XDB3", "XDD3"
	}
	end := len(b)
	switch string(b[0:4]) {
	case magicData:
	case magicBlock:
		// Leaf entries (8 bytes each) and a tail (count, stale) end the
		// block.
		count := uint64(be.Uint32(b[len(b)-8:]))
		if count > uint64(len(b)-hdr-8)/8 {
			return corrupt("directory inode %d: block at offset %d: %d leaf entries do not fit", ip.ino, d, count)
		}
		end = len(b) - 8 - int(count)*8
	default:
		return corrupt("directory inode %d: block at offset %d: bad magic %q, want %q or %q", ip.ino, d, b[0:4], magicData, magicBlock)
	}
	if f.sb.version == 5 {
		if owner := be.Uint64(b[40:]); owner != ip.ino {
			return corrupt("directory inode %d: block at offset %d belongs to inode %d", ip.ino, d, owner)
		}
	}
	ft := 0
	if f.sb.ftype {
		ft = 1
	}
	for pos := hdr; pos < end; {
		if end-pos < 8 {
			return corrupt("directory inode %d: block at offset %d: entry at %d past the end", ip.ino, d, pos)
		}
		if be.Uint16(b[pos:]) == 0xffff { // unused space
			n := int(be.Uint16(b[pos+2:]))
			if n < 8 || n%8 != 0 || n > end-pos {
				return corrupt("directory inode %d: block at offset %d: unused entry at %d of %d bytes", ip.ino, d, pos, n)
			}
			pos += n
			continue
		}
		if end-pos < 16 {
			return corrupt("directory inode %d: block at offset %d: entry at %d past the end", ip.ino, d, pos)
		}
		ino := be.Uint64(b[pos:])
		nl := int(b[pos+8])
		n := (8 + 1 + nl + ft + 2 + 7) &^ 7
		if nl == 0 || n > end-pos {
			return corrupt("directory inode %d: block at offset %d: entry at %d of %d name bytes past the end", ip.ino, d, pos, nl)
		}
		if err := add(b[pos+9:pos+9+nl], ino); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// readlink returns symbolic link ip's target.
func (f *FS) readlink(ip *inode) (string, error) {
	if ip.mode&sIFMT != sIFLNK {
		return "", fmt.Errorf("xfs: inode %d: %w", ip.ino, guest.ErrNotLink)
	}
	if ip.size > guest.MaxLinkLen {
		return "", corrupt("symbolic link inode %d: target of %d bytes, more than %d", ip.ino, ip.size, guest.MaxLinkLen)
	}
	if ip.format == fmtLocal {
		return string(ip.fork[:ip.size]), nil
	}
	// Remote: whole blocks, each with a header on version 5.
	m := &bmap{fs: f, ip: ip}
	bs := int64(f.sb.blockSize)
	hdr := int64(0)
	if f.sb.version == 5 {
		hdr = 56
	}
	target := make([]byte, 0, ip.size)
	buf := make([]byte, bs)
	for fb := int64(0); int64(len(target)) < ip.size; fb++ {
		if fb > guest.MaxLinkLen/(bs-hdr)+1 {
			return "", corrupt("symbolic link inode %d: target spans too many blocks", ip.ino)
		}
		e, ok, err := m.find(uint64(fb))
		if err != nil {
			return "", err
		}
		if !ok || e.off > uint64(fb) || e.unwritten {
			return "", corrupt("symbolic link inode %d: no block for target offset %d", ip.ino, len(target))
		}
		phys, _ := f.sb.fsbPos(e.blk, e.n)
		if err := f.read(buf, phys+(fb-int64(e.off))*bs); err != nil {
			return "", fmt.Errorf("xfs: symbolic link inode %d: %w", ip.ino, unprefix(err))
		}
		if fb == 0 && hdr > 0 && string(buf[0:4]) != "XSLM" {
			// mkfs.xfs 6.x protofiles write remote link targets without
			// the header; read such a target as it is.
			hdr = 0
		}
		want := min(ip.size-int64(len(target)), bs-hdr)
		if hdr > 0 {
			if string(buf[0:4]) != "XSLM" {
				return "", corrupt("symbolic link inode %d: block %d: bad magic %q, want \"XSLM\"", ip.ino, fb, buf[0:4])
			}
			o, n := int64(be.Uint32(buf[4:])), int64(be.Uint32(buf[8:]))
			if o != int64(len(target)) || n != want {
				return "", corrupt("symbolic link inode %d: block %d holds %d bytes at %d, want %d at %d", ip.ino, fb, n, o, want, len(target))
			}
			if owner := be.Uint64(buf[16:]); owner != ip.ino {
				return "", corrupt("symbolic link inode %d: block %d belongs to inode %d", ip.ino, fb, owner)
			}
		}
		target = append(target, buf[hdr:hdr+want]...)
	}
	return string(target), nil
}

package ext4

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/guest"
)

// maxDirSize bounds the bytes of directory blocks ReadDir reads (holes
// are skipped without reading): more than MaxDirEntries entries of the
// longest names, with room for deleted ones.
const maxDirSize = 256 << 20

// maxDirHoles bounds the holes in a directory (Linux allows none but in
// rare htree cases).
const maxDirHoles = 1 << 10

// dirChunk is how many bytes of a directory ReadDir reads at once.
const dirChunk = 64 << 10

// node is one inode found under a name. Immutable, so safe for
// concurrent use.
type node struct {
	fs   *fsys
	in   *inode
	name string
}

// Info returns the node's metadata.
func (n *node) Info() guest.Info { return n.in.info(n.name) }

func (n *node) isType(t uint16) bool { return n.in.mode&0xF000 == t }

// Open returns a regular file's contents.
func (n *node) Open() (guest.File, error) {
	if !n.isType(modeReg) {
		return nil, fmt.Errorf("ext4: inode %d (%q): %w", n.in.ino, n.name, guest.ErrNotRegular)
	}
	return n.fs.open(n.in)
}

// Readlink returns a symbolic link's target: from i_block for a fast
// link, else from its data.
func (n *node) Readlink() (string, error) {
	if !n.isType(modeLnk) {
		return "", fmt.Errorf("ext4: inode %d (%q): %w", n.in.ino, n.name, guest.ErrNotLink)
	}
	in := n.in
	if in.size > guest.MaxLinkLen {
		return "", fmt.Errorf("ext4: inode %d (%q): symbolic link target of %d bytes > %d: %w", in.ino, n.name, in.size, guest.MaxLinkLen, guest.ErrCorrupt)
	}
	if in.flags&(flagExtents|flagInlineData) == 0 && in.size < 60 {
		return string(in.block[:in.size]), nil
	}
	f, err := n.fs.open(in)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		return "", err
	}
	return string(b), nil
}

// ReadDir returns the directory's entries in on-disk order, read
// linearly (htree index blocks read as empty blocks).
func (n *node) ReadDir() ([]guest.Node, error) {
	if !n.isType(modeDir) {
		return nil, fmt.Errorf("ext4: inode %d (%q): %w", n.in.ino, n.name, guest.ErrNotDir)
	}
	if err := n.fs.dirErr(n.in.ino); err != nil {
		return nil, err
	}
	nodes, err := n.readDir()
	if err != nil {
		n.fs.setDirErr(n.in.ino, err)
	}
	return nodes, err
}

// dirErr returns the error a directory's last ReadDir failed with: a
// damaged directory holding thousands of entries costs one read, however
// many entries of other directories link to it.
func (f *fsys) dirErr(ino uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dirErrs[ino]
}

func (f *fsys) setDirErr(ino uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.dirErrs) >= maxTableCache {
		clear(f.dirErrs)
	}
	f.dirErrs[ino] = err
}

func (n *node) readDir() ([]guest.Node, error) {
	d := &dirReader{fs: n.fs, dir: n.in.ino}
	in := n.in
	if in.flags&flagInlineData != 0 {
		extra, err := n.fs.inlineData(in.ino)
		if err != nil {
			return nil, err
		}
		// i_block: the parent's inode number, then entries; the rest of
		// the entries are the system.data attribute's value.
		if err := d.block(in.block[4:], 4); err != nil {
			return nil, err
		}
		if len(extra) > 0 {
			if err := d.block(extra, 60); err != nil {
				return nil, err
			}
		}
		return d.nodes, nil
	}
	bs := uint64(n.fs.bs)
	if in.size%bs != 0 {
		return nil, fmt.Errorf("ext4: directory inode %d: size %d not a multiple of the block size %d: %w", in.ino, in.size, bs, guest.ErrCorrupt)
	}
	if in.size > maxDirSize || in.size > n.fs.devBlocks*bs {
		return nil, fmt.Errorf("ext4: directory inode %d: size %d > %d or larger than the file system: %w", in.ino, in.size, maxDirSize, guest.ErrCorrupt)
	}
	m := newMapper(n.fs, in)
	nblocks := in.size / bs
	buf := make([]byte, min(dirChunk, in.size))
	holes := 0
	for l := uint64(0); l < nblocks; {
		r, err := m.lookup(l)
		if err != nil {
			return nil, err
		}
		cnt := min(r.n, nblocks-l)
		if r.kind == runData {
			cnt = min(cnt, uint64(len(buf))/bs)
			b := buf[:cnt*bs]
			if err := n.fs.read(b, int64(r.pblk)*int64(bs), func() string { return fmt.Sprintf("directory inode %d: block %d", in.ino, l) }); err != nil {
				return nil, err
			}
			for i := uint64(0); i < cnt; i++ {
				if err := d.block(b[i*bs:(i+1)*bs], int64((l+i)*bs)); err != nil {
					return nil, err
				}
			}
		} else if holes++; holes > maxDirHoles {
			return nil, fmt.Errorf("ext4: directory inode %d: more than %d holes: %w", in.ino, maxDirHoles, guest.ErrCorrupt)
		}
		l += cnt
	}
	return d.nodes, nil
}

// dirReader collects a directory's entries.
type dirReader struct {
	fs    *fsys
	dir   uint64
	nodes []guest.Node
	cache blockCache
}

// block parses the directory entries filling b (at byte pos of the
// directory).
func (d *dirReader) block(b []byte, pos int64) error {
	le := binary.LittleEndian
	f := d.fs
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return fmt.Errorf("ext4: directory inode %d: entry at %d past its block: %w", d.dir, pos+int64(off), guest.ErrCorrupt)
		}
		ino := uint64(le.Uint32(b[off:]))
		recLen := int(le.Uint16(b[off+4:]))
		if f.bs == 65536 && (recLen == 65535 || recLen == 0) {
			recLen = 65536
		}
		nameLen := int(b[off+6])
		if !f.s.filetypeInDirent {
			nameLen = int(le.Uint16(b[off+6:]))
		}
		if recLen < 8 || recLen%4 != 0 || off+recLen > len(b) || 8+nameLen > recLen {
			return fmt.Errorf("ext4: directory inode %d: entry at %d: record length %d, name length %d in %d bytes: %w",
				d.dir, pos+int64(off), recLen, nameLen, len(b)-off, guest.ErrCorrupt)
		}
		name := b[off+8 : off+8+nameLen]
		off += recLen
		if ino == 0 || string(name) == "." || string(name) == ".." {
			continue
		}
		if len(d.nodes) >= guest.MaxDirEntries {
			return fmt.Errorf("ext4: directory inode %d: %w", d.dir, guest.ErrTooManyEntries)
		}
		in, err := f.inode(ino, &d.cache)
		if err != nil {
			return fmt.Errorf("%w (entry %q of directory inode %d)", err, name, d.dir)
		}
		d.nodes = append(d.nodes, &node{fs: f, in: in, name: string(name)})
	}
	return nil
}

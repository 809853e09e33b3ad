//go:build linux

package fusefs

import (
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vmaconv/vmaconv/guest"
)

// NewTree mounts a file tree (see guest.Tree) at dir, read-only: its
// directories, regular files, symbolic links (shown, never followed by
// vmaconv) and special files with their modes, owners and times. Entries
// whose names cannot name a file are left out; of entries sharing a name,
// the first is shown.
func NewTree(dir string, root guest.Node, name string) (*Mount, error) {
	if err := available(); err != nil {
		return nil, err
	}
	return mount(dir, &treeNode{n: root, open: new(atomic.Int64)}, name)
}

// treeNode is one node of a mounted tree.
type treeNode struct {
	fs.Inode
	n    guest.Node
	open *atomic.Int64 // shared by the whole mount
}

var (
	_ fs.NodeGetattrer  = (*treeNode)(nil)
	_ fs.NodeLookuper   = (*treeNode)(nil)
	_ fs.NodeReaddirer  = (*treeNode)(nil)
	_ fs.NodeOpener     = (*treeNode)(nil)
	_ fs.NodeReleaser   = (*treeNode)(nil)
	_ fs.NodeReader     = (*treeNode)(nil)
	_ fs.NodeReadlinker = (*treeNode)(nil)
)

// errno maps a guest error onto the errno a program expects.
func errno(err error) syscall.Errno {
	switch {
	case errors.Is(err, guest.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, guest.ErrNotRegular):
		return syscall.EISDIR
	case errors.Is(err, guest.ErrNotLink):
		return syscall.EINVAL
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	}
	return syscall.EIO
}

// unixType returns the S_IF type bits of a guest mode.
func unixType(m iofs.FileMode) uint32 {
	switch {
	case m.IsDir():
		return syscall.S_IFDIR
	case m&iofs.ModeSymlink != 0:
		return syscall.S_IFLNK
	case m&iofs.ModeCharDevice != 0:
		return syscall.S_IFCHR
	case m&iofs.ModeDevice != 0:
		return syscall.S_IFBLK
	case m&iofs.ModeNamedPipe != 0:
		return syscall.S_IFIFO
	case m&iofs.ModeSocket != 0:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

func (t *treeNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(t.n.Info(), &out.Attr)
	return 0
}

func fillAttr(i guest.Info, a *fuse.Attr) {
	m := i.Mode
	a.Mode = unixType(m) | uint32(m.Perm())
	if m&iofs.ModeSetuid != 0 {
		a.Mode |= syscall.S_ISUID
	}
	if m&iofs.ModeSetgid != 0 {
		a.Mode |= syscall.S_ISGID
	}
	if m&iofs.ModeSticky != 0 {
		a.Mode |= syscall.S_ISVTX
	}
	if m&iofs.ModeIrregular != 0 {
		a.Mode = syscall.S_IFREG // an unreadable volume: a file that cannot be opened
	}
	a.Size = uint64(max(i.Size, 0))
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Nlink = max(i.Nlink, 1)
	a.Uid, a.Gid = i.UID, i.GID
	a.Rdev = uint32(i.Rdev)
	mt, at, ct := i.ModTime, i.ATime, i.CTime
	if at.IsZero() {
		at = mt
	}
	if ct.IsZero() {
		ct = mt
	}
	if !mt.IsZero() {
		a.SetTimes(&at, &mt, &ct)
	}
}

// child returns the first entry named name, or nil.
func (t *treeNode) child(name string) (guest.Node, syscall.Errno) {
	nodes, err := t.n.ReadDir()
	if err != nil {
		return nil, errno(err)
	}
	for _, c := range nodes {
		if c.Info().Name == name {
			return c, 0
		}
	}
	return nil, syscall.ENOENT
}

func (t *treeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !guest.ValidName(name) {
		return nil, syscall.ENOENT
	}
	c, e := t.child(name)
	if e != 0 {
		return nil, e
	}
	i := c.Info()
	fillAttr(i, &out.Attr)
	return t.NewInode(ctx, &treeNode{n: c, open: t.open}, fs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT}), 0
}

func (t *treeNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	nodes, err := t.n.ReadDir()
	if err != nil {
		return nil, errno(err)
	}
	seen := make(map[string]bool, len(nodes))
	entries := make([]fuse.DirEntry, 0, len(nodes))
	for _, c := range nodes {
		i := c.Info()
		if !guest.ValidName(i.Name) || seen[i.Name] {
			continue
		}
		seen[i.Name] = true
		var a fuse.Attr
		fillAttr(i, &a)
		entries = append(entries, fuse.DirEntry{Name: i.Name, Mode: a.Mode & syscall.S_IFMT})
	}
	return fs.NewListDirStream(entries), 0
}

func (t *treeNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := t.n.Readlink()
	if err != nil {
		return nil, errno(err)
	}
	return []byte(s), 0
}

// fileHandle is an open regular file.
type fileHandle struct{ f guest.File }

func (t *treeNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	f, err := t.n.Open()
	if err != nil {
		return nil, 0, errno(err)
	}
	t.open.Add(1)
	return &fileHandle{f}, fuse.FOPEN_KEEP_CACHE, 0
}

func (t *treeNode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if _, ok := fh.(*fileHandle); ok {
		t.open.Add(-1)
	}
	return 0
}

// Read serves a read whole or fails with EIO (a short read would tell the
// kernel the file ends there).
func (t *treeNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	size := h.f.Size()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), size-off)]
	n, err := h.f.ReadAt(p, off)
	if n < len(p) || (err != nil && err != io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(p), 0
}

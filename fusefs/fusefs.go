//go:build linux

// Package fusefs mounts read-only files backed by io.ReaderAt — an
// archive's disks and configs — as a FUSE file system, through
// github.com/hanwen/go-fuse/v2. Files report their holes to lseek
// (SEEK_DATA, SEEK_HOLE) from a format.Extenter, so that cp --sparse, tar
// and the kernel's loop driver see them.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vmaconv/vmaconv/format"
)

// File is one file of the mount.
type File struct {
	Name   string // a plain file name: no '/', not "." or ".."
	Size   int64
	Data   io.ReaderAt     // parallel calls allowed
	Map    format.Extenter // optional: ranges that read as zeros
	Stored int64           // bytes it takes (st_blocks), if known; else Size
	MTime  time.Time       // its modification time (the archive's creation time)
}

// ErrUnavailable means FUSE cannot be used here.
var ErrUnavailable = errors.New("FUSE is not available")

// Mount is a mounted file system.
type Mount struct {
	dir string
	srv *fuse.Server
}

// New mounts files at dir, read-only. Run as root it mounts directly,
// without the fusermount helper; otherwise it uses fusermount3 or
// fusermount.
func New(dir string, files []File, name string) (*Mount, error) {
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("%w: %v (load the fuse module; in a container pass --device /dev/fuse --cap-add SYS_ADMIN; vmaconv serve needs neither)", ErrUnavailable, err)
	} else {
		f.Close()
	}
	seen := map[string]bool{}
	for _, f := range files {
		if f.Name == "" || f.Name == "." || f.Name == ".." || containsSlash(f.Name) || seen[f.Name] {
			return nil, fmt.Errorf("fusefs: bad or repeated file name %q", f.Name)
		}
		seen[f.Name] = true
	}
	forever := time.Hour // nothing ever changes
	root := &dirNode{files: files}
	mo := fuse.MountOptions{FsName: name, Name: "vmaconv", MaxReadAhead: 1 << 20}
	if os.Geteuid() == 0 {
		// The mount system call itself; read-only is a flag there.
		mo.DirectMount, mo.DirectMountStrict = true, true
		mo.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	} else {
		mo.Options = []string{"ro"} // for fusermount
	}
	srv, err := fs.Mount(dir, root, &fs.Options{
		EntryTimeout: &forever, AttrTimeout: &forever, NegativeTimeout: &forever,
		MountOptions: mo,
	})
	if err != nil {
		return nil, fmt.Errorf("mounting %s: %w", dir, err)
	}
	return &Mount{dir: dir, srv: srv}, nil
}

func containsSlash(s string) bool {
	for i := range len(s) {
		if s[i] == '/' || s[i] == 0 {
			return true
		}
	}
	return false
}

// Unmount unmounts; if the file system is busy it is detached (lazily
// unmounted), so that it goes once the last file is closed.
func (m *Mount) Unmount() error {
	if err := m.srv.Unmount(); err != nil {
		if derr := syscall.Unmount(m.dir, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmounting %s: %v (and detaching: %v)", m.dir, err, derr)
		}
	}
	m.srv.Wait()
	return nil
}

// Wait returns once the file system is unmounted (by Unmount, or by
// umount from outside).
func (m *Mount) Wait() { m.srv.Wait() }

// dirNode is the root directory.
type dirNode struct {
	fs.Inode
	files []File
}

var _ fs.NodeOnAdder = (*dirNode)(nil)

func (d *dirNode) OnAdd(ctx context.Context) {
	for i := range d.files {
		f := &d.files[i]
		ch := d.NewPersistentInode(ctx, &fileNode{f: f}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: uint64(i + 2)})
		d.AddChild(f.Name, ch, false)
	}
}

func (d *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	return 0
}

// fileNode is one file.
type fileNode struct {
	fs.Inode
	f *File
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeLseeker   = (*fileNode)(nil)
)

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(n.f.Size)
	stored := n.f.Stored
	if stored <= 0 && n.f.Map == nil {
		stored = n.f.Size
	}
	out.Blocks = uint64(stored+511) / 512
	out.Blksize = 4096
	out.Nlink = 1
	if !n.f.MTime.IsZero() {
		out.SetTimes(nil, &n.f.MTime, &n.f.MTime)
	}
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= n.f.Size {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), n.f.Size-off)]
	got, err := n.f.Data.ReadAt(p, off)
	if got < len(p) && err != nil && err != io.EOF {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(p[:got]), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the map (the end of the file
// is a hole); other whences are the kernel's.
func (n *fileNode) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	size := n.f.Size
	if int64(off) >= size || off > 1<<62 {
		return 0, syscall.ENXIO
	}
	pos := int64(off)
	switch whence {
	case seekData:
		if n.f.Map == nil {
			return off, 0
		}
		for pos < size {
			x, err := n.f.Map.Extent(pos, size-pos)
			if err != nil || x.Length <= 0 {
				return 0, syscall.EIO
			}
			if !x.Zero {
				return uint64(pos), 0
			}
			pos += x.Length
		}
		return 0, syscall.ENXIO
	case seekHole:
		if n.f.Map == nil {
			return uint64(size), 0
		}
		for pos < size {
			x, err := n.f.Map.Extent(pos, size-pos)
			if err != nil || x.Length <= 0 {
				return 0, syscall.EIO
			}
			if x.Zero {
				return uint64(pos), 0
			}
			pos += x.Length
		}
		return uint64(size), 0
	}
	return 0, syscall.EINVAL
}

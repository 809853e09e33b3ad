//go:build linux

// Package fusefs mounts read-only files backed by format.Sources — an
// archive's disks and configs, an image's disk — as a FUSE file system,
// through github.com/hanwen/go-fuse/v2. Files report their holes to lseek
// (SEEK_DATA, SEEK_HOLE) from their format.ZeroMapper, so that cp --sparse,
// tar and the kernel's loop driver see them.
package fusefs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vmaconv/vmaconv/format"
)

// File is one file of the mount.
type File struct {
	Name string // a plain file name: no '/', not "." or ".."
	// Source is the file's content: its Size is the file's, and its
	// ReadAt is called in parallel. If it is a format.ZeroMapper, SEEK_DATA
	// and SEEK_HOLE answer from its map. If it is a format.Stored, the
	// file takes the bytes it stores (st_blocks); else its size, unless
	// it has a map (then 0: the size is not known). The mount never
	// closes it.
	Source format.Source
	MTime  time.Time // its modification time (the archive's creation time)
}

// ErrUnavailable means FUSE cannot be used here.
var ErrUnavailable = errors.New("FUSE is not available")

// Mount is a mounted file system. Its methods are safe for concurrent use.
type Mount struct {
	dir      string
	srv      *fuse.Server
	conn     uint64 // the FUSE connection's id; 0 if unknown
	open     *atomic.Int64
	detached atomic.Bool
	gone     chan struct{} // closed when the server has ended
}

// New mounts files at dir, read-only. Run as root it mounts directly,
// without the fusermount helper; otherwise it uses fusermount3 or
// fusermount.
func New(dir string, files []File, name string) (*Mount, error) {
	if err := available(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, f := range files {
		if f.Name == "" || f.Name == "." || f.Name == ".." || containsSlash(f.Name) || seen[f.Name] {
			return nil, fmt.Errorf("fusefs: bad or repeated file name %q", f.Name)
		}
		seen[f.Name] = true
	}
	return mount(dir, &dirNode{files: files, open: new(atomic.Int64)}, name)
}

// mount mounts the tree under root at dir, read-only.
func mount(dir string, root fs.InodeEmbedder, name string) (*Mount, error) {
	forever := time.Hour // nothing ever changes
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
	m := &Mount{dir: dir, srv: srv, open: opened(root), gone: make(chan struct{})}
	m.conn, _ = connection(dir) // only Abort needs it
	go func() { srv.Wait(); close(m.gone) }()
	return m, nil
}

// opened returns the counter of open files of a mount's root.
func opened(root fs.InodeEmbedder) *atomic.Int64 {
	switch r := root.(type) {
	case *dirNode:
		return r.open
	case *treeNode:
		return r.open
	}
	return new(atomic.Int64)
}

// available checks that FUSE can be used.
func available() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v (load the fuse module; in a container pass --device /dev/fuse --cap-add SYS_ADMIN; vmaconv serve needs neither)", ErrUnavailable, err)
	}
	return f.Close()
}

func containsSlash(s string) bool {
	for i := range len(s) {
		if s[i] == '/' || s[i] == 0 {
			return true
		}
	}
	return false
}

// Unmount unmounts. If files are open (a loop device attached to one
// holds it open) or the file system is otherwise busy, it is detached
// (lazily unmounted) instead: the directory is free at once, and what is
// open is served until the last of it is closed. Unmount returns then.
func (m *Mount) Unmount() error {
	select {
	case <-m.gone: // unmounted from outside, or aborted
		return nil
	default:
	}
	var err error
	if n := m.OpenFiles(); n > 0 {
		err = fmt.Errorf("%d files open", n)
	} else {
		err = m.srv.Unmount()
	}
	if err != nil {
		if derr := m.detach(); derr != nil {
			return fmt.Errorf("unmounting %s: %v (and detaching: %v)", m.dir, err, derr)
		}
	}
	<-m.gone
	return nil
}

// OpenFiles returns how many files of the mount are open now; a loop
// device attached to a file holds it open until it is detached. Once the
// file system is gone (Wait returns) it is 0, whatever releases were still
// on their way.
func (m *Mount) OpenFiles() int {
	select {
	case <-m.gone:
		return 0
	default:
		return int(m.open.Load())
	}
}

// Abort ends the file system at once, open files or not: the FUSE
// connection is aborted, so that reads of files still open fail
// (ENOTCONN) and Wait returns, and the directory is detached. Aborting
// needs the fusectl file system (/sys/fs/fuse/connections); without it
// the connection ends when the process does.
func (m *Mount) Abort() error {
	var err error
	if m.conn == 0 {
		err = fmt.Errorf("aborting %s: its FUSE connection is unknown", m.dir)
	} else {
		err = abortConnection(m.conn)
	}
	if derr := m.detach(); derr != nil && !errors.Is(derr, syscall.EINVAL) {
		err = errors.Join(err, derr)
	}
	return err
}

// detach unmounts lazily, once.
func (m *Mount) detach() error {
	if m.detached.Swap(true) {
		return nil
	}
	if err := detach(m.dir); err != nil {
		m.detached.Store(false)
		return err
	}
	return nil
}

// Wait returns once the file system is gone: unmounted (by Unmount, or by
// umount from outside), or detached and its last file closed, or aborted.
func (m *Mount) Wait() { <-m.gone }

// Connection returns the id of the FUSE connection of the file system
// mounted at dir (the last mount there): its directory in
// /sys/fs/fuse/connections. It reads /proc/self/mountinfo, never the file
// system, so it cannot hang on one.
func Connection(dir string) (uint64, error) { return connection(dir) }

// AbortConnection aborts FUSE connection id, whatever serves it (a server
// that hangs, or one in this very process that is gone): every request
// waiting on it, and every one to come, fails with ENOTCONN, and its
// server's loop ends. It needs the fusectl file system at
// /sys/fs/fuse/connections, and root or the mount's owner.
func AbortConnection(id uint64) error { return abortConnection(id) }

// detach unmounts dir lazily: directly as root, else through
// fusermount3 -u -z (or fusermount).
func detach(dir string) error {
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("detaching %s: %w", dir, err)
		}
		return nil
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		if out, err := exec.Command(path, "-u", "-z", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("detaching %s: %s: %v %s", dir, bin, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return fmt.Errorf("detaching %s: no fusermount3 or fusermount", dir)
}

// connection returns the id of the FUSE connection mounted at dir (the
// last mount there): its directory in /sys/fs/fuse/connections, the
// kernel's device number of the mount, from /proc/self/mountinfo.
func connection(dir string) (uint64, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var id uint64
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) || unescapeMountinfo(fields[4]) != abs {
			continue
		}
		if t := fields[sep+1]; t != "fuse" && !strings.HasPrefix(t, "fuse.") {
			continue
		}
		major, minor, ok := strings.Cut(fields[2], ":")
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		id, found = ma<<20|mi, true // the kernel's MKDEV
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no FUSE file system mounted at %s", abs)
	}
	return id, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// abortConnection aborts FUSE connection id through fusectl.
func abortConnection(id uint64) error {
	p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", id)
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		return fmt.Errorf("aborting the FUSE connection: %w", err)
	}
	return nil
}

// dirNode is the root directory.
type dirNode struct {
	fs.Inode
	files []File
	open  *atomic.Int64 // files open, shared by the file nodes
}

var _ fs.NodeOnAdder = (*dirNode)(nil)

func (d *dirNode) OnAdd(ctx context.Context) {
	for i := range d.files {
		f := &d.files[i]
		ch := d.NewPersistentInode(ctx, &fileNode{f: f, open: d.open}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: uint64(i + 2)})
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
	f    *File
	open *atomic.Int64 // files open in the mount: one more per Open, one less per Release
}

// handle is an open file: the kernel tells of each one's end (Release)
// only for a handle that is not nil.
type handle struct{}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReleaser  = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeLseeker   = (*fileNode)(nil)
)

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	size := n.f.Source.Size()
	out.Size = uint64(size)
	var stored int64
	if s, ok := n.f.Source.(format.Stored); ok {
		stored = s.Stored()
	}
	if _, mapped := n.f.Source.(format.ZeroMapper); stored <= 0 && !mapped {
		stored = size
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
	n.open.Add(1)
	return &handle{}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *fileNode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	n.open.Add(-1)
	return 0
}

// Read reads from the file's data; a read that cannot be served whole
// (an error, or data that ends before the file's size) fails with EIO:
// a short read would tell the kernel that the file ends there.
func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := n.f.Source.Size()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), size-off)]
	if got, _ := n.f.Source.ReadAt(p, off); got < len(p) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(p), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the map (the end of the file
// is a hole); other whences are the kernel's. A map that answers an
// extent not starting where asked, or not moving forward, gives EIO.
func (n *fileNode) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	size := n.f.Source.Size()
	if off > 1<<62 || int64(off) >= size {
		return 0, syscall.ENXIO
	}
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	zmap, mapped := n.f.Source.(format.ZeroMapper)
	if !mapped { // all data
		if whence == seekData {
			return off, 0
		}
		return uint64(size), 0
	}
	wantZero := whence == seekHole
	for pos := int64(off); pos < size; {
		x, err := zmap.Region(pos, size-pos)
		if err != nil || x.Start != pos || x.Length <= 0 {
			return 0, syscall.EIO
		}
		if x.Zero == wantZero {
			return uint64(pos), 0
		}
		if x.Length >= size-pos {
			break
		}
		pos += x.Length
	}
	if wantZero {
		return uint64(size), 0
	}
	return 0, syscall.ENXIO
}

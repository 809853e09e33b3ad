//go:build linux

package fusefs

import (
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
)

// gnode is a node of an in-memory guest tree.
type gnode struct {
	info     guest.Info
	data     string
	target   string
	children []guest.Node
}

func (n *gnode) Info() guest.Info { return n.info }

func (n *gnode) ReadDir() ([]guest.Node, error) {
	if !n.info.Mode.IsDir() {
		return nil, guest.ErrNotDir
	}
	return n.children, nil
}

func (n *gnode) Open() (guest.File, error) {
	if !n.info.Mode.IsRegular() {
		return nil, guest.ErrNotRegular
	}
	return &source{data: []byte(n.data), failAt: -1}, nil
}

func (n *gnode) Readlink() (string, error) {
	if n.info.Mode&iofs.ModeSymlink == 0 {
		return "", guest.ErrNotLink
	}
	return n.target, nil
}

func (s *source) Size() int64 { return int64(len(s.data)) }

// TestTreeMount mounts a guest tree and reads it through the kernel:
// listings (names that cannot name a file left out, a repeated name shown
// once), modes, owners, times, contents and link targets.
func TestTreeMount(t *testing.T) {
	requireFUSE(t)
	mtime := time.Date(2024, 6, 10, 6, 13, 20, 123456789, time.UTC)
	root := &gnode{info: guest.Info{Mode: iofs.ModeDir | 0o755, Ino: 1, Nlink: 3}, children: []guest.Node{
		&gnode{info: guest.Info{Name: "etc", Mode: iofs.ModeDir | 0o750, Ino: 2, Nlink: 2, UID: 7, GID: 8, ModTime: mtime}, children: []guest.Node{
			&gnode{info: guest.Info{Name: "fstab", Mode: 0o644, Ino: 3, Nlink: 1, Size: 6, ModTime: mtime}, data: "fstab\n"},
		}},
		&gnode{info: guest.Info{Name: "suid", Mode: 0o755 | iofs.ModeSetuid, Ino: 4, Nlink: 1, Size: 2}, data: "#!"},
		&gnode{info: guest.Info{Name: "link", Mode: iofs.ModeSymlink | 0o777, Ino: 5, Nlink: 1, Size: 9}, target: "etc/fstab"},
		&gnode{info: guest.Info{Name: "a/b", Mode: 0o644, Ino: 6, Nlink: 1}},
		&gnode{info: guest.Info{Name: "..", Mode: 0o644, Ino: 7, Nlink: 1}},
		&gnode{info: guest.Info{Name: "suid", Mode: 0o644, Ino: 8, Nlink: 1}},
	}}
	dir := filepath.Join(t.TempDir(), "files")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := NewTree(dir, root, "fusefs-tree-test")
	if err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(mountDeadline, func() { abort(t, m) })
	defer func() {
		watchdog.Stop()
		if err := m.Unmount(); err != nil {
			t.Error(err)
		}
	}()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"etc", "link", "suid"}) {
		t.Errorf("listed %q", names)
	}
	b, err := os.ReadFile(filepath.Join(dir, "link")) // followed by the kernel, inside the mount
	if err != nil || string(b) != "fstab\n" {
		t.Errorf("read through link: %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "link")); err != nil || target != "etc/fstab" {
		t.Errorf("readlink: %q, %v", target, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "etc"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != iofs.ModeDir|0o750 || st.Uid != 7 || st.Gid != 8 || !fi.ModTime().Equal(mtime) {
		t.Errorf("etc: %v uid %d gid %d mtime %v", fi.Mode(), st.Uid, st.Gid, fi.ModTime())
	}
	if fi, err := os.Stat(filepath.Join(dir, "suid")); err != nil || fi.Mode() != 0o755|iofs.ModeSetuid {
		t.Errorf("suid: %v, %v", fi, err)
	}
	f, err := os.Open(filepath.Join(dir, "etc", "fstab"))
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "fstab\n" {
		t.Errorf("etc/fstab: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "fstab"), nil, 0o644); err == nil {
		t.Error("a write succeeded on a read-only mount")
	}
}

//go:build linux

package fusefs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountDeadline bounds every test that mounts, well below go test's
// timeout: past it the mount is aborted and the test fails.
const mountDeadline = 30 * time.Second

// requireFUSE skips where this test cannot mount (no /dev/fuse, not
// root: it mounts directly, not through fusermount); under CI=true, where
// .ci/run runs the tests as root, it fails instead.
func requireFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = err.Error()
	} else if os.Geteuid() != 0 {
		why = "not root: this test mounts directly, not through fusermount"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FUSE mounts cannot be tested (%s); under CI they must be (.ci/run runs the tests as root)", why)
	}
	t.Skipf("FUSE mounts cannot be tested here: %s", why)
}

// mounted mounts files on a new directory (name, under a temporary one).
// A watchdog aborts the mount at mountDeadline, failing the test, so that
// nothing waiting on it hangs; cleanup unmounts it, and aborts it if
// unmounting hangs.
func mounted(t *testing.T, name string, files ...File) (*Mount, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(dir, files, "fusefs-test")
	if err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(mountDeadline, func() {
		t.Errorf("%s still mounted after %v: aborted", dir, mountDeadline)
		abort(t, m)
	})
	t.Cleanup(func() {
		watchdog.Stop()
		done := make(chan error, 1)
		go func() { done <- m.Unmount() }()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("unmounting %s hangs: aborted", dir)
			abort(t, m)
		}
		if isMounted(t, dir) { // aborted, not unmounted
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return m, dir
}

// open opens a file of a mount, closed when the test ends, even if it
// fails: a process that exits with a file of its own FUSE mount open
// hangs in the kernel.
func open(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// abort aborts m, mounting fusectl first if the system has not.
func abort(t *testing.T, m *Mount) {
	withFusectl(t)
	if err := m.Abort(); err != nil {
		t.Error(err)
	}
}

// withFusectl mounts the fusectl file system (/sys/fs/fuse/connections)
// for the test if the system has not (systemd does at boot), so that
// FUSE connections can be aborted.
func withFusectl(t *testing.T) {
	const ctl = "/sys/fs/fuse/connections"
	var st1, st2 syscall.Statfs_t
	if syscall.Statfs(ctl, &st1) == nil && st1.Type == 0x65735543 { // FUSECTL_SUPER_MAGIC
		return
	}
	if err := syscall.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
		t.Fatalf("mounting fusectl on %s: %v", ctl, err)
	}
	if syscall.Statfs(ctl, &st2) != nil || st2.Type != 0x65735543 {
		t.Fatalf("fusectl mounted on %s is not there", ctl)
	}
	t.Cleanup(func() { syscall.Unmount(ctl, syscall.MNT_DETACH) })
}

func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	_, err := connection(dir)
	return err == nil
}

// TestMountFiles: through a real mount, the same bytes, holes and errors
// as the node tests: a read failing halfway is EIO for read(2) and cat
// alike, never a short file; SEEK_DATA and SEEK_HOLE walk the map; a bad
// map gives EIO; writes are refused.
func TestMountFiles(t *testing.T) {
	requireFUSE(t)
	size := int64(len(disk))
	failAt := int64(600000)
	empty := &badMap{kind: "empty"}
	files := []File{
		{Name: "good.raw", Source: fileSource(size, &source{data: disk, failAt: -1}, mapOf(disk), 4096)},
		{Name: "fails.raw", Source: fileSource(size, &source{data: disk, failAt: failAt, err: syscall.EIO}, mapOf(disk), 0)},
		{Name: "short.raw", Source: fileSource(size, &source{data: disk, failAt: failAt, err: io.EOF}, nil, 0)},
		{Name: "badmap.raw", Source: fileSource(size, &source{data: disk, failAt: -1}, empty, 0)},
		{Name: "plain.raw", Source: fileSource(size, &source{data: disk, failAt: -1}, nil, 0)},
	}
	_, dir := mounted(t, "mnt", files...)
	at := func(n string) string { return filepath.Join(dir, n) }

	for _, n := range []string{"good.raw", "plain.raw", "badmap.raw"} {
		if b, err := os.ReadFile(at(n)); err != nil || !bytes.Equal(b, disk) {
			t.Errorf("%s: read %d bytes, %v; want the disk's %d", n, len(b), err, size)
		}
	}
	for _, n := range []string{"fails.raw", "short.raw"} {
		b, err := os.ReadFile(at(n))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s (its data fails at %d): read %d bytes, %v; want EIO", n, failAt, len(b), err)
		}
		f := open(t, at(n))
		// What comes before the failure reads; the file keeps its size.
		head := make([]byte, 4096)
		if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, disk[:4096]) {
			t.Errorf("%s: its first block: %v", n, err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != size {
			t.Errorf("%s: size %d after the failed read, %v; want %d", n, fi.Size(), err, size)
		}
		f.Close()
	}

	// SEEK_HOLE then SEEK_DATA, each moving forward, cover the file; the
	// holes hold zeros, and there are some.
	f := open(t, at("good.raw"))
	var holes int64
	for pos := int64(0); pos < size; {
		h, err := f.Seek(pos, seekHole)
		if err != nil || h < pos || h > size {
			t.Fatalf("SEEK_HOLE at %d: %d, %v", pos, h, err)
		}
		if h == size {
			break
		}
		d, err := f.Seek(h, seekData)
		if errors.Is(err, syscall.ENXIO) {
			d = size
		} else if err != nil || d <= h {
			t.Fatalf("SEEK_DATA at the hole at %d: %d, %v (it must move forward)", h, d, err)
		}
		if !bytes.Equal(disk[h:d], make([]byte, d-h)) {
			t.Errorf("SEEK_HOLE says %d..%d is a hole; it holds data", h, d)
		}
		holes += d - h
		pos = d
	}
	f.Close()
	if holes == 0 {
		t.Error("no hole found by SEEK_HOLE in a sparse disk")
	}
	if fi, err := os.Stat(at("good.raw")); err != nil || fi.Sys().(*syscall.Stat_t).Blocks != 8 {
		t.Errorf("good.raw: %v, want 8 blocks stored", err)
	}

	f = open(t, at("badmap.raw"))
	if _, err := f.Seek(0, seekData); !errors.Is(err, syscall.EIO) || empty.calls.Load() != 1 {
		t.Errorf("SEEK_DATA on a map of empty extents: %v after %d calls; want EIO after 1", err, empty.calls.Load())
	}
	f.Close()

	if err := os.WriteFile(at("new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("creating a file: %v, want EROFS", err)
	}
	if f, err := os.OpenFile(at("good.raw"), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("opening for writing: %v, want EROFS", err)
		if err == nil {
			f.Close()
		}
	}
}

// TestUnmountBusy: Unmount with a file open detaches the directory at
// once and returns only when the file is closed, serving it until then;
// the open files are counted.
func TestUnmountBusy(t *testing.T) {
	requireFUSE(t)
	m, dir := mounted(t, "mnt", File{Name: "d.raw", Source: fileSource(int64(len(disk)), &source{data: disk, failAt: -1}, nil, 0)})
	p := filepath.Join(dir, "d.raw")
	f, g := open(t, p), open(t, p)
	if n := m.OpenFiles(); n != 2 {
		t.Errorf("2 files open, %d counted", n)
	}
	g.Close()
	waitFor(t, "the closed file's release", func() bool { return m.OpenFiles() == 1 })

	unmounted := make(chan error, 1)
	go func() { unmounted <- m.Unmount() }()
	waitFor(t, "the directory's detaching", func() bool { return !isMounted(t, dir) })
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-unmounted:
		t.Fatalf("Unmount returned (%v) with a file still open", err)
	default:
	}
	b := make([]byte, 64<<10)
	if _, err := f.ReadAt(b, 200000); err != nil || !bytes.Equal(b, disk[200000:200000+64<<10]) {
		t.Errorf("reading the open file of a detached mount: %v", err)
	}
	start := time.Now()
	f.Close()
	select {
	case err := <-unmounted:
		if err != nil {
			t.Error(err)
		}
		t.Logf("Unmount returned %v after the last close", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("Unmount did not return 10 s after the last file was closed")
	}
	if n := m.OpenFiles(); n != 0 {
		t.Errorf("all closed: %d counted open", n)
	}
}

// TestAbort: Abort ends a mount with a file open at once: its reads fail
// (ENOTCONN) and Wait returns. So does AbortConnection on the connection
// found by the mount's directory, a space in its name.
func TestAbort(t *testing.T) {
	requireFUSE(t)
	withFusectl(t)
	for _, byDir := range []bool{false, true} {
		m, dir := mounted(t, "a mount", File{Name: "d.raw", Source: fileSource(int64(len(disk)), &source{data: disk, failAt: -1}, nil, 0)})
		f := open(t, filepath.Join(dir, "d.raw"))
		var err error
		if byDir {
			var id uint64
			if id, err = Connection(dir); err == nil {
				err = AbortConnection(id)
			}
		} else {
			err = m.Abort()
		}
		if err != nil {
			t.Fatal(err)
		}
		gone := make(chan struct{})
		go func() { m.Wait(); close(gone) }()
		select {
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Fatal("Wait did not return 10 s after Abort")
		}
		if _, err := f.ReadAt(make([]byte, 4096), 300000); !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("reading an open file after Abort: %v, want ENOTCONN", err)
		}
		if !byDir && isMounted(t, dir) {
			t.Errorf("%s still mounted after Abort", dir)
		}
	}
	if _, err := Connection(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no FUSE file system mounted") {
		t.Errorf("the FUSE connection of a plain directory: %v", err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

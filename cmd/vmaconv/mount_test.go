//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/fusefs"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// requireFUSE skips where FUSE cannot work (no /dev/fuse, not root: the
// tests mount directly, not through fusermount); under CI=true, where
// .ci/run runs the tests as root, it fails instead.
func requireFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = err.Error()
	} else if os.Geteuid() != 0 {
		why = "not root: mounting needs fusermount, which this test does not rely on"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FUSE mounts cannot be tested (%s); under CI they must be (.ci/run runs the tests as root)", why)
	}
	t.Skipf("FUSE mounts cannot be tested here: %s", why)
}

// mountDeadline bounds every test that mounts, well below go test's
// timeout: past it the mount is aborted (what waits on it fails) and the
// test fails.
const mountDeadline = 60 * time.Second

// mounted runs vmaconv mount ARCHIVE DIR in-process until stop is called
// (as SIGINT would: status 130); it returns once the files are there.
// Past mountDeadline, or if stopping hangs, the mount is aborted.
func mounted(t *testing.T, archive, dir string, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"mount", archive, dir}, args...), nil, &stdout, &stderr)
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case st := <-done:
			t.Fatalf("mount exited with status %d: %s", st, stderr.String())
		default:
		}
		if strings.Contains(stdout.String(), "mounted ") {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("mount did not start: %s", stderr.String())
		}
	}
	// Known now, while mounted: a detached mount is not in mountinfo.
	conn, err := fusefs.Connection(dir)
	if err != nil {
		t.Fatal(err)
	}
	abort := func(why string) {
		t.Errorf("%s: aborting the mount", why)
		withFusectl(t)
		if err := fusefs.AbortConnection(conn); err != nil {
			t.Errorf("aborting: %v", err)
		}
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	watchdog := time.AfterFunc(mountDeadline, func() { abort(fmt.Sprintf("%s still mounted after %v", dir, mountDeadline)) })
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		watchdog.Stop()
		cancel()
		select {
		case st := <-done:
			if st != exitInterrupted {
				t.Errorf("mount ended with status %d, want %d: %s", st, exitInterrupted, stderr.String())
			}
		case <-time.After(10 * time.Second):
			abort("mount did not end 10 s after it was stopped")
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// withFusectl mounts the fusectl file system (/sys/fs/fuse/connections)
// for the test if the system has not (systemd does at boot), so that
// FUSE connections can be aborted.
func withFusectl(t *testing.T) {
	const ctl, magic = "/sys/fs/fuse/connections", 0x65735543 // FUSECTL_SUPER_MAGIC
	var st syscall.Statfs_t
	if syscall.Statfs(ctl, &st) == nil && st.Type == magic {
		return
	}
	if err := syscall.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
		t.Errorf("mounting fusectl on %s: %v", ctl, err)
		return
	}
	t.Cleanup(func() { syscall.Unmount(ctl, syscall.MNT_DETACH) })
}

func isMounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return bytes.Contains(b, []byte(" "+abs+" "))
}

// TestMount: an archive's disks and configs mounted read-only: the same
// bytes as a restore, holes found by SEEK_HOLE, writes refused, a file
// system inside a disk loop-mounted and read, and the mount gone when the
// command stops; the same through the cache of a compressed archive.
func TestMount(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	// A disk holding an ext4 file system with a file, and an EFI disk.
	disk := at("fs.raw")
	haveMkfs := exec.Command("mkfs.ext4", "-V").Run() == nil
	if haveMkfs {
		os.MkdirAll(at("content"), 0o755)
		os.WriteFile(at("content/hello.txt"), []byte("hello from inside the backup\n"), 0o644)
		testutil.Run(t, "mkfs.ext4", "-q", "-d", at("content"), "-F", disk, "16M")
	} else {
		if os.Getenv("CI") == "true" {
			t.Fatal("mkfs.ext4 missing under CI (.ci/run installs e2fsprogs)")
		}
		t.Log("no mkfs.ext4: the loop mount is not tested")
		os.WriteFile(disk, testutil.GenDisk(1, 16<<20, "mixed"), 0o644)
	}
	os.WriteFile(at("efi.raw"), testutil.GenDisk(2, 540672, "mixed"), 0o644)
	arc := at("vzdump-qemu-100-2024_06_10-06_13_20.vma")
	vmaconv(t, "create", "-f", "raw", arc, "scsi0="+disk, "efidisk0="+at("efi.raw"))
	zst := arc + ".zst"
	vmaconv(t, arc, zst)

	for _, a := range []string{arc, zst} {
		t.Run(filepath.Base(a), func(t *testing.T) {
			mnt := at("mnt-" + filepath.Base(a))
			os.Mkdir(mnt, 0o755)
			stop := mounted(t, a, mnt, "--cache-dir", at("cache"))
			names, _ := os.ReadDir(mnt)
			var got []string
			for _, n := range names {
				got = append(got, n.Name())
			}
			if strings.Join(got, " ") != "drive-efidisk0.raw drive-scsi0.raw qemu-server.conf" {
				t.Errorf("mount shows %v", got)
			}
			conf, err := os.ReadFile(filepath.Join(mnt, "qemu-server.conf"))
			if err != nil || string(conf) != vmaconv(t, "config", arc) {
				t.Errorf("qemu-server.conf through the mount: %q, %v", conf, err)
			}
			for src, name := range map[string]string{disk: "drive-scsi0.raw", at("efi.raw"): "drive-efidisk0.raw"} {
				want, _ := os.ReadFile(src)
				p := filepath.Join(mnt, name)
				b, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(b, want) {
					t.Errorf("%s: read %d bytes (%v), not the disk's %d", name, len(b), err, len(want))
				}
				// It takes what the archive stores of it (st_blocks): not
				// nothing, and less than its size.
				if n := blocks(t, p); n <= 0 || n >= int64(len(want)) {
					t.Errorf("%s takes %d bytes (st_blocks); the disk has %d", name, n, len(want))
				}
				// Every hole SEEK_HOLE finds reads as zeros, and a sparse
				// disk has some.
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				// Closed even if the test fails: a process that exits with
				// a file of its own FUSE mount open hangs in the kernel.
				t.Cleanup(func() { f.Close() })
				// Each seek must move forward: a walk that does not
				// would never end.
				var holes int64
				for pos := int64(0); pos < int64(len(want)); {
					h, err := f.Seek(pos, 4) // SEEK_HOLE
					if err != nil || h < pos || h > int64(len(want)) {
						t.Fatalf("%s: SEEK_HOLE at %d: %d, %v", name, pos, h, err)
					}
					if h == int64(len(want)) {
						break
					}
					d, err := f.Seek(h, 3) // SEEK_DATA
					if errors.Is(err, syscall.ENXIO) {
						d = int64(len(want))
					} else if err != nil || d <= h {
						t.Fatalf("%s: SEEK_DATA at the hole at %d: %d, %v (it must move forward)", name, h, d, err)
					}
					if !testutil.AllZero(want[h:d]) {
						t.Errorf("%s: SEEK_HOLE says %d..%d is a hole; it holds data", name, h, d)
					}
					holes += d - h
					pos = d
				}
				f.Close()
				if holes == 0 {
					t.Errorf("%s: no hole found by SEEK_HOLE in a sparse disk", name)
				}
			}
			if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
				t.Errorf("creating a file: %v, want EROFS", err)
			}
			if f, err := os.OpenFile(filepath.Join(mnt, "drive-scsi0.raw"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
				t.Errorf("opening a disk for writing: %v, want EROFS", err)
				if f != nil {
					f.Close()
				}
			}
			if haveMkfs {
				loopMount(t, filepath.Join(mnt, "drive-scsi0.raw"), at("fs-"+filepath.Base(a)))
			}
			stop()
			if isMounted(t, mnt) {
				t.Errorf("%s still mounted after the command stopped", mnt)
			}
		})
	}
}

// loopMount attaches img read-only to a loop device, mounts its file
// system read-only and reads the file in it.
func loopMount(t *testing.T, img, mnt string) {
	t.Helper()
	out, err := exec.Command("losetup", "-r", "-f", "--show", img).Output()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("losetup: %v (a machine with FUSE but no loop devices?)", err)
		}
		t.Logf("no loop device here (%v): the file system inside is not mounted", err)
		return
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v %s", dev, err, out)
	}
	defer exec.Command("umount", mnt).Run()
	b, err := os.ReadFile(filepath.Join(mnt, "hello.txt"))
	if err != nil || string(b) != "hello from inside the backup\n" {
		t.Errorf("the file inside the backup's file system: %q, %v", b, err)
	}
}

// TestMountErrors: what mount refuses, in one line.
func TestMountErrors(t *testing.T) {
	dir := t.TempDir()
	arc := filepath.Join(testutil.ModuleRoot(t), "examples", "vzdump-qemu-100-2024_06_10-06_13_20.vma")
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{arc, filepath.Join(dir, "missing")}, "no such file or directory"},
		{[]string{arc, filepath.Join(dir, "file")}, "is not a directory"},
		{[]string{"-", dir}, "needs an archive file, not standard input"},
	} {
		var stderr bytes.Buffer
		st := run(context.Background(), append([]string{"mount"}, tc.args...), nil, &bytes.Buffer{}, &stderr)
		if st == 0 || !strings.Contains(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("mount %v: status %d, %q; want one line with %q", tc.args, st, stderr.String(), tc.want)
		}
	}
}

// TestMountReadError: an archive whose data cannot be read from a chosen
// offset on (the file cut short under the mount) gives EIO through the
// mount, to cat and dd alike, never a disk that silently ends early;
// what comes before it reads.
func TestMountReadError(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	data := testutil.GenDisk(5, 4<<20, "data")
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: data}}, nil, "seq", 0)
	arc := filepath.Join(dir, "a.vma")
	if err := os.WriteFile(arc, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	mounted(t, arc, mnt)
	// The disk's data lies in order: cut at half the archive, the
	// second half of the disk cannot be read.
	if err := os.Truncate(arc, int64(len(raw))/2); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(mnt, "drive-scsi0.raw")
	out, err := exec.Command("dd", "if="+p, "bs=64k", "count=4", "status=none").Output()
	if err != nil || !bytes.Equal(out, data[:256<<10]) {
		t.Errorf("dd of the first 256 KiB, before the cut: %d bytes, %v", len(out), err)
	}
	for _, args := range [][]string{{"cat", p}, {"dd", "if=" + p, "bs=64k", "skip=48", "count=1", "status=none"}} {
		cmd := exec.Command(args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil || !strings.Contains(stderr.String(), "Input/output error") {
			t.Errorf("%s of a disk whose data is cut at half: %d bytes, %v %q; want an I/O error", strings.Join(args, " "), len(out), err, stderr.String())
		}
	}
}

// mountProc is vmaconv mount run as a process of its own.
type mountProc struct {
	cmd    *exec.Cmd
	dir    string
	stderr *syncBuffer
	done   chan struct{} // closed when the process has ended
	err    error         // then cmd.Wait's result
}

// testGrace is the grace period of the processes TestMountSignals starts.
const testGrace = 500 * time.Millisecond

// startMount runs vmaconv mount ARCHIVE on a new directory as a process
// (grace period testGrace) and waits until it has mounted. Cleanup kills
// it if it still runs and detaches its directory if it is still mounted.
func startMount(t *testing.T, archive string) *mountProc {
	t.Helper()
	p := &mountProc{dir: filepath.Join(t.TempDir(), "mnt"), stderr: &syncBuffer{}, done: make(chan struct{})}
	os.Mkdir(p.dir, 0o755)
	var stdout syncBuffer
	p.cmd = exec.Command(vmaconvBinary(t), "mount", archive, p.dir)
	p.cmd.Env = append(os.Environ(), graceEnv+"="+testGrace.String())
	p.cmd.Stdout, p.cmd.Stderr = &stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Error("vmaconv mount did not end 10 s after SIGKILL")
		}
		if isMounted(t, p.dir) {
			syscall.Unmount(p.dir, syscall.MNT_DETACH)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stdout.String(), "mounted "); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || exited(p.cmd.Process.Pid) {
			t.Fatalf("mount did not start: %s", p.stderr.String())
		}
	}
	return p
}

// wait returns the process's exit status once it ends, failing the test
// if that takes longer than within.
func (p *mountProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		var ee *exec.ExitError
		if p.err == nil {
			return 0
		} else if errors.As(p.err, &ee) {
			return ee.ExitCode()
		}
		t.Fatal(p.err)
	case <-time.After(within):
		t.Fatalf("vmaconv mount still runs %v later: %s", within, p.stderr.String())
	}
	return -1
}

// waitStderr waits up to 10 s for the process to say want.
func (p *mountProc) waitStderr(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.stderr.String(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("vmaconv mount did not say %q: %q", want, p.stderr.String())
		}
	}
}

// TestMountSignals: SIGTERM or SIGINT unmounts and exits at once with
// 128+signal when nothing is open; with a file open, or a loop device on
// one, the mount is detached and served past the grace period until it is
// released, saying how many are open, and the process then exits; a
// second signal ends it at once, cutting the files off.
func TestMountSignals(t *testing.T) {
	requireFUSE(t)
	arc := filepath.Join(testutil.ModuleRoot(t), "examples", "vzdump-qemu-100-2024_06_10-06_13_20.vma")
	disk := filepath.Join(t.TempDir(), "scsi0.raw")
	vmaconv(t, arc+":drive-scsi0", disk)
	want, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	const off, n = 1 << 20, 256 << 10 // read only after the signal: not in a cache
	check := func(t *testing.T, p *mountProc, status int, sig string) {
		t.Helper()
		if status != map[string]int{"SIGINT": 130, "SIGTERM": 143}[sig] {
			t.Errorf("exit status %d after %s", status, sig)
		}
		if !strings.HasSuffix(p.stderr.String(), "vmaconv: interrupted\n") {
			t.Errorf("stderr %q", p.stderr.String())
		}
		if isMounted(t, p.dir) {
			t.Errorf("%s still mounted after the process ended", p.dir)
		}
	}

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run("nothing open/"+sig.String(), func(t *testing.T) {
			p := startMount(t, arc)
			start := time.Now()
			p.cmd.Process.Signal(sig)
			st := p.wait(t, 5*time.Second)
			t.Logf("exited %v after %v", time.Since(start), sig)
			check(t, p, st, map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}[sig])
			if strings.Contains(p.stderr.String(), "open") {
				t.Errorf("stderr %q with nothing open", p.stderr.String())
			}
		})
	}

	t.Run("file open", func(t *testing.T) {
		p := startMount(t, arc)
		f, err := os.Open(filepath.Join(p.dir, "drive-scsi0.raw"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.waitStderr(t, p.dir+" detached with 1 file open")
		time.Sleep(2 * testGrace)
		if exited(p.cmd.Process.Pid) {
			t.Fatalf("vmaconv mount ended with a file open, %v after SIGTERM: %s", time.Since(start), p.stderr.String())
		}
		got := make([]byte, n)
		if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, want[off:off+n]) {
			t.Errorf("reading the open file %v after SIGTERM: %v", time.Since(start), err)
		}
		if isMounted(t, p.dir) {
			t.Errorf("%s not detached after SIGTERM", p.dir)
		}
		served, closed := time.Since(start), time.Now()
		f.Close()
		st := p.wait(t, 5*time.Second)
		t.Logf("served %v after SIGTERM until the file was closed; exited %v after the close", served, time.Since(closed))
		check(t, p, st, "SIGTERM")
	})

	t.Run("second signal", func(t *testing.T) {
		p := startMount(t, arc)
		f, err := os.Open(filepath.Join(p.dir, "drive-scsi0.raw"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.waitStderr(t, "detached with 1 file open")
		start := time.Now()
		p.cmd.Process.Signal(syscall.SIGINT)
		st := p.wait(t, testGrace/2)
		t.Logf("the second signal ended it in %v", time.Since(start))
		check(t, p, st, "SIGINT")
		if !strings.Contains(p.stderr.String(), "ended by force with 1 file open") {
			t.Errorf("stderr %q", p.stderr.String())
		}
		if _, err := f.ReadAt(make([]byte, n), off); !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("reading the open file after the mount was forced to end: %v, want ENOTCONN", err)
		}
	})

	t.Run("loop device", func(t *testing.T) {
		p := startMount(t, arc)
		out, err := exec.Command("losetup", "-r", "-f", "--show", filepath.Join(p.dir, "drive-scsi0.raw")).Output()
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("losetup: %v (a machine with FUSE but no loop devices?)", err)
			}
			t.Skipf("no loop device here: %v", err)
		}
		dev := strings.TrimSpace(string(out))
		detached := false
		t.Cleanup(func() {
			if !detached {
				exec.Command("losetup", "-d", dev).Run()
			}
		})
		start := time.Now()
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.waitStderr(t, "detached with 1 file open")
		time.Sleep(2 * testGrace)
		if exited(p.cmd.Process.Pid) {
			t.Fatalf("vmaconv mount ended under a loop device, %v after SIGTERM: %s", time.Since(start), p.stderr.String())
		}
		// O_DIRECT: the loop device's own cache cannot answer.
		lf, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n) // large: page-aligned
		_, err = lf.ReadAt(got, off)
		lf.Close()
		if err != nil || !bytes.Equal(got, want[off:off+n]) {
			t.Errorf("reading the loop device %v after SIGTERM: %v", time.Since(start), err)
		}
		served, released := time.Since(start), time.Now()
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Fatalf("losetup -d %s: %v %s", dev, err, out)
		}
		detached = true
		st := p.wait(t, 5*time.Second)
		t.Logf("served %v after SIGTERM until the loop device was detached; exited %v after losetup -d", served, time.Since(released))
		check(t, p, st, "SIGTERM")
	})
}

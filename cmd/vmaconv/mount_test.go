//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// requireFUSE skips where FUSE cannot work (no /dev/fuse, not root);
// under CI=true a machine that has both must run the test.
func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse (%v): FUSE mounts cannot be tested here", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: mounting needs fusermount, which this test does not rely on")
	}
}

// mounted runs vmaconv mount ARCHIVE DIR in-process until stop is called
// (as SIGINT would); it returns once the files are there.
func mounted(t *testing.T, archive, dir string, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int)
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
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if st := <-done; st != 0 {
			t.Errorf("mount ended with status %d: %s", st, stderr.String())
		}
	}
	t.Cleanup(stop)
	return stop
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
				// Every hole SEEK_HOLE finds reads as zeros, and a sparse
				// disk has some.
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				var holes int64
				for pos := int64(0); pos < int64(len(want)); {
					h, err := f.Seek(pos, 4) // SEEK_HOLE
					if err != nil || h >= int64(len(want)) {
						break
					}
					d, err := f.Seek(h, 3) // SEEK_DATA
					if errors.Is(err, syscall.ENXIO) {
						d = int64(len(want))
					} else if err != nil {
						t.Fatalf("%s: SEEK_DATA at %d: %v", name, h, err)
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

//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestDiskFull writes into a real file system that fills after the
// output was created (a 640 KiB tmpfs; sparse outputs are created at full
// size, so the disk fills while data is written): a raw restore, an
// archive, a qcow2 image and an extract each fail with one line saying
// so, exit 1, and leave nothing behind; an existing output is untouched.
func TestDiskFull(t *testing.T) {
	// Under CI=true, where .ci/run runs the tests as root, the test must
	// run: it fails where it cannot.
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("not root: cannot mount the small file system this test fills (.ci/run runs the tests as root)")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	os.Mkdir(mnt, 0o755)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=640k"); err != nil {
		skip("cannot mount a tmpfs here (%v): needs CAP_SYS_ADMIN", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	data := testutil.GenDisk(9, 2<<20, "data")
	img := filepath.Join(dir, "d.raw")
	os.WriteFile(img, data, 0o644)
	arc := filepath.Join(dir, "d.vma")
	vmaconv(t, "-f", "raw", img, arc)
	keep := filepath.Join(mnt, "keep.raw")
	os.WriteFile(keep, []byte("an older output"), 0o644)
	for _, args := range [][]string{
		{arc + ":drive-scsi0", filepath.Join(mnt, "new.raw")},
		{arc + ":drive-scsi0", keep, "--overwrite"},
		{"-f", "raw", img, filepath.Join(mnt, "new.vma")},
		{"-f", "raw", img, filepath.Join(mnt, "new.qcow2")},
		{"extract", arc, filepath.Join(mnt, "out")},
	} {
		var stderr bytes.Buffer
		st := run(context.Background(), args, nil, &bytes.Buffer{}, &stderr)
		if st != 1 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "no space left on device") {
			t.Errorf("vmaconv %v: status %d, %q; want one line saying the disk is full", args, st, stderr.String())
		}
		es, _ := os.ReadDir(mnt)
		if len(es) != 1 || es[0].Name() != "keep.raw" {
			var names []string
			for _, e := range es {
				names = append(names, e.Name())
			}
			t.Errorf("vmaconv %v left %v", args, names)
		}
		if b, _ := os.ReadFile(keep); string(b) != "an older output" {
			t.Errorf("vmaconv %v changed the existing output", args)
		}
	}
}

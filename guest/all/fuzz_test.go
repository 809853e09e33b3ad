package all_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// fuzzDisk is the size of the disk FuzzTree reads: the fuzzer's bytes,
// then zeros.
const fuzzDisk = 4 << 20

// zeroPadded reads b, then zeros up to size.
type zeroPadded struct {
	b    []byte
	size int64
}

func (z zeroPadded) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(z.b)) {
		n = copy(p, z.b[off:])
	}
	end := min(int64(len(p)), z.size-off)
	clear(p[n:end])
	if end < int64(len(p)) {
		return int(end), io.EOF
	}
	return len(p), nil
}

// FuzzTree reads a whole disk's tree, as ls -R and cp -r do: partition
// tables, LVM, every file system reader behind them. Whatever the bytes,
// it ends, without a panic, within its budget.
func FuzzTree(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > fuzzDisk {
			return
		}
		tr := guest.New([]guest.Disk{{Name: "drive-scsi0", R: zeroPadded{b, fuzzDisk}, Size: fuzzDisk}})
		guesttest.Walk(tr, 1<<14)
		// Lookups through links and "..": never outside the tree.
		for _, p := range []string{"/drive-scsi0/p1/a/../../..", "/drive-scsi0/p1/link", "/drive-scsi0/p2/x/y"} {
			tr.Lookup(p, true)
		}
	})
}

// fuzzSeeds returns small disks: a GPT with a FAT12 partition, an MBR
// with an extended partition, cut to their first 96 KiB (their tables and
// the file system's start), where the tools are here.
func fuzzSeeds(f *testing.F) [][]byte {
	dir := f.TempDir()
	var seeds [][]byte
	build := func(label string, fat bool) {
		disk := filepath.Join(dir, "d.raw")
		os.Remove(disk)
		if err := os.WriteFile(disk, nil, 0o644); err != nil {
			return
		}
		os.Truncate(disk, fuzzDisk)
		cmd := exec.Command("sfdisk", "-q", disk)
		cmd.Stdin = strings.NewReader(label)
		if cmd.Run() != nil {
			return
		}
		if fat {
			img := filepath.Join(dir, "fat")
			os.Remove(img)
			if exec.Command("mkfs.vfat", "-C", img, "512").Run() != nil {
				return
			}
			if place(disk, img, 64<<10) != nil {
				return
			}
		}
		b, err := os.ReadFile(disk)
		if err == nil {
			seeds = append(seeds, b[:96<<10])
		}
	}
	build("label: gpt\nstart=128, size=1024, type=U\nstart=2048, size=2048, type=L\n", true)
	build("label: dos\nstart=128, size=1024, type=c\nstart=2048, size=4096, type=5\nstart=2112, size=1024, type=83\nstart=3200, size=1024, type=82\n", true)
	return seeds
}

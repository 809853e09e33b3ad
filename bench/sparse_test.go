package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
)

var (
	sparseOnce sync.Once
	sparseDir  string
	sparseErr  error
)

// qemuImg runs qemu-img, which makes the images vmaconv's own writer does
// not (extended L2 entries, preallocation). Benchmarks that need it fail
// under CI=true without it, and are skipped elsewhere.
func qemuImg(b *testing.B, args ...string) error {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("qemu-img not found under CI (.ci/run installs it)")
		}
		b.Skip("qemu-img not found")
	}
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// sparseFiles writes, once per process: an empty 1 TiB qcow2 image, the
// 256 MiB disk as qcow2 with plain and with extended L2 entries (both by
// qemu-img), a 4 GiB qcow2 with preallocated metadata holding the 256 MiB
// disk, and a 20 GiB sparse raw file holding 64 MiB.
func sparseFiles(b *testing.B) string {
	rawPath, _, _ := e2eFiles(b)
	sparseOnce.Do(func() {
		sparseDir, sparseErr = os.MkdirTemp("", "vmaconv-bench-sparse-")
		if sparseErr != nil {
			return
		}
		at := func(n string) string { return filepath.Join(sparseDir, n) }
		for _, c := range [][]string{
			{"create", "-q", "-f", "qcow2", at("empty1t.qcow2"), "1T"},
			{"convert", "-f", "raw", "-O", "qcow2", rawPath, at("plain.qcow2")},
			{"convert", "-f", "raw", "-O", "qcow2", "-o", "extended_l2=on", rawPath, at("extl2.qcow2")},
			{"create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", at("prealloc.qcow2"), "4G"},
			{"convert", "-n", "-f", "raw", "-O", "qcow2", rawPath, at("prealloc.qcow2")},
		} {
			if sparseErr = qemuImg(b, c...); sparseErr != nil {
				return
			}
		}
		// 20 GiB, 64 MiB of it data in 64 pieces spread over the disk.
		f, err := os.Create(at("sparse20g.raw"))
		if err != nil {
			sparseErr = err
			return
		}
		defer f.Close()
		if sparseErr = f.Truncate(20 << 30); sparseErr != nil {
			return
		}
		data := disk(1 << 20)
		for i := range int64(64) {
			if _, sparseErr = f.WriteAt(data, i*(20<<30)/64); sparseErr != nil {
				return
			}
		}
	})
	if sparseErr != nil {
		b.Fatal(sparseErr)
	}
	return sparseDir
}

// BenchmarkSparse: conversions whose cost must follow the data stored,
// not the disk size (device bytes per second: the disks' virtual sizes,
// 1 TiB, 256 MiB, 4 GiB and 20 GiB): an empty 1 TiB qcow2 to raw; the
// same 256 MiB disk as qcow2 with plain and with extended L2 entries
// (within 1.5× of each other); a 4 GiB qcow2 with preallocated metadata
// holding 256 MiB; a 20 GiB sparse raw file holding 64 MiB into an
// archive (whose blockinfo for every cluster, 2.5 MiB, is the floor).
func BenchmarkSparse(b *testing.B) {
	dir := sparseFiles(b)
	for _, c := range []struct {
		name string
		src  string
		size int64
		out  format.Format
	}{
		{"qcow2-empty-1t-raw", "empty1t.qcow2", 1 << 40, raw.Format},
		{"qcow2-plain-raw", "plain.qcow2", e2eDisk, raw.Format},
		{"qcow2-extl2-raw", "extl2.qcow2", e2eDisk, raw.Format},
		{"qcow2-prealloc-raw", "prealloc.qcow2", 4 << 30, raw.Format},
		{"raw-sparse-20g-vma", "sparse20g.raw", 20 << 30, vma.Format},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(c.size)
			b.ReportAllocs()
			out := filepath.Join(b.TempDir(), "out")
			for b.Loop() {
				if err := convert(filepath.Join(dir, c.src), c.out, out, 0, format.CreateOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package vmdk_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// FuzzOpen opens arbitrary bytes as a VMDK file through the driver and
// reads it: errors are fine, panics and hangs are not; ranges the zero map
// calls zero read as zeros; and where qemu-img is installed, an image
// that both read gives the same bytes (the first 4 MiB). The file lies in
// a directory that also holds a flat and a sparse extent, so that fuzzed
// descriptors can name them (and files outside, which are refused). The
// seeds are images of every subformat qemu-img writes, this package's
// stream layout, and descriptors.
//
//	go test -run '^$' -fuzz FuzzOpen -fuzzminimizetime 2s ./format/vmdk/
func FuzzOpen(f *testing.F) {
	qemuImg, _ := exec.LookPath("qemu-img")
	extents := f.TempDir()
	os.WriteFile(filepath.Join(extents, "f.bin"), testutil.GenDisk(3, 64<<10, "mixed"), 0o644)
	data := testutil.GenDisk(7, 256<<10, "mixed")
	var stream bytes.Buffer
	create(f, filepath.Join(extents, "s.vmdk"), &stream, data, "subformat=streamOptimized", "seq")
	os.WriteFile(filepath.Join(extents, "s.vmdk"), stream.Bytes(), 0o644)
	f.Add(stream.Bytes())
	if qemuImg != "" || os.Getenv("CI") == "true" {
		dir := f.TempDir()
		raw := filepath.Join(dir, "d.raw")
		os.WriteFile(raw, data, 0o644)
		for i, opts := range []string{"subformat=monolithicSparse", "subformat=streamOptimized", "zeroed_grain=on",
			"subformat=monolithicFlat", "subformat=twoGbMaxExtentSparse"} {
			out := filepath.Join(dir, fmt.Sprint(i, ".vmdk"))
			testutil.Run(f, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", opts, raw, out)
			b, _ := os.ReadFile(out)
			f.Add(b)
		}
	}
	f.Add(descriptorFile("twoGbMaxExtentFlat", 1, 0xffffffff, "", `RW 64 FLAT "f.bin" 2`, `RW 128 SPARSE "s.vmdk"`, `RW 8 ZERO`))
	f.Add(descriptorFile("vmfsSparse", 2, 1, "s.vmdk", `RW 128 VMFSSPARSE "s.vmdk"`))
	f.Add(descriptorFile("vmfs", 2, 1, "", `RW 128 VMFS "../f.bin"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(extents, "x.vmdk")
		os.Remove(path)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := open(t, path, format.OpenOptions{})
		if err != nil {
			return
		}
		defer src.Close()
		size := min(src.Size(), 4<<20)
		got := make([]byte, size)
		for off := int64(0); off < size; {
			e, err := src.Region(off, size-off)
			if err != nil {
				return
			}
			n := min(e.Length, size-off)
			if _, err := src.ReadAt(got[off:off+n], off); err != nil && err != io.EOF {
				return
			}
			if e.Zero && !testutil.AllZero(got[off:off+n]) {
				t.Fatalf("the map calls %d bytes at %d zero; they read as data", n, off)
			}
			off += n
		}
		if _, err := src.Mapping(0, size); err != nil && size > 0 {
			return
		}
		// Descriptors are compared with qemu-img by TestConformance: QEMU
		// skips ZERO and RDONLY extents, and reads an extent line after a
		// blank line twice.
		if qemuImg == "" || src.Size() > 64<<20 || !bytes.HasPrefix(b, vmdk.Magic[:]) && !bytes.HasPrefix(b, vmdk.MagicCOWD[:]) {
			return
		}
		ref := path + ".raw"
		defer os.Remove(ref)
		if exec.Command(qemuImg, "convert", "-f", "vmdk", "-O", "raw", path, ref).Run() != nil {
			return // qemu refuses what we read: its checks are tested elsewhere
		}
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(want)) < size || !bytes.Equal(got, want[:size]) {
			t.Fatalf("the first %d bytes differ from qemu-img's (%d bytes)", size, len(want))
		}
	})
}

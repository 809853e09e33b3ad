package vdi_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vdi"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// FuzzOpen opens arbitrary bytes as a VDI image and reads it: errors are
// fine, panics and hangs are not; zero regions read as zeros and the map
// tiles the disk; and where qemu-img is installed, an image that both
// read gives the same bytes (the first 4 MiB) and the same size. Seeds:
// small images of qemu-img's, dynamic and static, blocks in order and
// not, with the bytes past the disk's end cut (which both read as zeros).
//
//	go test -run '^$' -fuzz FuzzOpen -fuzzminimizetime 2s ./format/vdi/
func FuzzOpen(f *testing.F) {
	qemuImg, _ := exec.LookPath("qemu-img")
	if qemuImg != "" || os.Getenv("CI") == "true" {
		testutil.RequireTool(f, "qemu-io")
		dir := f.TempDir()
		b := &builder{dir: dir}
		seeds := []struct {
			path string
			keep int // bytes past offset_data kept
		}{
			{b.qemuIO("tiny", "8K", nil, "write -P 0x11 1k 2k"), 8 << 10},
			{b.qemuIO("static", "1536K", []string{"-o", "static=on"}, "write -P 0x22 1000k 100k", "write -P 0x23 1100k 1k"), 1536 << 10},
			{b.qemuIO("twisted", "2052K", nil, "write -P 0x33 1M 5k", "write -P 0x34 100k 4k", "write -P 0x35 2M 1k"), 2052 << 10},
		}
		if b.err != nil {
			f.Fatal(b.err)
		}
		for _, s := range seeds {
			img, err := os.ReadFile(s.path)
			if err != nil {
				f.Fatal(err)
			}
			img = img[:min(len(img), int(le.Uint32(img[0x158:]))+s.keep)]
			if _, err := vdi.OpenAt(bytes.NewReader(img), int64(len(img)), "", format.OpenOptions{}); err != nil {
				f.Fatalf("seed %s: %v", filepath.Base(s.path), err)
			}
			f.Add(img)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "x.vdi")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		src, err := vdi.Open(fh, format.OpenOptions{})
		if err != nil {
			return
		}
		defer src.Close()
		size := min(src.Size(), 4<<20)
		got := make([]byte, size)
		for off := int64(0); off < size; {
			r, err := src.Region(off, size-off)
			if err != nil || r.Start != off || r.Length <= 0 {
				t.Fatalf("Region(%d, %d) = %+v, %v", off, size-off, r, err)
			}
			n := min(r.Length, size-off)
			if _, err := src.ReadAt(got[off:off+n], off); err != nil && err != io.EOF {
				t.Fatalf("reading %d bytes at %d: %v", n, off, err)
			}
			if r.Zero && !testutil.AllZero(got[off:off+n]) {
				t.Fatalf("the map calls %d bytes at %d zero; they read as data", n, off)
			}
			off += n
		}
		for off := int64(0); off < size; {
			m, err := src.Mapping(off, size-off)
			if err != nil || m.Start != off || m.Length <= 0 {
				t.Fatalf("Mapping(%d, %d) = %+v, %v", off, size-off, m, err)
			}
			off += m.Length
		}
		if qemuImg == "" || src.Size() > 64<<20 {
			return
		}
		ref := path + ".raw"
		if exec.Command(qemuImg, "convert", "-f", "vdi", "-O", "raw", path, ref).Run() != nil {
			t.Fatalf("vmaconv reads what qemu-img refuses")
		}
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(want)) != src.Size() || !bytes.Equal(got, want[:size]) {
			t.Fatalf("size %d (qemu-img: %d), or the first %d bytes differ from qemu-img's", src.Size(), len(want), size)
		}
	})
}

package qcow2_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// writeImage writes data through a Writer in the given order: "seq"
// (whole clusters, ascending, zero clusters declared with ZeroAt),
// "shuffle" (whole clusters in random order) or "pieces" (random-sized
// pieces in random order, zero ones declared with ZeroAt).
func writeImage(t *testing.T, path string, data []byte, o qcow2.WriterOptions, order string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := qcow2.NewWriter(f, int64(len(data)), o)
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(o.ClusterSize)
	if cs == 0 {
		cs = 64 << 10
	}
	type piece struct{ off, n int64 }
	var pieces []piece
	rng := rand.New(rand.NewPCG(uint64(len(data)), 7))
	size := int64(len(data))
	switch order {
	case "seq", "shuffle":
		for off := int64(0); off < size; off += cs {
			pieces = append(pieces, piece{off, min(cs, size-off)})
		}
	case "pieces":
		for off := int64(0); off < size; {
			n := min(1+rng.Int64N(3*cs), size-off)
			pieces = append(pieces, piece{off, n})
			off += n
		}
	}
	if order != "seq" {
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	}
	for _, p := range pieces {
		b := data[p.off : p.off+p.n]
		if zero.IsZero(b) && order != "shuffle" {
			err = w.ZeroAt(p.off, p.n)
		} else {
			_, err = w.WriteAt(b, p.off)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// qemuCheck runs qemu-img check, and qemu-img compare against raw, a file
// holding the data.
func qemuCheck(t *testing.T, img, raw string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors were found on the image.") {
		t.Fatalf("qemu-img check %s: %v\n%s", filepath.Base(img), err, out)
	}
	out, err = exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, img).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// TestWriterQemuImg: every image written, for sizes not a multiple of 64 KiB
// or 512, empty and full disks, small and default clusters, compressed and
// plain, data in order, shuffled or in pieces, passes qemu-img check and
// equals its data for qemu-img compare and for this package's reader.
func TestWriterQemuImg(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	disks := map[string][]byte{
		"mixed":  testutil.GenDisk(1, 3<<20, "mixed"),
		"odd":    testutil.GenDisk(2, 1<<20+7*512+100, "text"), // neither 64 KiB nor 512 aligned
		"empty":  make([]byte, 5<<20),
		"full":   testutil.GenDisk(3, 1<<20, "data"),
		"text":   testutil.GenDisk(4, 2<<20, "text"),
		"tiny":   testutil.GenDisk(5, 1000, "data"),
		"sector": testutil.GenDisk(6, 512, "data"),
		"far":    farMatches(1 << 20),
	}
	type cfg struct {
		cluster int
		comp    string
	}
	raws := map[string]string{} // the data as raw files, for qemu-img compare
	for name, data := range disks {
		raws[name] = filepath.Join(dir, name+".raw")
		if err := os.WriteFile(raws[name], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []cfg{{0, ""}, {0, qcow2.Zlib}, {0, qcow2.Zstd}, {512, ""}, {512, qcow2.Zlib}, {4096, qcow2.Zstd}, {2 << 20, ""}} {
		for name, data := range disks {
			for _, order := range []string{"seq", "shuffle", "pieces"} {
				if c.cluster == 512 && len(data) > 1<<20 && order != "seq" {
					continue // slow and adds nothing
				}
				t.Run(fmt.Sprintf("%s-%d-%s-%s", name, c.cluster, c.comp, order), func(t *testing.T) {
					t.Parallel()
					path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".qcow2")
					writeImage(t, path, data, qcow2.WriterOptions{ClusterSize: c.cluster, Compress: c.comp, Workers: 3}, order)
					qemuCheck(t, path, raws[name])
					src, err := open(t, path, format.OpenOptions{})
					if err != nil {
						t.Fatal(err)
					}
					defer src.Close()
					got := make([]byte, src.Size())
					if n, err := src.ReadAt(got, 0); n != len(got) {
						t.Fatalf("read %d of %d: %v", n, len(got), err)
					}
					if len(got) < len(data) || !bytes.Equal(got[:len(data)], data) || !zero.IsZero(got[len(data):]) {
						t.Fatal("content read back differs")
					}
				})
			}
		}
	}
}

// farMatches returns data whose clusters repeat random 8 KiB pieces
// 8 KiB apart: the only matches are further back than the 4 KiB window
// QEMU compresses with (deflateInit2 windowBits -12), which a reader may
// hold it to.
func farMatches(size int) []byte {
	b := testutil.GenDisk(9, int64(size), "data")
	for off := 0; off+16<<10 <= size; off += 16 << 10 {
		copy(b[off+8<<10:off+16<<10], b[off:off+8<<10])
	}
	return b
}

// TestZlibWindow: zlib clusters use matches at most 4 KiB back, as QEMU's
// do: data whose only redundancy lies 6 KiB back does not compress, while
// data with near matches compresses in every cluster.
func TestZlibWindow(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"far", farMatches(1 << 20), "0.00% compressed clusters"},
		{"random", testutil.GenDisk(8, 1<<20, "data"), "0.00% compressed clusters"},
		{"near", bytes.Repeat([]byte("0123456789abcdef0123456789ABCDEF"), 1<<15), "100.00% compressed clusters"},
	} {
		path := filepath.Join(dir, c.name+".qcow2")
		writeImage(t, path, c.data, qcow2.WriterOptions{Compress: qcow2.Zlib}, "seq")
		out, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
		if !strings.Contains(string(out), ", "+c.want) {
			t.Errorf("%s: qemu-img check does not say %q:\n%s", c.name, c.want, out)
		}
	}
}

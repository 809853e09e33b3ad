package iso9660

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// fuzzTree is a few files: names, links, a hard link, a deep path (for
// relocation), under 100 KiB of image.
func fuzzTree() []guesttest.Entry {
	return guesttest.Filter(guesttest.Standard(), func(e guesttest.Entry) bool {
		switch e.Path {
		case "large", "sparse", "many":
			return false
		}
		return true
	})
}

// FuzzOpen opens mutated images and walks them whole.
func FuzzOpen(f *testing.F) {
	needXorriso(f)
	dir := writeTree(f, "fuzz", fuzzTree())
	for i, args := range [][]string{
		{"-as", "mkisofs", "-R", "-J", "--hardlinks", "-no-pad"},
		{"-compliance", "deep_paths_off", "-as", "mkisofs", "-R", "-no-pad", "-rr_reloc_dir", "rr_moved"},
		{"-as", "mkisofs", "--norock", "-J", "-no-pad"},
		{"-as", "mkisofs", "--norock", "-iso-level", "1", "-no-pad"},
	} {
		img := filepath.Join(f.TempDir(), "seed.iso")
		out, err := exec.Command("xorriso", append(args, "-o", img, dir)...).CombinedOutput()
		if err != nil {
			f.Fatalf("seed %d: %v\n%s", i, err, out)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			f.Fatal(err)
		}
		fsys, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatalf("seed %d (%d bytes): %v", i, len(b), err)
		}
		if err := guesttest.Walk(fsys, 1<<20); err != nil {
			f.Fatalf("seed %d (%d bytes): %v", i, len(b), err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		Probe(r, int64(len(b)))
		fsys, err := Open(r, int64(len(b)))
		if err != nil {
			return
		}
		guesttest.Walk(fsys, 1<<14)
	})
}

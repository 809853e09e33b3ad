package vpc_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vpc"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// fuzzSeeds are images of every kind, small: qemu-img's (dynamic empty,
// fixed, force_size, and dynamic with data, its blocks shrunk to 4 KiB
// so that the fuzzer can afford them), and a differencing disk.
func fuzzSeeds(t testing.TB) [][]byte {
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	dir := t.TempDir()
	var seeds [][]byte
	img := func(name string, create []string, size string, cmds ...string) []byte {
		p := filepath.Join(dir, name)
		if out, err := exec.Command("qemu-img", append(append([]string{"create", "-q", "-f", "vpc"}, create...), p, size)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, c := range cmds {
			if out, err := exec.Command("qemu-io", "-f", "vpc", "-c", c, p).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
		return b
	}
	img("empty.vhd", nil, "3M")
	img("fixed.vhd", []string{"-o", "subformat=fixed"}, "40K", "write -P 7 4k 4k")
	img("force.vhd", []string{"-o", "force_size=on,subformat=fixed"}, "20K", "write -P 9 0 512")
	img("force-dyn.vhd", []string{"-o", "force_size=on"}, "5M")
	data := img("data.vhd", nil, "5M", "write -P 1 0 4k", "write -P 2 4M 8k")
	// Its blocks shrunk to 4 KiB, so that the fuzzer can afford them: in
	// its place.
	seeds[len(seeds)-1] = shrink(data)
	seeds = append(seeds, buildDiff(diffSpec{size: 1 << 20, id: uuid.New(), parentID: uuid.New(), parentName: "p.vhd",
		locators: []loc{{"W2ru", `.\p.vhd`}, {"MacX", "file:///p.vhd"}}}))
	return seeds
}

// FuzzOpen: no input makes the reader panic, hang or allocate by what it
// claims; an image it opens reads whole (its zero map walked, every data
// region read, its map walked) without an error, in a number of steps
// bounded by its size. Each input is tried as it is and with its
// checksums repaired, so that mutations get past them.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		readAll(t, b)
		// The same bytes with their checksums made to add up, so that
		// mutations reach past them, into the BAT, blocks and locators.
		readAll(t, fixChecksums(b))
	})
}

// fixChecksums returns b with the checksums of its footers and of the
// header the first points to made to add up.
func fixChecksums(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) < 512 {
		return b
	}
	for _, off := range []int{0, len(b) - 512} {
		if string(b[off:off+8]) == "conectix" {
			fixSum(b[off:off+512], 64)
		}
	}
	if string(b[:8]) == "conectix" {
		if h := binary.BigEndian.Uint64(b[16:]); h <= uint64(len(b)) && uint64(len(b))-h >= 1024 && string(b[h:h+8]) == "cxsparse" {
			fixSum(b[h:h+1024], 36)
		}
	}
	return b
}

// readAll opens b and, if it opens, reads it whole: its zero map walked,
// every data region read, its map walked, each in a bounded number of
// steps, none failing.
func readAll(t *testing.T, b []byte) {
	if len(b) >= 512 {
		vpc.ProbeTail(b[len(b)-512:], int64(len(b)))
	}
	vpc.Probe(b)
	src, err := vpc.OpenAt(bytes.NewReader(b), int64(len(b)), format.OpenOptions{AllowBacking: true})
	if err != nil {
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error of several lines: %q", err)
		}
		return
	}
	defer src.Close()
	size := src.Size()
	if size < 0 || size > vpc.MaxSize || size%512 != 0 {
		t.Fatalf("size %d", size)
	}
	// Every step covers a block of the file at least, or a run of
	// blocks not in it: far fewer than this.
	limit := 4*int64(len(b)) + 16
	buf := make([]byte, 64<<10)
	steps := int64(0)
	for pos := int64(0); pos < size; steps++ {
		if steps > limit {
			t.Fatalf("no end to the zero map after %d steps at %d of %d", steps, pos, size)
		}
		r, err := src.Region(pos, size-pos)
		if err != nil || r.Start != pos || r.Length <= 0 {
			t.Fatalf("Region(%d) = %+v, %v", pos, r, err)
		}
		if !r.Zero {
			for off := r.Start; off < r.Start+r.Length; off += int64(len(buf)) {
				n := min(int64(len(buf)), r.Start+r.Length-off)
				if k, err := src.ReadAt(buf[:n], off); int64(k) != n || err != nil && err != io.EOF {
					t.Fatalf("ReadAt(%d at %d) = %d, %v", n, off, k, err)
				}
			}
		}
		pos += r.Length
	}
	steps = 0
	for pos := int64(0); pos < size; steps++ {
		if steps > limit {
			t.Fatalf("no end to the map after %d steps", steps)
		}
		m, err := src.Mapping(pos, size-pos)
		if err != nil || m.Length <= 0 {
			t.Fatalf("Mapping(%d) = %+v, %v", pos, m, err)
		}
		pos += m.Length
	}
	if n, err := src.ReadAt(buf[:1], size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v", n, err)
	}
}

// TestFuzzSeeds: the seeds open (the differencing disk up to its parent,
// which a view that is not a file cannot have), so that the fuzzer starts
// from images that read.
func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds(t)
	for i, s := range seeds {
		src, err := vpc.OpenAt(bytes.NewReader(s), int64(len(s)), format.OpenOptions{AllowBacking: true})
		if i == len(seeds)-1 {
			if !errors.Is(err, vpc.ErrBacking) {
				t.Errorf("seed %d (differencing): %v", i, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("seed %d: %v", i, err)
			continue
		}
		src.Close()
	}
	// The shrunk seed holds qemu-io's writes in its 4 KiB blocks.
	s := seeds[len(seeds)-2]
	src, err := vpc.OpenAt(bytes.NewReader(s), int64(len(s)), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for off, want := range map[int64]byte{0: 1, 4095: 1, 4096: 0, 4 << 20: 2, 4<<20 + 4095: 2, 4<<20 + 4096: 0} {
		b := make([]byte, 1)
		if _, err := src.ReadAt(b, off); err != nil || b[0] != want {
			t.Errorf("byte %d: %d, %v; want %d", off, b[0], err, want)
		}
	}
}

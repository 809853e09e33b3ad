package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// qemuFixtures writes small images in every shape compare and map must
// agree with qemu-img on: sparse and fully allocated raw, a raw file that
// ends inside a sector, qcow2 as converted, compressed, with preallocated
// metadata and with zero clusters, disks of other sizes and one changed
// byte, and an archive and a .vma.zst of the sparse disk (whose qemu-img
// counterpart is the sparse raw file).
func qemuFixtures(t *testing.T) (at func(string) string) {
	t.Helper()
	testutil.RequireTool(t, "qemu-img")
	testutil.RequireTool(t, "qemu-io")
	dir := t.TempDir()
	makeQemuImages(t, dir)
	return func(n string) string { return filepath.Join(dir, n) }
}

// TestQemuOracle checks compare and map against qemu-img, on fixtures
// made once.
func TestQemuOracle(t *testing.T) {
	t.Parallel()
	at := qemuFixtures(t)
	t.Run("compare", func(t *testing.T) { testCompareQemu(t, at) })
	t.Run("map", func(t *testing.T) { testMapQemu(t, at) })
	t.Run("archive", func(t *testing.T) { testMapArchive(t, at) })
}

func makeQemuImages(t *testing.T, dir string) {
	at := func(n string) string { return filepath.Join(dir, n) }
	disk := testutil.GenDisk(11, 2<<20, "mixed")
	sparse := func(name string, b []byte, size int64) {
		f, err := os.Create(at(name))
		if err != nil {
			t.Fatal(err)
		}
		err = zero.WriteNonZero(f, b, 0)
		if err == nil {
			err = f.Truncate(size)
		}
		if err := errors.Join(err, f.Close()); err != nil {
			t.Fatal(err)
		}
	}
	qimg := func(args ...string) { t.Helper(); testutil.Run(t, "qemu-img", args...) }
	sparse("sparse.raw", disk, int64(len(disk)))
	os.WriteFile(at("full.raw"), disk, 0o644)
	changed := bytes.Clone(disk)
	changed[1234567] ^= 0x40 // not on a sector boundary
	sparse("diff.raw", changed, int64(len(changed)))
	sparse("longer.raw", disk, 3<<20)                                                         // zeros past the end of disk
	os.WriteFile(at("longer3.raw"), append(bytes.Clone(disk), make([]byte, 1<<20)...), 0o644) // written zeros
	longer2 := append(bytes.Clone(disk), make([]byte, 1<<20)...)
	longer2[2<<20+700001] = 1
	sparse("longer2.raw", longer2, int64(len(longer2)))
	odd := disk[:len(disk)-300] // ends 212 bytes into a sector
	os.WriteFile(at("odd.raw"), odd, 0o644)
	oddTail := append(bytes.Clone(odd), make([]byte, 200)...)
	oddTail[len(odd)+100] = 7 // past odd's end, within its last sector
	os.WriteFile(at("oddtail.raw"), oddTail, 0o644)
	qimg("convert", "-f", "raw", "-O", "qcow2", at("sparse.raw"), at("base.qcow2"))
	qimg("convert", "-f", "raw", "-O", "qcow2", "-c", at("sparse.raw"), at("comp.qcow2"))
	qimg("create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", at("prealloc.qcow2"), "2M")
	qimg("convert", "-n", "-f", "raw", "-O", "qcow2", at("sparse.raw"), at("prealloc.qcow2"))
	qimg("convert", "-f", "raw", "-O", "qcow2", at("full.raw"), at("zero.qcow2"))
	testutil.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -z 0 64k", "-c", "write -z -u 1M 128k", "-c", "write -P 0 1536k 64k", at("zero.qcow2"))
	// Metadata preallocated, barely written: qemu asks the file where its
	// holes are under data clusters.
	qimg("create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", at("meta.qcow2"), "2M")
	testutil.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 4k 4k", "-c", "write -P 9 1M 64k", at("meta.qcow2"))
	for _, name := range []string{"a.vma", "a.vma.zst"} {
		if _, stderr, st := runVmaconv("-q", at("sparse.raw"), at(name)); st != 0 {
			t.Fatalf("writing %s: status %d, %s", name, st, stderr)
		}
	}
}

// qemuName is the file qemu-img reads for what vmaconv reads: an archive
// holds sparse.raw.
func qemuName(at func(string) string, name string) string {
	if strings.HasPrefix(name, "a.vma") {
		return at("sparse.raw")
	}
	return at(name)
}

// runVmaconv runs the CLI in process.
func runVmaconv(args ...string) (stdout, stderr string, status int) {
	var o, e bytes.Buffer
	status = run(context.Background(), args, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), status
}

// runQemuImg runs qemu-img and returns its standard output and status.
func runQemuImg(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command("qemu-img", args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return o.String(), cmd.ProcessState.ExitCode()
}

// testCompareQemu: vmaconv compare prints what qemu-img compare prints
// (byte for byte) and exits as it does, for raw and qcow2 images in every
// shape, archives (against qemu-img on the disk they hold), -s, disks of
// different sizes and a missing file.
func testCompareQemu(t *testing.T, at func(string) string) {
	cases := [][]string{
		{"sparse.raw", "full.raw"},
		{"sparse.raw", "base.qcow2"},
		{"comp.qcow2", "prealloc.qcow2"},
		{"base.qcow2", "diff.raw"},
		{"diff.raw", "comp.qcow2"},
		{"prealloc.qcow2", "diff.raw"},
		{"meta.qcow2", "sparse.raw"},
		{"zero.qcow2", "base.qcow2"},
		{"full.raw", "longer.raw"},
		{"longer.raw", "base.qcow2"},
		{"full.raw", "longer2.raw"},
		{"longer2.raw", "comp.qcow2"},
		{"-s", "full.raw", "longer.raw"},
		{"-s", "base.qcow2", "base.qcow2"},
		{"odd.raw", "oddtail.raw"},
		{"odd.raw", "full.raw"},
		{"a.vma", "base.qcow2"},
		{"a.vma", "diff.raw"},
		{"longer2.raw", "a.vma"},
		{"a.vma.zst", "diff.raw"},
		{"a.vma.zst", "a.vma"},
		{"-m1", "longer2.raw", "full.raw"}, // buffers reused: the shorter disk's end reads as zeros
		{"-m1", "longer3.raw", "full.raw"},
		{"full.raw", "missing.raw"},
		{"missing.raw", "full.raw"},
	}
	for i, tc := range cases {
		t.Run(strings.Join(tc, "_"), func(t *testing.T) {
			t.Parallel() // each waits for qemu-img half the time
			var qargs, vargs []string
			for _, a := range tc {
				if strings.HasPrefix(a, "-m") { // vmaconv's readers
					vargs = append(vargs, a)
					continue
				}
				if strings.HasPrefix(a, "-") {
					qargs, vargs = append(qargs, a), append(vargs, a)
					continue
				}
				f := "raw"
				if strings.HasSuffix(a, ".qcow2") {
					f = "qcow2"
				}
				qargs = append(qargs, "-f", f, qemuName(at, a))
				vargs = append(vargs, at(a))
			}
			// qemu-img compare takes -f for the first and -F for the second.
			if i := slices2nd(qargs, "-f"); i >= 0 {
				qargs[i] = "-F"
			}
			want, wantStatus := runQemuImg(t, append([]string{"compare"}, qargs...)...)
			got, stderr, status := runVmaconv(append([]string{"compare"}, vargs...)...)
			if got != want || status != wantStatus {
				t.Errorf("vmaconv compare %v: status %d, %q (stderr %q)\nqemu-img: status %d, %q", tc, status, got, stderr, wantStatus, want)
			}
			if i%3 != 0 { // -q on every third: it silences the messages, not the status
				return
			}
			if quiet, _, qs := runVmaconv(append([]string{"compare", "-q"}, vargs...)...); quiet != "" || qs != status {
				t.Errorf("-q: %q, status %d", quiet, qs)
			}
		})
	}
}

// slices2nd returns the index of the second occurrence of s in a, or -1.
func slices2nd(a []string, s string) int {
	seen := false
	for i, x := range a {
		if x == s {
			if seen {
				return i
			}
			seen = true
		}
	}
	return -1
}

var compressedKey = regexp.MustCompile(`, "compressed": (true|false)`)

// testMapQemu: vmaconv map --output json prints what qemu-img map prints
// for raw and qcow2 images, byte for byte (the "compressed" key, which
// qemu-img prints since QEMU 8.1, is compared when the installed qemu-img
// prints it and removed from vmaconv's output otherwise), and the parsed
// entries agree field by field; the human table too, where qemu-img can
// print one; --start-offset and --max-length take sizes with suffixes.
func testMapQemu(t *testing.T, at func(string) string) {
	cases := [][]string{
		{"sparse.raw"}, {"full.raw"}, {"odd.raw"}, {"longer2.raw"},
		{"base.qcow2"}, {"comp.qcow2"}, {"prealloc.qcow2"}, {"zero.qcow2"}, {"meta.qcow2"},
		{"--start-offset", "1M", "--max-length", "2M", "base.qcow2"},
		{"--start-offset", "65536", "--max-length", "100K", "sparse.raw"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc, "_"), func(t *testing.T) {
			t.Parallel()
			file := at(tc[len(tc)-1])
			f := "raw"
			if strings.HasSuffix(file, ".qcow2") {
				f = "qcow2"
			}
			opts := tc[:len(tc)-1] // qemu-img takes the same suffixes
			for _, out := range []string{"json", "human"} {
				if out == "human" && f == "qcow2" && strings.Contains(file, "comp") {
					continue // qemu-img refuses to print compressed clusters as a table
				}
				want, wantStatus := runQemuImg(t, append(append([]string{"map", "-f", f, "--output", out}, opts...), file)...)
				got, stderr, status := runVmaconv(append(append([]string{"map", "-f", f, "--output", out}, opts...), file)...)
				if status != wantStatus {
					t.Fatalf("%s: status %d (%s), qemu-img %d", out, status, stderr, wantStatus)
				}
				cmp := got
				if out == "json" && !strings.Contains(want, `"compressed"`) {
					cmp = compressedKey.ReplaceAllString(got, "")
				}
				if cmp != want {
					t.Errorf("%s:\n%s\nqemu-img:\n%s", out, got, want)
				}
				if out == "json" {
					var g, w []map[string]any
					if err := json.Unmarshal([]byte(got), &g); err != nil {
						t.Fatalf("vmaconv's JSON: %v", err)
					}
					json.Unmarshal([]byte(want), &w)
					for i := range w {
						if _, ok := w[i]["compressed"]; !ok && i < len(g) {
							delete(g[i], "compressed")
						}
					}
					if !reflect.DeepEqual(g, w) {
						t.Errorf("parsed entries differ:\n%v\n%v", g, w)
					}
				}
			}
		})
	}
}

// testMapArchive: an archive device (plain, or .vma.zst through the
// cache) maps as the archive stores it: every range present, a cluster
// that stores nothing zero, the rest data, no offsets, equal neighbours
// merged, the whole disk covered.
func testMapArchive(t *testing.T, at func(string) string) {
	disk, _ := os.ReadFile(at("full.raw"))
	for _, name := range []string{"a.vma", "a.vma.zst", "a.vma:drive-scsi0", "a.vma:scsi0"} {
		got, stderr, status := runVmaconv("map", "--output", "json", at(name))
		if status != 0 {
			t.Fatalf("%s: status %d: %s", name, status, stderr)
		}
		var entries []struct {
			Start, Length             int64
			Depth                     int
			Present, Zero, Data, Comp bool
			Offset                    *int64
		}
		if err := json.Unmarshal([]byte(got), &entries); err != nil {
			t.Fatal(err)
		}
		pos := int64(0)
		for i, e := range entries {
			if e.Start != pos || e.Length <= 0 || !e.Present || e.Zero == e.Data || e.Offset != nil || e.Depth != 0 {
				t.Fatalf("%s: entry %d: %+v", name, i, e)
			}
			if i > 0 && entries[i-1].Zero == e.Zero {
				t.Errorf("%s: entries %d and %d not merged", name, i-1, i)
			}
			for c := e.Start; c < e.Start+e.Length; c += 65536 {
				if z := testutil.AllZero(disk[c:min(c+65536, int64(len(disk)))]); z != e.Zero {
					t.Errorf("%s: cluster at %d: zero %v, map says %v", name, c, z, e.Zero)
				}
			}
			pos += e.Length
		}
		if pos != int64(len(disk)) {
			t.Errorf("%s: map covers %d bytes of %d", name, pos, len(disk))
		}
	}
}

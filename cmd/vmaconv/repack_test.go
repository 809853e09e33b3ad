package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	_ "time/tzdata" // testscripts name backups in a zone the machine may lack

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// vmaconvIn runs the CLI in-process with stdin and fails the test unless
// it exits 0.
func vmaconvIn(t *testing.T, stdin io.Reader, args ...string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if st := run(context.Background(), args, stdin, &stdout, &stderr); st != 0 {
		t.Fatalf("vmaconv %s: status %d: %s", strings.Join(args, " "), st, stderr.String())
	}
}

// repackInput is one way to give vmaconv an archive: SRC and options, and
// what standard input holds.
type repackInput struct {
	name  string
	args  []string
	stdin func(t *testing.T) io.Reader
}

// fileIn is standard input read from a file: an *os.File.
func fileIn(path string) func(t *testing.T) io.Reader {
	return func(t *testing.T) io.Reader {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
}

// pipeIn is standard input that is no file: a pipe.
func pipeIn(path string) func(t *testing.T) io.Reader {
	return func(t *testing.T) io.Reader {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return onlyReader{bytes.NewReader(b)}
	}
}

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// plainInputs are the ways to read the plain archive at path: the file at
// random with one and four readers, compressed with zstd and gzip (made
// here with their tools), on standard input as a file and, compressed, as
// a pipe.
func plainInputs(t *testing.T, path string) []repackInput {
	t.Helper()
	zstd, gzip := testutil.RequireTool(t, "zstd"), testutil.RequireTool(t, "gzip")
	base := filepath.Join(t.TempDir(), filepath.Base(path))
	testutil.Run(t, zstd, "-q", "-f", path, "-o", base+".zst")
	testutil.Run(t, "sh", "-c", gzip+` -n -c "$1" > "$2"`, "sh", path, base+".gz")
	return []repackInput{
		{name: "file -m 1", args: []string{path, "-m", "1"}},
		{name: "file -m 4", args: []string{path, "-m", "4"}},
		{name: ".vma.zst", args: []string{base + ".zst"}},
		{name: ".vma.gz", args: []string{base + ".gz", "-m", "1"}},
		{name: "stdin", args: []string{"-"}, stdin: fileIn(path)},
		{name: "stdin .vma.zst", args: []string{"-"}, stdin: pipeIn(base + ".zst")},
	}
}

// checkRepacks repacks the archive from every input into a .vma with the
// UUID and ctime of the plain archive at orig, and checks that each gives
// back exactly orig's bytes.
func checkRepacks(t *testing.T, orig string, inputs []repackInput) {
	t.Helper()
	f, err := os.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := vma.NewReader(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	h := rd.Header()
	want := fileSHA(t, orig)
	dir := t.TempDir()
	for i, in := range inputs {
		out := filepath.Join(dir, fmt.Sprintf("out%d.vma", i))
		args := append(append([]string{}, in.args...), out, "--uuid", h.UUID.String(), "--ctime", strconv.FormatInt(h.CTime.Unix(), 10), "-t", "unsafe")
		var stdin io.Reader
		if in.stdin != nil {
			stdin = in.stdin(t)
		}
		vmaconvIn(t, stdin, args...)
		if got := fileSHA(t, out); got != want {
			t.Errorf("%s from %s: sha256 %s, the original is %s", filepath.Base(orig), in.name, got, want)
		}
		os.Remove(out)
	}
}

// TestRepackGolden: every archive Proxmox wrote, two interleaved disks
// among them, repacks with its UUID and ctime to exactly its original
// bytes, read at random from the file with any -m, compressed (zstd,
// gzip, lzop, as vzdump compresses), or on standard input.
func TestRepackGolden(t *testing.T) {
	t.Parallel()
	dir, manifest := testutil.LoadManifest(t)
	at := func(n string) string { return filepath.Join(dir, n) }
	for _, name := range []string{"case1.vma", "case2.vma", "case6-config-only.vma"} {
		if fileSHA(t, at(name)) != manifest[name].ArchiveSHA256 {
			t.Fatalf("%s is not the archive the manifest lists", name)
		}
		checkRepacks(t, at(name), plainInputs(t, at(name)))
	}
	// case1 compressed by zstd, gzip and lzop themselves.
	var inputs []repackInput
	for _, ext := range []string{"zst", "gz", "lzo"} {
		name := "case5-case1.vma." + ext
		inputs = append(inputs,
			repackInput{name: name, args: []string{at(name)}},
			repackInput{name: name + " on stdin", args: []string{"-"}, stdin: pipeIn(at(name))})
	}
	checkRepacks(t, at("case1.vma"), inputs)
}

// TestRepackExact: archives of several disks interleaved in runs, as
// Proxmox interleaves them, or shuffled, repack with their UUID and ctime
// to exactly their bytes, however they are read. (pipeline's
// TestRepackKeepsArchives tries more orders.)
func TestRepackExact(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 2<<20+4096, "mixed")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 540672, "data")},
		{Name: "drive-tpmstate0-backup", Data: testutil.GenDisk(3, 2<<20, "zero")},
	}
	conf := []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}
	for _, order := range []string{"runs", "shuffle"} {
		src := filepath.Join(dir, order+".vma")
		if err := os.WriteFile(src, testutil.WriteArchive(t, disks, conf, order, 4), 0o644); err != nil {
			t.Fatal(err)
		}
		checkRepacks(t, src, plainInputs(t, src))
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestCompressedRoundTrip: a .vma.zst or .vma.gz written in-process, or
// piped to stdout, decompresses with the real tools to exactly the
// uncompressed archive; archives the real lzop compressed (any level,
// crc32 checksums) read back.
func TestCompressedRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("d.raw"), testutil.GenDisk(4, 1<<20+512, "mixed"), 0o644)
	fixed := []string{"-f", "raw", "--uuid", "6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "--ctime", "1718000000"}
	vmaconv(t, append([]string{at("d.raw"), at("plain.vma")}, fixed...)...)
	plain, _ := os.ReadFile(at("plain.vma"))
	want := fileSHA(t, at("d.raw"))

	decompress := func(tool string, args ...string) []byte {
		t.Helper()
		testutil.RequireTool(t, tool)
		out, err := exec.Command(tool, args...).Output()
		if err != nil {
			t.Fatalf("%s %v: %v", tool, args, err)
		}
		return out
	}
	for _, c := range []struct{ ext, tool string }{{".vma.zst", "zstd"}, {".vma.gz", "gzip"}} {
		vmaconv(t, append([]string{at("d.raw"), at("x" + c.ext)}, fixed...)...)
		if got := decompress(c.tool, "-dc", at("x"+c.ext)); !bytes.Equal(got, plain) {
			t.Errorf("%s: %s -d gives %d bytes, not the plain archive", c.ext, c.tool, len(got))
		}
		if got := vmaconv(t, "checksum", at("x"+c.ext)); got[:64] != want {
			t.Errorf("%s: checksum %s", c.ext, got)
		}
		// To stdout.
		var stdout, stderr bytes.Buffer
		comp := map[string]string{"zstd": "zstd", "gzip": "gzip"}[c.tool]
		if st := run(context.Background(), append([]string{at("d.raw"), "-", "--compress", comp}, fixed...), nil, &stdout, &stderr); st != 0 {
			t.Fatal(stderr.String())
		}
		os.WriteFile(at("s"+c.ext), stdout.Bytes(), 0o644)
		if got := decompress(c.tool, "-dc", at("s"+c.ext)); !bytes.Equal(got, plain) {
			t.Errorf("%s to stdout: does not decompress to the plain archive", c.ext)
		}
	}
	// Uncompressed to stdout is the same archive.
	var stdout, stderr bytes.Buffer
	if st := run(context.Background(), append([]string{at("d.raw"), "-"}, fixed...), nil, &stdout, &stderr); st != 0 || !bytes.Equal(stdout.Bytes(), plain) {
		t.Errorf("archive to stdout differs (%d): %s", st, stderr.String())
	}

	testutil.RequireTool(t, "lzop")
	for _, flags := range [][]string{{"-1"}, {"-9"}, {"--crc32"}, {"-3", "--no-name"}} {
		out := at("l.vma.lzo")
		os.Remove(out)
		testutil.Run(t, "lzop", append(flags, "-o", out, at("plain.vma"))...)
		if got := vmaconv(t, "checksum", out); got[:64] != want {
			t.Errorf("lzop %v: checksum %s", flags, got)
		}
	}
}

// TestZstdMemory: a .vma.zst that declares a 1 GiB window is refused by
// every reading command with one line that says how to allow it, and
// read with --zstd-memory.
func TestZstdMemory(t *testing.T) {
	zstd := testutil.RequireTool(t, "zstd")
	dir := t.TempDir()
	arc := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(1, 1<<20, "text")}}, nil, "seq", 0)
	cmd := exec.Command(zstd, "-q", "--long=30", "-c")
	cmd.Stdin = bytes.NewReader(arc)
	z, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "big.vma.zst")
	os.WriteFile(path, z, 0o644)
	const want = "zstd: the stream needs a 1024 MiB window, more than the limit of 128 MiB (at compressed offset 6); to allow it, pass --zstd-memory 1024 (MiB)\n"
	for _, args := range [][]string{{"verify", path}, {"info", path}, {"checksum", path}, {path + ":drive-scsi0", filepath.Join(dir, "out.raw")}} {
		var stdout, stderr bytes.Buffer
		st := run(context.Background(), args, nil, &stdout, &stderr)
		if st != 1 || !strings.HasSuffix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("vmaconv %v: status %d, %q; want one line ending %q", args, st, stderr.String(), want)
		}
	}
	vmaconv(t, "verify", "--zstd-memory", "1024", path)
}

// TestZstdMemoryFlag: --zstd-memory counts MiB when bare and takes
// qemu-img's suffixes, within 1 MiB to 1 TiB.
func TestZstdMemoryFlag(t *testing.T) {
	for in, want := range map[string]int64{"1": 1 << 20, "128": 128 << 20, "512M": 512 << 20, "2G": 2 << 30, "1.5": 3 << 19, "1048576": 1 << 40} {
		var m mibSize
		if err := m.UnmarshalText([]byte(in)); err != nil || int64(m) != want {
			t.Errorf("--zstd-memory %s = %d, %v; want %d", in, m, err, want)
		}
	}
	for in, msg := range map[string]string{
		"x":              "vmaconv: --zstd-memory: size \"x\": want a number",
		"99999999999999": "vmaconv: --zstd-memory: size \"99999999999999M\": too large",
		"1K":             "vmaconv: --zstd-memory 1 KiB: want 1 MiB to 1 TiB",
		"0":              "vmaconv: --zstd-memory 0 B: want 1 MiB to 1 TiB",
		"1048577":        "vmaconv: --zstd-memory 1 TiB: want 1 MiB to 1 TiB", // 1 TiB + 1 MiB, rounded in the message
	} {
		_, stderr, st := runVmaconv("--zstd-memory", in, "info", "x.vma")
		if st != 2 || !strings.HasPrefix(stderr, msg) {
			t.Errorf("--zstd-memory %s: status %d, %q; want 2, %q…", in, st, stderr, msg)
		}
	}
}

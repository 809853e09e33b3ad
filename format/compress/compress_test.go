package compress_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

func readAll(t *testing.T, b []byte) ([]byte, string, error) {
	t.Helper()
	r, name, err := compress.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, name, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	return out, name, err
}

// TestGolden: vzdump's three compressions of case1.vma decompress to it.
func TestGolden(t *testing.T) {
	dir := testutil.GoldenDir(t)
	plain, err := os.ReadFile(filepath.Join(dir, "case1.vma"))
	if err != nil {
		t.Fatal(err)
	}
	for ext, name := range map[string]string{".zst": compress.Zstd, ".gz": compress.Gzip, ".lzo": compress.Lzop} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, "case5-case1.vma"+ext))
			if err != nil {
				t.Fatal(err)
			}
			got, gotName, err := readAll(t, b)
			if err != nil || gotName != name {
				t.Fatalf("%s: %v", gotName, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("decompressed %d bytes differ from case1.vma (%d)", len(got), len(plain))
			}
			// Truncated anywhere: an error naming the layer, never a clean end.
			for _, cut := range []int{len(b) / 3, len(b) - 100, len(b) - 1} {
				_, _, err := readAll(t, b[:cut])
				var ce *compress.Error
				if !errors.As(err, &ce) || ce.Format != name {
					t.Errorf("cut at %d: %v", cut, err)
				}
			}
			// A flipped bit in the data is caught by the layer's checksum or
			// its decoder.
			c := bytes.Clone(b)
			c[len(c)/2] ^= 0x10
			if out, _, err := readAll(t, c); err == nil && bytes.Equal(out, plain) {
				t.Error("bit flip not noticed and output unchanged?")
			} else if err == nil {
				t.Error("bit flip not detected")
			} else if !strings.HasPrefix(err.Error(), name+": ") {
				t.Errorf("bit flip: %v", err)
			}
		})
	}
}

func TestPlainPassesThrough(t *testing.T) {
	in := []byte("VMA\x00 not compressed")
	out, name, err := readAll(t, in)
	if err != nil || name != "" || !bytes.Equal(out, in) {
		t.Fatalf("%q %q %v", out, name, err)
	}
	if _, _, err := readAll(t, []byte("BZh91AY&SY")); !errors.Is(err, compress.ErrUnsupported) {
		t.Errorf("bzip2: %v", err)
	}
}

// FuzzLzop: whatever the input, our lzop reader agrees with the
// reference lzop -d where it is installed: what lzop decompresses, we
// decompress to the same bytes; what it refuses, we refuse (we may refuse
// more: filters and header fields vzdump never writes). Without lzop it
// checks that nothing panics or hangs.
//
//	go test -run '^$' -fuzz FuzzLzop -fuzzminimizetime 2s ./format/compress/
func FuzzLzop(f *testing.F) {
	if dir, err := testutil.FindGolden(f); err == nil {
		b, err := os.ReadFile(filepath.Join(dir, "case5-case1.vma.lzo"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:20000])
		f.Add(b)
	}
	f.Add([]byte("\x89LZO\x00\r\n\x1a\n\x10\x40\x20\xa0\x09\x40\x01\x05\x03\x00\x00\x0d\x00\x00\x81\xa4\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	lzop, _ := exec.LookPath("lzop")
	if lzop != "" {
		// What lzop writes, and copies with one byte of the compressed data
		// changed (lzop -d refuses them: a block checksum).
		for _, args := range [][]string{{"-c"}, {"-c", "--crc32"}} {
			cmd := exec.Command(lzop, args...)
			cmd.Stdin = bytes.NewReader(testutil.GenDisk(7, 200000, "text"))
			z, err := cmd.Output()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(z)
			for _, at := range []int{len(z) / 3, len(z) / 2, len(z) * 2 / 3} {
				bad := bytes.Clone(z)
				bad[at] ^= 0x20
				f.Add(bad)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ours []byte
		r, kind, err := compress.NewReader(bytes.NewReader(b))
		if err == nil {
			ours, err = io.ReadAll(io.LimitReader(r, 1<<26))
			r.Close()
		}
		if lzop == "" || !bytes.HasPrefix(b, []byte("\x89LZO")) {
			return
		}
		cmd := exec.Command(lzop, "-d", "-c", "-q")
		cmd.Stdin = bytes.NewReader(b)
		ref, refErr := cmd.Output()
		switch {
		case refErr == nil && kind != compress.Lzop:
			t.Fatalf("lzop -d decompresses %d bytes; we do not take the input for lzop (%q)", len(ref), kind)
		case kind != compress.Lzop:
			// Neither takes it for lzop; we pass it on as it is, and
			// the archive reader refuses its magic.
		case refErr == nil && err != nil:
			t.Fatalf("lzop -d decompresses %d bytes; we fail: %v", len(ref), err)
		case refErr == nil && !bytes.Equal(ours, ref):
			t.Fatalf("lzop -d gives %d bytes, we give %d, not the same", len(ref), len(ours))
		case refErr != nil && err == nil && len(ours) > 0:
			t.Fatalf("lzop -d refuses (%v); we decompress %d bytes without an error", refErr, len(ours))
		}
	})
}

// TestLzopVariants: what lzop writes with any level, checksum kind (adler32,
// crc32, none), with or without the original name, and from a pipe, reads
// back exactly.
func TestLzopVariants(t *testing.T) {
	lzop := testutil.RequireTool(t, "lzop")
	data := testutil.GenDisk(4, 1<<20+123, "mixed") // five blocks of lzop's 256 KiB, the last short
	dir := t.TempDir()
	in := filepath.Join(dir, "in.vma")
	os.WriteFile(in, data, 0o644)
	for _, args := range [][]string{{"-1"}, {"-9"}, {"--crc32"}, {"-F"}, {"-N"}, {"-P"}, {"-3", "--crc32", "-N"}, {"-"}} {
		var cmd *exec.Cmd
		if args[0] == "-" {
			cmd = exec.Command(lzop, "-c")
			cmd.Stdin = bytes.NewReader(data) // no name, no mode, from a pipe
		} else {
			cmd = exec.Command(lzop, append(args, "-c", in)...)
		}
		z, err := cmd.Output()
		if err != nil {
			t.Fatalf("lzop %v: %v", args, err)
		}
		got, name, err := readAll(t, z)
		if err != nil || name != compress.Lzop || !bytes.Equal(got, data) {
			t.Errorf("lzop %v: read %d bytes as %q: %v", args, len(got), name, err)
		}
	}
}

// TestZstdWindowLimit: a stream that declares a 1 GiB window (zstd
// --long=30 from a pipe) is refused under the default 128 MiB limit with
// a *WindowError naming the window, and read with a larger limit.
func TestZstdWindowLimit(t *testing.T) {
	zstd := testutil.RequireTool(t, "zstd")
	data := testutil.GenDisk(1, 1<<20, "text")
	cmd := exec.Command(zstd, "-q", "--long=30", "-c")
	cmd.Stdin = bytes.NewReader(data) // a pipe: the window is not cut to the size
	z, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = readAll(t, z)
	var we *compress.WindowError
	if !errors.As(err, &we) || we.Need != 1<<30 || we.Limit != compress.DefaultMaxWindow {
		t.Fatalf("got %v, want a WindowError for 1 GiB", err)
	}
	if want := "zstd: the stream needs a 1024 MiB window, more than the limit of 128 MiB (at compressed offset"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("%q does not start with %q", err, want)
	}
	r, _, err := compress.NewReader(bytes.NewReader(z), compress.ReaderOptions{MaxWindow: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("with a 1 GiB limit: %d bytes, %v", len(got), err)
	}
}

// TestGzipTrailing: zero bytes after the last gzip member are padding, as
// gzip -t accepts; members follow each other; anything else after the end
// is an error, said once ("gzip: …", not "gzip: gzip: …").
func TestGzipTrailing(t *testing.T) {
	member := func(s string) []byte {
		var b bytes.Buffer
		w, _ := compress.NewWriter(&b, compress.Gzip, 0)
		w.Write([]byte(s))
		w.Close()
		return b.Bytes()
	}
	two := append(member("hello, "), member("world")...)
	for name, c := range map[string]struct {
		in   []byte
		want string
		err  string
	}{
		"padded":   {append(member("hello"), make([]byte, 10000)...), "hello", ""},
		"members":  {two, "hello, world", ""},
		"both":     {append(bytes.Clone(two), make([]byte, 512)...), "hello, world", ""},
		"garbage":  {append(member("hello"), "junk"...), "hello", "gzip: trailing garbage after the last gzip member (at compressed offset"},
		"checksum": {flipAt(member("hello"), -6), "", "gzip: checksum mismatch at the end of the stream"},
	} {
		got, _, err := readAll(t, c.in)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), c.err)) {
			t.Errorf("%s: error %v, want %q", name, err, c.err)
		}
		if c.want != "" && string(got) != c.want {
			t.Errorf("%s: read %q, want %q", name, got, c.want)
		}
	}
}

func flipAt(b []byte, at int) []byte {
	if at < 0 {
		at += len(b)
	}
	b[at] ^= 1
	return b
}

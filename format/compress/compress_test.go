package compress_test

import (
	"bytes"
	"errors"
	"io"
	"os"
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

func FuzzLzop(f *testing.F) {
	if dir, err := testutil.FindGolden(f); err == nil {
		b, err := os.ReadFile(filepath.Join(dir, "case5-case1.vma.lzo"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:20000])
	}
	f.Add([]byte("\x89LZO\x00\r\n\x1a\n\x10\x40\x20\xa0\x09\x40\x01\x05\x03\x00\x00\x0d\x00\x00\x81\xa4\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, _, err := compress.NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		defer r.Close()
		io.Copy(io.Discard, io.LimitReader(r, 1<<28))
	})
}

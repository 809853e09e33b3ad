package compress_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// seekableOf writes parts as frames of a seekable stream.
func seekableOf(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := compress.NewSeekableWriter(&out, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestSeekable: every write is a frame; ReadAt at any offset and length,
// also across frames and in parallel, returns the content; the stream is
// plain zstd to a decompressor that knows nothing of seek tables (ours,
// and the zstd command).
func TestSeekable(t *testing.T) {
	var parts [][]byte
	var all []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		p := testutil.GenDisk(uint64(i), int64(1+rng.IntN(300000)), "mixed")
		if i%7 == 3 {
			p = p[:512] // small frames, as extent headers are
		}
		parts = append(parts, p)
		all = append(all, p...)
	}
	z := seekableOf(t, parts...)
	s, err := compress.OpenSeekable(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != int64(len(all)) || s.Frames() != len(parts) {
		t.Fatalf("size %d frames %d, want %d and %d", s.Size(), s.Frames(), len(all), len(parts))
	}
	for range 500 {
		off := rng.Int64N(int64(len(all)))
		n := rng.IntN(700000)
		p := make([]byte, n)
		got, err := s.ReadAt(p, off)
		want := min(int64(n), int64(len(all))-off)
		if int64(got) != want || !bytes.Equal(p[:got], all[off:off+want]) || (int64(n) > want) != (err == io.EOF) {
			t.Fatalf("ReadAt(%d at %d) = %d, %v", n, off, got, err)
		}
	}
	// A plain zstd reader sees one stream.
	r, _, err := compress.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, all) {
		t.Fatalf("as a stream: %d bytes, %v", len(got), err)
	}
	if zstd, err := exec.LookPath("zstd"); err == nil {
		cmd := exec.Command(zstd, "-q", "-d", "-c")
		cmd.Stdin = bytes.NewReader(z)
		out, err := cmd.Output()
		if err != nil || !bytes.Equal(out, all) {
			t.Errorf("zstd -d: %d bytes, %v", len(out), err)
		}
	} else {
		testutil.RequireTool(t, "zstd")
	}
	// Not seekable: a plain zstd stream.
	if _, err := compress.OpenSeekable(bytes.NewReader(all[:100]), 100); !errors.Is(err, compress.ErrNotSeekable) {
		t.Errorf("plain bytes: %v, want ErrNotSeekable", err)
	}
}

// TestSeekableHostile: seek tables that lie about the file are refused at
// open with what is wrong; a frame that does not hold what its entry says
// fails the read that needs it, not the others.
func TestSeekableHostile(t *testing.T) {
	z := seekableOf(t, bytes.Repeat([]byte("a"), 5000), bytes.Repeat([]byte("b"), 7000))
	n := len(z)
	le := binary.LittleEndian
	patch := func(f func(b []byte)) []byte {
		b := bytes.Clone(z)
		f(b)
		return b
	}
	// Layout: frames, table magic, table size, 2 entries (8 bytes), footer.
	entries := n - 9 - 16
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"frames", patch(func(b []byte) { le.PutUint32(b[n-9:], 1<<30) }), "frames (at most"},
		{"too many for the file", patch(func(b []byte) { le.PutUint32(b[n-9:], 100000) }), "do not fit in the file"},
		{"descriptor", patch(func(b []byte) { b[n-5] = 0x04 }), "reserved descriptor bits"},
		{"table magic", patch(func(b []byte) { le.PutUint32(b[entries-8:], 0x184D2A50) }), "skippable frame header"},
		{"compressed sizes", patch(func(b []byte) { le.PutUint32(b[entries:], le.Uint32(b[entries:])+1) }), "frames take"},
		{"empty frame", patch(func(b []byte) { le.PutUint32(b[entries:], 0) }), "compressed bytes for"},
		{"huge frame", patch(func(b []byte) { le.PutUint32(b[entries+4:], 1<<31) }), "compressed bytes for"},
	} {
		_, err := compress.OpenSeekable(bytes.NewReader(tc.b), int64(len(tc.b)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want …%s…", tc.name, err, tc.want)
		}
	}
	// The table says frame 0 holds one byte more than it does.
	b := patch(func(b []byte) { le.PutUint32(b[entries+4:], 5001) })
	s, err := compress.OpenSeekable(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "frame 0 holds 5000 bytes, the seek table says 5001") {
		t.Errorf("lying entry: %v", err)
	}
	if p := make([]byte, 10); func() error { _, err := s.ReadAt(p, 5001); return err }() != nil || !bytes.Equal(p, bytes.Repeat([]byte("b"), 10)) {
		t.Error("the intact frame is not readable after a damaged one")
	}
}

package compress

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// zstdCommand compresses data with the zstd command and args; without
// the command the test is skipped (failed under CI, which installs it).
// (testutil, which says the same, imports this package.)
func zstdCommand(t *testing.T, data []byte, args ...string) []byte {
	t.Helper()
	zstd, err := exec.LookPath("zstd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	in := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	z, err := exec.Command(zstd, append(append([]string{"-q", "-c"}, args...), in)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// machineCode returns this test's executable: size bytes of compressible
// data at least.
func machineCode(t *testing.T, size int) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(exe)
	if err != nil || len(code) < size {
		t.Fatalf("%d bytes of executable: %v", len(code), err)
	}
	return code
}

// TestRestartsUnproven: with every candidate taken untested, points whose
// spans do not decode as the stream are found when their spans are
// proven, and folded into the span before them: the points left read the
// stream back exactly.
func TestRestartsUnproven(t *testing.T) {
	// Machine code (compressible), with stretches of random bytes.
	code := machineCode(t, 5<<20)
	var data []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for len(data) < 8<<20 {
		n := 256<<10 + rng.IntN(1<<20)
		at := rng.IntN(len(code) - n)
		data = append(data, code[at:at+n]...)
		if rng.IntN(4) == 0 {
			random := make([]byte, rng.IntN(512<<10))
			rand.NewChaCha8([32]byte{byte(len(data))}).Read(random)
			data = append(data, random...)
		}
	}
	z := zstdCommand(t, data, "--single-thread")
	defer func(f func(*builder, int, int, int64) (bool, error)) { candidateTest = f }(candidateTest)
	taken := 0
	candidateTest = func(*builder, int, int, int64) (bool, error) { taken++; return true, nil }
	var dicts [][]byte
	x, err := BuildRestarts(t.Context(), bytes.NewReader(z), int64(len(z)), RestartOptions{Every: 1 << 20}, func(p Restart, d []byte) error {
		dicts = append(dicts, bytes.Clone(d))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Validate(int64(len(z))); err != nil {
		t.Fatal(err)
	}
	if len(x.Points) >= taken+1 {
		t.Fatalf("%d points from %d candidates taken: none was folded", len(x.Points), taken)
	}
	r := NewRestartReader(bytes.NewReader(z), x, func(i int) ([]byte, error) { return dicts[i], nil })
	defer r.Close()
	got, err := io.ReadAll(io.NewSectionReader(r, 0, x.Size))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through %d points: %v, equal %v", len(x.Points), err, bytes.Equal(got, data))
	}
	t.Logf("%d candidates taken untested, %d points left", taken, len(x.Points))
}

// TestRestartsEmptyBlocks: thousands of empty raw blocks (3 bytes each)
// in the middle of a stream are candidates at one offset: tried once, not
// once each (each try decodes a MiB).
func TestRestartsEmptyBlocks(t *testing.T) {
	data := machineCode(t, 4<<20)[:4<<20]
	z := zstdCommand(t, data, "--no-check", "--single-thread")
	// The blocks, and 20,000 empty ones put after the first half of them.
	sc := &zscanner{br: bufio.NewReader(bytes.NewReader(z))}
	var blocks []zblock
	for {
		b, err := sc.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, b)
	}
	mid := blocks[len(blocks)/2].off
	var out []byte
	out = append(out, z[:mid]...)
	for range 20000 {
		out = append(out, 0, 0, 0) // a raw block of no bytes, not the last
	}
	out = append(out, z[mid:]...)
	defer func(f func(*builder, int, int, int64) (bool, error)) { candidateTest = f }(candidateTest)
	tries := 0
	candidateTest = func(b *builder, c, n int, d int64) (bool, error) { tries++; return (*builder).test(b, c, n, d) }
	var dicts [][]byte
	x, err := BuildRestarts(t.Context(), bytes.NewReader(out), int64(len(out)), RestartOptions{Every: 1 << 20}, func(p Restart, d []byte) error {
		dicts = append(dicts, bytes.Clone(d))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if tries > 500 {
		t.Fatalf("%d candidates tried", tries)
	}
	r := NewRestartReader(bytes.NewReader(out), x, func(i int) ([]byte, error) { return dicts[i], nil })
	defer r.Close()
	got, err := io.ReadAll(io.NewSectionReader(r, 0, x.Size))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through %d points: %v, equal %v", len(x.Points), err, bytes.Equal(got, data))
	}
}

// rleStream returns a frame of n RLE blocks of size bytes each (a 2 MiB
// window, no checksum).
func rleStream(n, size int, b byte) []byte {
	z := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58}
	for i := range n {
		v := uint32(size)<<3 | 1<<1 // RLE
		if i == n-1 {
			v |= 1
		}
		z = append(z, byte(v), byte(v>>8), byte(v>>16), b)
	}
	return z
}

// TestRestartsBoundedSearch: what a search decodes ahead is sized by each
// block's most, whatever the blocks before held: after a frame of 1 KiB
// blocks, a search over blocks of 128 KiB takes 10 MiB of them, not 10 K
// blocks (the average of the frame before made it 1.3 GiB).
func TestRestartsBoundedSearch(t *testing.T) {
	z1 := rleStream(12000, 1<<10, 'a')
	z2 := rleStream(20000, 128<<10, 'b')
	b := &builder{sc: &zscanner{br: bufio.NewReader(bytes.NewReader(append(z1, z2...)))}}
	n, err := b.blocksFor(10<<20, 0)
	if err != nil || n != 10<<10+1+restartTestBlock {
		t.Fatalf("1 KiB blocks: %d for 10 MiB, %v", n, err)
	}
	b.bl = b.bl[:0]
	for len(b.bl) == 0 || !b.bl[len(b.bl)-1].last { // to the first frame's end
		b.bl = b.bl[:0]
		if err := b.fill(12000); err != nil {
			t.Fatal(err)
		}
	}
	b.bl = b.bl[:0]
	n, err = b.blocksFor(10<<20, 0)
	if err != nil || n != 80+1+restartTestBlock {
		t.Fatalf("128 KiB blocks: %d for 10 MiB, %v", n, err)
	}
	var most int64
	for _, blk := range b.bl[:n] {
		most += blk.most
	}
	if most > 11<<20+restartTestBlock*maxBlockBytes {
		t.Fatalf("%d MiB decoded ahead", most>>20)
	}
}

// TestRestartsStreamError: an error from RestartOptions.Stream stops
// BuildRestarts and is what it returns.
func TestRestartsStreamError(t *testing.T) {
	z := rleStream(200, 128<<10, 'c')
	errSink := errors.New("sink full")
	_, err := BuildRestarts(t.Context(), bytes.NewReader(z), int64(len(z)), RestartOptions{Every: 1 << 20, Stream: failAfter{errSink}},
		func(Restart, []byte) error { return nil })
	if !errors.Is(err, errSink) {
		t.Fatalf("got %v", err)
	}
}

type failAfter struct{ err error }

func (f failAfter) Write(p []byte) (int, error) { return 0, f.err }

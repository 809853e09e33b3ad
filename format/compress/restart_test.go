package compress_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// restartData is what the restart tests compress: stretches of a few
// hundred KiB of machine code and data (this test's own executable:
// compressible, so blocks hold matches and repeat offsets), random data
// (raw blocks) and zeros.
func restartData(t *testing.T, size int) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 0, size)
	rng := rand.New(rand.NewPCG(7, uint64(size)))
	for seed := uint64(0); len(b) < size; seed++ {
		n := min(size-len(b), 64<<10+rng.IntN(512<<10))
		switch seed % 4 {
		case 0, 1:
			at := rng.IntN(len(code) - n)
			b = append(b, code[at:at+n]...)
		case 2:
			b = append(b, testutil.GenDisk(seed, int64(n), "data")...)
		default:
			b = append(b, make([]byte, n)...)
		}
	}
	return b
}

// zstdCLI compresses data with the zstd command and the arguments given.
func zstdCLI(t *testing.T, data []byte, args ...string) []byte {
	t.Helper()
	zstdPath := testutil.RequireTool(t, "zstd")
	in := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(zstdPath, append([]string{"-q", "-c"}, append(args, in)...)...)
	z, err := cmd.Output()
	if err != nil {
		t.Fatalf("zstd %v: %v", args, err)
	}
	return z
}

// buildRestarts returns z's restart points every 1 MiB and their
// histories.
func buildRestarts(t *testing.T, z []byte) (*compress.Restarts, [][]byte) {
	t.Helper()
	var dicts [][]byte
	x, err := compress.BuildRestarts(t.Context(), bytes.NewReader(z), int64(len(z)), compress.RestartOptions{Every: 1 << 20},
		func(p compress.Restart, dict []byte) error {
			if int64(len(dict)) != p.Dict {
				t.Errorf("point at %d: %d bytes of history given, %d said", p.U, len(dict), p.Dict)
			}
			dicts = append(dicts, bytes.Clone(dict))
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Validate(int64(len(z))); err != nil {
		t.Fatal(err)
	}
	return x, dicts
}

// TestRestarts: for zstd streams as the zstd command writes them (as
// vzdump runs it, multithreaded with small jobs, single-threaded, at a
// higher level, several frames with skippable and empty frames between,
// one without its checksum and with its content size) and as
// klauspost/compress writes them, restart points are found about every
// 1 MiB, and every read through them, whole, at random and in parallel,
// gives the stream's bytes.
func TestRestarts(t *testing.T) {
	data := restartData(t, 3<<20)
	empty := zstdCLI(t, nil)
	skippable := binary.LittleEndian.AppendUint32(nil, 0x184D2A5B)
	skippable = binary.LittleEndian.AppendUint32(skippable, 5)
	skippable = append(skippable, "12345"...)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(2))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		data    []byte
		z       func() []byte
		small   bool // expect points with the small history (where jobs start)
		minimum int  // points at least
	}{
		{name: "vzdump", data: data, z: func() []byte { return zstdCLI(t, data, "-T1") }, minimum: 1},
		{name: "jobs", data: data, z: func() []byte { return zstdCLI(t, data, "-T2", "-B1MiB") }, small: true, minimum: 2},
		{name: "rsyncable", data: data, z: func() []byte { return zstdCLI(t, data, "-T2", "-B1MiB", "--rsyncable") }, small: true, minimum: 2},
		{name: "single-thread", data: data, z: func() []byte { return zstdCLI(t, data, "--single-thread") }, minimum: 2},
		{name: "level9", data: data, z: func() []byte { return zstdCLI(t, data, "-9", "-T2", "-B1MiB") }, minimum: 2},
		{name: "frames", data: data, z: func() []byte {
			z := zstdCLI(t, data[:1<<20], "-T1")
			z = append(z, skippable...)
			z = append(z, empty...)
			return append(z, zstdCLI(t, data[1<<20:], "-T1", "--content-size", "--no-check")...)
		}, minimum: 2},
		{name: "content-size", data: data[:100<<10], z: func() []byte { return zstdCLI(t, data[:100<<10], "--content-size") }, minimum: 1},
		{name: "klauspost", data: data, z: func() []byte { return enc.EncodeAll(data, nil) }, minimum: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			z := c.z()
			x, dicts := buildRestarts(t, z)
			if x.Size != int64(len(c.data)) {
				t.Fatalf("%d decompressed bytes, want %d", x.Size, len(c.data))
			}
			small := 0
			for _, p := range x.Points {
				if p.Dict > 0 && p.Dict <= 256<<10 {
					small++
				}
			}
			if len(x.Points) < c.minimum || c.small && small == 0 {
				t.Fatalf("%d points, %d with a small history: %+v", len(x.Points), small, x.Points)
			}
			checkRestartReader(t, z, x, dicts, c.data)
		})
	}
}

// checkRestartReader reads data through z's restart points: whole, then
// at random in parallel.
func checkRestartReader(t *testing.T, z []byte, x *compress.Restarts, dicts [][]byte, data []byte) {
	t.Helper()
	r := compress.NewRestartReader(bytes.NewReader(z), x, func(i int) ([]byte, error) { return dicts[i], nil })
	defer r.Close()
	got := make([]byte, len(data))
	for off := 0; off < len(data); off += 700 << 10 {
		if n, err := r.ReadAt(got[off:min(off+700<<10, len(data))], int64(off)); err != nil && !(err == io.EOF && off+n == len(data)) {
			t.Fatalf("read at %d: %d, %v", off, n, err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the stream read whole through its points differs")
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			buf := make([]byte, 200<<10)
			for range 30 {
				off := rng.Int64N(int64(len(data)))
				n, err := r.ReadAt(buf[:1+rng.IntN(len(buf))], off)
				if err != nil && err != io.EOF {
					t.Errorf("read at %d: %v", off, err)
					return
				}
				if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
					t.Errorf("read at %d differs", off)
					return
				}
			}
		})
	}
	wg.Wait()
	if n, err := r.ReadAt(make([]byte, 1), int64(len(data))); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
}

// TestRestartsDamaged: a damaged or cut stream fails BuildRestarts with an
// error naming zstd; a history that is not the stream's, or points that
// do not fit it, fail the reads that use them, never give bytes of
// another length.
func TestRestartsDamaged(t *testing.T) {
	data := restartData(t, 3<<20)
	z := zstdCLI(t, data, "-T2", "-B1MiB")
	for name, bad := range map[string][]byte{
		"cut":        z[:len(z)-1000],
		"flipped":    flip(z, len(z)/2),
		"header":     flip(z, 4),
		"not zstd":   append([]byte("gzip"), z[4:]...),
		"trailing":   append(bytes.Clone(z), 0, 1, 2),
		"no content": z[:13],
	} {
		_, err := compress.BuildRestarts(t.Context(), bytes.NewReader(bad), int64(len(bad)), compress.RestartOptions{Every: 1 << 20},
			func(compress.Restart, []byte) error { return nil })
		var ze *compress.Error
		if err == nil || !errors.As(err, &ze) {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err := compress.BuildRestarts(t.Context(), bytes.NewReader(z), int64(len(z)), compress.RestartOptions{Every: 1000},
		func(compress.Restart, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "want 1 MiB") {
		t.Errorf("every 1000 bytes: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := compress.BuildRestarts(ctx, bytes.NewReader(z), int64(len(z)), compress.RestartOptions{Every: 1 << 20},
		func(compress.Restart, []byte) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}

	x, dicts := buildRestarts(t, z)
	if len(x.Points) < 2 {
		t.Fatalf("%d points", len(x.Points))
	}
	// Another history of the same length: the trust is the index's, but a
	// span that then decodes to another length, or not at all, fails.
	wrong := func(i int) ([]byte, error) {
		d := bytes.Clone(dicts[i])
		for k := range d {
			d[k] ^= 0xff
		}
		return d, nil
	}
	short := func(i int) ([]byte, error) { return dicts[i][:len(dicts[i])/2], nil }
	for name, dict := range map[string]func(int) ([]byte, error){"wrong": wrong, "short": short} {
		r := compress.NewRestartReader(bytes.NewReader(z), x, dict)
		_, err := io.ReadAll(io.NewSectionReader(r, 0, x.Size))
		r.Close()
		if name == "short" && (err == nil || !strings.Contains(err.Error(), "history")) {
			t.Errorf("%s history: %v", name, err)
		}
		_ = err // another history of the right length may decode: the index is trusted as the archive is
	}
	// Points that do not fit the stream: Validate refuses them; a span end
	// moved by a block decodes to another length and fails.
	for name, mod := range map[string]func(*compress.Restarts){
		"first not at 0": func(x *compress.Restarts) { x.Points[0].U = 5 },
		"past the end":   func(x *compress.Restarts) { x.Points[1].End = int64(len(z)) + 1 },
		"out of order":   func(x *compress.Restarts) { x.Points[1].C = x.Points[0].C },
		"huge window":    func(x *compress.Restarts) { x.Points[1].WD = 0xff },
		"history > U":    func(x *compress.Restarts) { x.Points[0].Dict = 1 },
		"no size":        func(x *compress.Restarts) { x.Size = x.Points[len(x.Points)-1].U },
		"overflow": func(x *compress.Restarts) { // End-C wraps to 2, Last+3 to End
			x.Points = x.Points[:2]
			x.Size = x.Points[1].U + 1000
			x.Points[1].C, x.Points[1].Last, x.Points[1].End = math.MaxInt64-1, math.MaxInt64-1, math.MinInt64+1
		},
	} {
		y := &compress.Restarts{Size: x.Size, Points: append([]compress.Restart(nil), x.Points...)}
		mod(y)
		if err := y.Validate(int64(len(z))); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
	y := &compress.Restarts{Size: x.Size, Points: append([]compress.Restart(nil), x.Points...)}
	y.Points[1].U += 4096 // the span before decodes to 4096 more bytes than said
	r := compress.NewRestartReader(bytes.NewReader(z), y, func(i int) ([]byte, error) { return dicts[i], nil })
	defer r.Close()
	if _, err := io.ReadAll(io.NewSectionReader(r, 0, y.Size)); err == nil || !strings.Contains(err.Error(), "than the index says") {
		t.Errorf("a span of another length: %v", err)
	}
}

func flip(b []byte, at int) []byte {
	b = bytes.Clone(b)
	b[at] ^= 0x40
	return b
}

package compress_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

const (
	fuzzRestartStream = 512 << 10 // the most compressed bytes a fuzz input has
	fuzzRestartOut    = 24 << 20  // the most decompressed bytes it may make
	fuzzRestartHang   = 90 * time.Second
)

// fuzzRestartData is what the fuzz seeds compress: about size bytes of
// text-like clusters (matches, repeat offsets), short random stretches
// (raw blocks) and zeros (RLE blocks), deterministic, so that a few
// hundred KiB of stream hold a few MiB and so a few points 1 MiB apart.
func fuzzRestartData(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 11))
	b := make([]byte, 0, size)
	for i := uint64(0); len(b) < size; i++ {
		var n int
		switch i % 4 {
		case 0, 2:
			n = 64<<10 + rng.IntN(256<<10)
			b = append(b, testutil.GenDisk(seed*100+i, int64(n), "text")[:min(n, size-len(b))]...)
		case 1:
			n = 4<<10 + rng.IntN(24<<10)
			b = append(b, testutil.GenDisk(seed*100+i, int64(n), "data")[:min(n, size-len(b))]...)
		default:
			n = rng.IntN(128 << 10)
			b = append(b, make([]byte, min(n, size-len(b)))...)
		}
	}
	return b
}

// fuzzZstdCLI compresses data with the zstd command, nil if it has none.
func fuzzZstdCLI(tb testing.TB, data []byte, args ...string) []byte {
	tb.Helper()
	path, err := exec.LookPath("zstd")
	if err != nil {
		return nil
	}
	in := filepath.Join(tb.TempDir(), "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	z, err := exec.Command(path, append(append([]string{"-q", "-c"}, args...), in)...).Output()
	if err != nil {
		tb.Fatalf("zstd %v: %v", args, err)
	}
	return z
}

// fuzzRestartSeeds are small real zstd streams, klauspost's and the zstd
// command's (if it is there), each of a few MiB so that they have several
// points 1 MiB apart.
func fuzzRestartSeeds(tb testing.TB) [][]byte {
	// Under go test, not fuzzing, the seeds are only run: fewer and
	// smaller (TestRestarts reads the same kinds of streams).
	if f := flag.Lookup("test.fuzz"); f == nil || f.Value.String() == "" {
		data := fuzzRestartData(2<<20, 1)
		seeds := [][]byte{fuzzZstdCLI(tb, data, "-T2", "-B1MiB"), fuzzZstdCLI(tb, data[:3000], "--content-size", "--single-thread")}
		if seeds[0] == nil {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
			if err != nil {
				tb.Fatal(err)
			}
			defer enc.Close()
			seeds = [][]byte{enc.EncodeAll(data, nil)}
		}
		return seeds
	}
	data := fuzzRestartData(3<<20, 1)
	var seeds [][]byte
	for _, o := range [][]zstd.EOption{
		{zstd.WithEncoderConcurrency(1)},
		{zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(1 << 17)},
		{zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true)},
	} {
		enc, err := zstd.NewWriter(nil, o...)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, enc.EncodeAll(data, nil))
		// Several frames: every frame's first block is a point.
		var frames []byte
		for at := 0; at < len(data); at += 700 << 10 {
			frames = enc.EncodeAll(data[at:min(at+700<<10, len(data))], frames)
		}
		seeds = append(seeds, frames)
		enc.Close()
	}
	skippable := binary.LittleEndian.AppendUint32(nil, 0x184D2A5E)
	skippable = binary.LittleEndian.AppendUint32(skippable, 3)
	skippable = append(skippable, "abc"...)
	for _, args := range [][]string{
		{"-T1"},             // as vzdump: one frame, one job here
		{"-T2", "-B1MiB"},   // jobs of 1 MiB: points with a small history
		{"--single-thread"}, // no jobs
		{"-T2", "-B1MiB", "--no-check"},
		{"-T2", "-B1MiB", "--long=20"},
	} {
		if z := fuzzZstdCLI(tb, data, args...); z != nil {
			seeds = append(seeds, z)
		}
	}
	if a := fuzzZstdCLI(tb, data[:1<<20], "-T1"); a != nil {
		b := fuzzZstdCLI(tb, data[1<<20:], "-T2", "-B1MiB", "--no-check")
		seeds = append(seeds, append(append(a, skippable...), b...))
		// A tiny one: a single-segment frame with its content size.
		seeds = append(seeds, fuzzZstdCLI(tb, data[:3000], "--content-size", "--single-thread"))
		seeds = append(seeds, fuzzZstdCLI(tb, data[:200], "--content-size", "--single-thread"))
	}
	for i, s := range seeds {
		if len(s) > fuzzRestartStream {
			tb.Fatalf("seed %d: %d bytes", i, len(s))
		}
	}
	return seeds
}

var errTooBig = errors.New("more than the fuzz target decodes")

// wholeZstd decodes z as one stream, as klauspost's decoder does.
func wholeZstd(z []byte) ([]byte, error) {
	d, err := zstd.NewReader(bytes.NewReader(z), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(compress.MaxRestartWindow), zstd.WithDecoderMaxMemory(fuzzRestartOut+1))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	b, err := io.ReadAll(io.LimitReader(d, fuzzRestartOut+1))
	if len(b) > fuzzRestartOut {
		return nil, errTooBig
	}
	if err != nil && errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return nil, errTooBig
	}
	return b, err
}

// watchdog panics (crashing the fuzz worker, so the input is kept) if
// stop is not called within d.
func watchdog(what string, d time.Duration) (stop func()) {
	tm := time.AfterFunc(d, func() { panic(fmt.Sprintf("%s: still running after %v", what, d)) })
	return func() { tm.Stop() }
}

// FuzzBuildRestarts: no stream makes BuildRestarts panic, hang or allocate
// without bound; a stream it accepts is one the decoder reads whole, and
// every read through its points gives the stream's bytes.
func FuzzBuildRestarts(f *testing.F) {
	for _, s := range fuzzRestartSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, z []byte) {
		if len(z) > fuzzRestartStream {
			return
		}
		want, werr := wholeZstd(z)
		if errors.Is(werr, errTooBig) {
			return
		}
		var dicts [][]byte
		var prev *compress.Restart
		stop := watchdog("BuildRestarts", fuzzRestartHang)
		x, err := compress.BuildRestarts(context.Background(), bytes.NewReader(z), int64(len(z)), compress.RestartOptions{Every: 1 << 20},
			func(p compress.Restart, dict []byte) error {
				if int64(len(dict)) != p.Dict {
					t.Errorf("point at %d: %d bytes of history, %d said", p.U, len(dict), p.Dict)
				}
				if prev != nil && p.U <= prev.U {
					t.Errorf("point at %d after one at %d", p.U, prev.U)
				}
				prev = &p
				dicts = append(dicts, bytes.Clone(dict))
				return nil
			})
		stop()
		if err != nil {
			return
		}
		if werr != nil {
			t.Fatalf("BuildRestarts accepted a stream the decoder refuses (%v): %+v", werr, x)
		}
		if x.Size != int64(len(want)) {
			t.Fatalf("%d decompressed bytes, the decoder gives %d", x.Size, len(want))
		}
		if err := x.Validate(int64(len(z))); err != nil {
			t.Fatalf("BuildRestarts' points do not validate: %v", err)
		}
		if len(dicts) != len(x.Points) {
			t.Fatalf("%d histories emitted for %d points", len(dicts), len(x.Points))
		}
		for i, p := range x.Points {
			if !bytes.Equal(dicts[i], want[p.U-p.Dict:p.U]) {
				t.Fatalf("point %d: its history is not the stream's bytes before it", i)
			}
		}
		stop = watchdog("RestartReader", fuzzRestartHang)
		defer stop()
		r := compress.NewRestartReader(bytes.NewReader(z), x, func(i int) ([]byte, error) { return dicts[i], nil })
		defer r.Close()
		if r.Size() != x.Size {
			t.Fatalf("Size %d, want %d", r.Size(), x.Size)
		}
		// Whole, in reads of an odd size that straddle chunks and spans.
		got := make([]byte, len(want))
		for off := 0; off < len(want); off += 300001 {
			end := min(off+300001, len(want))
			n, err := r.ReadAt(got[off:end], int64(off))
			if n != end-off || err != nil && !(err == io.EOF && end == len(want)) {
				t.Fatalf("read of %d at %d: %d, %v", end-off, off, n, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read through %d points, the stream differs at %d", len(x.Points), firstDiff(got, want))
		}
		if n, err := r.ReadAt(make([]byte, 1), x.Size); n != 0 || err != io.EOF {
			t.Fatalf("read at the end: %d, %v", n, err)
		}
		// At random, from two goroutines (go test -race).
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(len(z)), uint64(g)))
				buf := make([]byte, 64<<10)
				for range 8 {
					if len(want) == 0 {
						return
					}
					off := rng.IntN(len(want))
					n, err := r.ReadAt(buf[:1+rng.IntN(len(buf))], int64(off))
					if err != nil && err != io.EOF {
						t.Errorf("read at %d: %v", off, err)
						return
					}
					if !bytes.Equal(buf[:n], want[off:off+n]) {
						t.Errorf("read of %d at %d differs", n, off)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// restartFixture is a valid stream, its bytes and its points.
type restartFixture struct {
	z, data []byte
	x       *compress.Restarts
	dicts   [][]byte
}

var (
	fixtureOnce sync.Once
	fixture     restartFixture
	fixtureErr  error
)

// theRestartFixture returns a stream with points that have histories (the
// zstd command's jobs; klauspost's frames without it).
func theRestartFixture(tb testing.TB) restartFixture {
	fixtureOnce.Do(func() {
		data := fuzzRestartData(3<<20, 2)
		z := fuzzZstdCLI(tb, data, "-T2", "-B1MiB")
		if z == nil {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
			for at := 0; at < len(data); at += 1 << 20 {
				z = enc.EncodeAll(data[at:min(at+1<<20, len(data))], z)
			}
		}
		var dicts [][]byte
		x, err := compress.BuildRestarts(context.Background(), bytes.NewReader(z), int64(len(z)), compress.RestartOptions{Every: 1 << 20},
			func(p compress.Restart, dict []byte) error {
				dicts = append(dicts, bytes.Clone(dict))
				return nil
			})
		fixture, fixtureErr = restartFixture{z: z, data: data, x: x, dicts: dicts}, err
	})
	if fixtureErr != nil {
		tb.Fatal(fixtureErr)
	}
	return fixture
}

// FuzzRestartReader: a table of points, changed field by field, and
// histories, changed byte by byte: if Validate accepts the table, reads
// through it give bytes or an error, never a panic, a hang or a huge
// allocation; with nothing changed they give the stream's bytes.
//
// ops is a list of 11-byte changes: point, field, how (set or add), value.
func FuzzRestartReader(f *testing.F) {
	op := func(pt, field, how byte, v int64) []byte {
		return binary.LittleEndian.AppendUint64([]byte{pt, field, how}, uint64(v))
	}
	f.Add([]byte{}, int64(0), uint32(1<<20))
	f.Add(op(1, 1, 1, 4096), int64(1<<20), uint32(100))
	f.Add(op(1, 4, 0, 0xff), int64(2<<20), uint32(1<<20))
	f.Add(op(1, 5, 1, -1), int64(1<<20-5), uint32(10))
	f.Add(op(1, 6, 1, 1<<30), int64(3<<20), uint32(1<<21))
	f.Add(op(2, 7, 0, 0x10), int64(2<<20+5), uint32(7))
	f.Add(append(op(0, 3, 1, -1000), op(1, 0, 1, -1000)...), int64(0), uint32(2<<20))
	f.Add(op(1, 8, 0, 0), int64(0), uint32(3<<20))
	f.Add(op(0, 2, 0, 0), int64(4000), uint32(3<<20))
	f.Fuzz(func(t *testing.T, ops []byte, off int64, n uint32) {
		fx := theRestartFixture(t)
		x := &compress.Restarts{Size: fx.x.Size, Points: append([]compress.Restart(nil), fx.x.Points...)}
		dicts := make([][]byte, len(fx.dicts))
		copy(dicts, fx.dicts)
		changed := false
		for len(ops) >= 11 && len(x.Points) > 0 {
			i, field, how := int(ops[0])%len(x.Points), ops[1]%9, ops[2]&1
			v := int64(binary.LittleEndian.Uint64(ops[3:]))
			ops = ops[11:]
			set := func(p *int64) {
				if how == 0 {
					*p = v
				} else {
					*p += v
				}
			}
			p := &x.Points[i]
			switch field {
			case 0:
				set(&p.C)
			case 1:
				set(&p.U)
			case 2:
				set(&p.Last)
			case 3:
				set(&p.End)
			case 4:
				p.WD = byte(v)
			case 5:
				set(&p.Dict)
			case 6:
				set(&x.Size)
			case 7: // a history byte
				if len(dicts[i]) > 0 {
					d := bytes.Clone(dicts[i])
					d[int(uint64(v>>8)%uint64(len(d)))] ^= byte(v) | 1
					dicts[i] = d
				}
			case 8: // a point dropped, or doubled
				if how == 0 {
					x.Points = append(x.Points[:i:i], x.Points[i+1:]...)
					dicts = append(dicts[:i:i], dicts[i+1:]...)
				} else {
					x.Points = append(x.Points[:i+1:i+1], x.Points[i:]...)
					dicts = append(dicts[:i+1:i+1], dicts[i:]...)
				}
			}
			changed = true
		}
		if err := x.Validate(int64(len(fx.z))); err != nil {
			return
		}
		stop := watchdog("RestartReader", fuzzRestartHang)
		defer stop()
		r := compress.NewRestartReader(bytes.NewReader(fx.z), x, func(i int) ([]byte, error) {
			d := dicts[i]
			p := x.Points[i]
			if int64(len(d)) != p.Dict {
				// The stream's own bytes before it, if the table says
				// another length (as a blob of that length would).
				if p.U <= int64(len(fx.data)) && p.Dict <= p.U {
					return fx.data[p.U-p.Dict : p.U], nil
				}
				return make([]byte, min(p.Dict, 1<<20)), nil
			}
			return d, nil
		})
		defer r.Close()
		check := func(at int64, size int) {
			buf := make([]byte, size)
			k, err := r.ReadAt(buf, at)
			if k < 0 || k > size || err == nil && k != size {
				t.Errorf("read of %d at %d: %d, %v", size, at, k, err)
			}
			if !changed && at >= 0 && at < int64(len(fx.data)) {
				w := fx.data[at:min(at+int64(size), int64(len(fx.data)))]
				if !bytes.Equal(buf[:k], w[:min(k, len(w))]) || k != len(w) {
					t.Errorf("unchanged table: read of %d at %d: %d bytes, %v, differ", size, at, k, err)
				}
			}
		}
		check(off, int(n%(3<<20)))
		// Each span's start and end, and its first chunk's end, in
		// parallel: a span read twice decodes once.
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Go(func() {
				for i, p := range x.Points {
					if i%2 != g && i != 0 {
						continue
					}
					check(p.U, 4096)
					end := x.Size
					if i+1 < len(x.Points) {
						end = x.Points[i+1].U
					}
					check(min(p.U+1<<20-10, end-10), 20)
					if end-p.U <= 4<<20 {
						check(end-100, 100)
					}
				}
			})
		}
		wg.Wait()
	})
}

// TestRestartsAfterIncompressible: a stream as vzdump writes it (zstd -T1:
// one job here) with a stretch of incompressible data or zeros (raw or RLE
// blocks) longer than a candidate's test (1 MiB) has its points: a
// candidate in the stretch passes its test without decoding a block that
// uses the state of before it, and the blocks after the stretch, which do
// (tables, repeat offsets), then fail the decode of its span and with it
// BuildRestarts ("decode otherwise than the stream: not a restart point").
func TestRestartsAfterIncompressible(t *testing.T) {
	// (Was a bug: a candidate in the stretch passed its 1 MiB test.)
	text := testutil.GenDisk(5, 6<<20, "text")
	for name, stretch := range map[string][]byte{
		"random": testutil.GenDisk(9, 3<<19, "data"),
		"zeros":  make([]byte, 1<<20),
	} {
		data := append(append(append([]byte(nil), text[:3<<19]...), stretch...), text[1<<20:4<<20]...)
		z := fuzzZstdCLI(t, data, "-T1")
		if z == nil {
			t.Skip("no zstd command")
		}
		var dicts [][]byte
		x, err := compress.BuildRestarts(t.Context(), bytes.NewReader(z), int64(len(z)), compress.RestartOptions{Every: 1 << 20},
			func(p compress.Restart, dict []byte) error {
				dicts = append(dicts, bytes.Clone(dict))
				return nil
			})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := compress.NewRestartReader(bytes.NewReader(z), x, func(i int) ([]byte, error) { return dicts[i], nil })
		got, err := io.ReadAll(io.NewSectionReader(r, 0, x.Size))
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: read through %d points: %v, equal %v", name, len(x.Points), err, bytes.Equal(got, data))
		}
	}
}

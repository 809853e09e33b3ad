package compress_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
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
	// The table says frame 0 holds one byte less than it does.
	b := patch(func(b []byte) { le.PutUint32(b[entries+4:], 4999) })
	s, err := compress.OpenSeekable(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "frame 0 holds more than the 4999 bytes the seek table says") {
		t.Errorf("lying entry: %v", err)
	}
	// The table says frame 0 holds one byte more than it does.
	b = patch(func(b []byte) { le.PutUint32(b[entries+4:], 5001) })
	s, err = compress.OpenSeekable(bytes.NewReader(b), int64(len(b)))
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

// rawSeekable writes parts as one frame each, whatever their size (which
// SeekableWriter does not), then the seek table.
func rawSeekable(t testing.TB, parts ...[]byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	var out, table []byte
	for _, p := range parts {
		n := len(out)
		out = enc.EncodeAll(p, out)
		table = binary.LittleEndian.AppendUint32(table, uint32(len(out)-n))
		table = binary.LittleEndian.AppendUint32(table, uint32(len(p)))
	}
	return appendTable(out, table, len(parts))
}

// appendTable appends the skippable frame of a seek table of the given
// entries (8 bytes each, no checksums).
func appendTable(out, entries []byte, frames int) []byte {
	le := binary.LittleEndian
	out = le.AppendUint32(out, 0x184D2A5E)
	out = le.AppendUint32(out, uint32(len(entries)+9))
	out = append(out, entries...)
	out = le.AppendUint32(out, uint32(frames))
	out = append(out, 0)
	return le.AppendUint32(out, 0x8F92EAB1)
}

// TestSeekableLargeFrames: a frame that holds more than MaxSeekFrame, or
// takes more compressed bytes than zstd ever needs for what it holds, is
// refused at open with an error that is ErrNotSeekable (the file is then
// read as a stream, which works); a frame of MaxSeekFrame is read at
// random; and SeekableWriter cuts a large write into frames of at most
// half of MaxSeekFrame.
func TestSeekableLargeFrames(t *testing.T) {
	block := testutil.GenDisk(9, 4096, "data")
	big := bytes.Repeat(block, (9<<20)/4096)
	for _, tc := range []struct {
		name string
		z    []byte
		want []byte
	}{
		{"larger than MaxSeekFrame", rawSeekable(t, block, big[:compress.MaxSeekFrame+1]), append(bytes.Clone(block), big[:compress.MaxSeekFrame+1]...)},
		{"padded", func() []byte {
			// A frame followed by a skippable frame of padding, under one
			// entry: valid zstd, but 64 KiB of input for 4 KiB.
			f, _ := zstd.NewWriter(nil)
			z := f.EncodeAll(block, nil)
			z = binary.LittleEndian.AppendUint32(z, 0x184D2A50)
			z = binary.LittleEndian.AppendUint32(z, 64<<10)
			z = append(z, make([]byte, 64<<10)...)
			e := binary.LittleEndian.AppendUint32(nil, uint32(len(z)))
			return appendTable(z, binary.LittleEndian.AppendUint32(e, 4096), 1)
		}(), block},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compress.OpenSeekable(bytes.NewReader(tc.z), int64(len(tc.z)))
			if !errors.Is(err, compress.ErrNotSeekable) || !strings.Contains(err.Error(), "read as a stream") {
				t.Fatalf("OpenSeekable: %v, want an error that is ErrNotSeekable", err)
			}
			got, _, err := readAll(t, tc.z)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("as a stream: %d bytes, %v", len(got), err)
			}
		})
	}
	// A frame of exactly MaxSeekFrame is read at random.
	z := rawSeekable(t, big[:compress.MaxSeekFrame], block)
	s, err := compress.OpenSeekable(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8192)
	if n, err := s.ReadAt(p, compress.MaxSeekFrame-4096); n != len(p) || err != nil || !bytes.Equal(p, append(bytes.Clone(block), block...)) {
		t.Fatalf("ReadAt across the large frame's end: %d, %v", n, err)
	}
	s.Close()
	// The writer's frames stay at half the bound.
	var out bytes.Buffer
	w, err := compress.NewSeekableWriter(&out, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write(big[:9<<20]); n != 9<<20 || err != nil {
		t.Fatalf("Write(9 MiB) = %d, %v", n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = compress.OpenSeekable(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([]byte, 9<<20)
	if s.Frames() != 3 || s.Size() != 9<<20 {
		t.Fatalf("a write of 9 MiB made %d frames of %d bytes, want 3 of at most 4 MiB", s.Frames(), s.Size())
	}
	if n, err := s.ReadAt(got, 0); n != len(got) || err != nil || !bytes.Equal(got, big[:9<<20]) {
		t.Fatalf("read back %d, %v", n, err)
	}
}

// TestSeekableParallelMemory: many ReadAt calls in parallel, each in its
// own frame of MaxSeekFrame, all get their bytes, and the decoded frames
// alive at once stay within the reader's bounds (32 MiB kept, 40 MiB
// being decoded), not one frame per caller.
func TestSeekableParallelMemory(t *testing.T) {
	const frames = 24
	block := testutil.GenDisk(1, 4096, "data")
	one := rawSeekable(t, bytes.Repeat(block, compress.MaxSeekFrame/4096))
	frame := one[:len(one)-9-16] // the same frame, many times
	var z, table []byte
	for range frames {
		z = append(z, frame...)
		table = binary.LittleEndian.AppendUint32(table, uint32(len(frame)))
		table = binary.LittleEndian.AppendUint32(table, compress.MaxSeekFrame)
	}
	z = appendTable(z, table, frames)
	s, err := compress.OpenSeekable(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtime.MemStats
		top := uint64(0)
		for {
			select {
			case <-stop:
				peak <- top
				return
			case <-time.After(200 * time.Microsecond):
			}
			runtime.ReadMemStats(&m)
			top = max(top, m.HeapAlloc)
		}
	}()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, frames)
	for f := range frames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			off := int64(f)*compress.MaxSeekFrame + int64(f)*4096
			p := make([]byte, 4096)
			if n, err := s.ReadAt(p, off); n != len(p) || err != nil || !bytes.Equal(p, block) {
				errs <- fmt.Errorf("frame %d: ReadAt(4096 at %d) = %d, %v", f, off, n, err)
			}
		}()
	}
	close(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a budget not given back
		t.Fatal("ReadAt calls in parallel still wait after 30 s")
	}
	close(stop)
	top := <-peak
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	grew := int64(top) - int64(base.HeapAlloc)
	t.Logf("%d callers in %d frames of %d MiB: heap peaked %d MiB over the start", frames, frames, compress.MaxSeekFrame>>20, grew>>20)
	if grew > 110<<20 {
		t.Errorf("heap grew by %d MiB reading in parallel; the reader keeps at most 72 MiB", grew>>20)
	}
}

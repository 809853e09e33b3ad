package compress

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// seekableFile writes parts as frames of a seekable file.
func seekableFile(t testing.TB, parts ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewSeekableWriter(&out, 1)
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

// withTable appends a seek table of the given (compressed, decompressed)
// sizes to frames, with checksums (zeros: not checked) if sums.
func withTable(frames []byte, sums bool, sizes ...uint32) []byte {
	le := binary.LittleEndian
	entry := 8
	if sums {
		entry = 12
	}
	n := len(sizes) / 2
	out := le.AppendUint32(bytes.Clone(frames), seekTableMagic)
	out = le.AppendUint32(out, uint32(n*entry+seekFooterSize))
	for i := 0; i < len(sizes); i += 2 {
		out = le.AppendUint32(out, sizes[i])
		out = le.AppendUint32(out, sizes[i+1])
		if sums {
			out = le.AppendUint32(out, 0)
		}
	}
	out = le.AppendUint32(out, uint32(n))
	desc := byte(0)
	if sums {
		desc = seekChecksumFlag
	}
	out = append(out, desc)
	return le.AppendUint32(out, seekableMagic)
}

// fixTable makes a seek table's compressed sizes add up to where it
// starts, by changing the last frame's, so that frames cut or grown by the
// fuzzer reach the decoder rather than the table's checks.
func fixTable(z []byte) []byte {
	le := binary.LittleEndian
	if len(z) < seekFooterSize+8 || le.Uint32(z[len(z)-4:]) != seekableMagic {
		return z
	}
	frames := int(le.Uint32(z[len(z)-seekFooterSize:]))
	entry := 8
	if z[len(z)-5]&seekChecksumFlag != 0 {
		entry = 12
	}
	start := len(z) - seekFooterSize - frames*entry - 8
	if frames == 0 || frames > 1<<16 || start < 0 {
		return z
	}
	z = bytes.Clone(z)
	sum := 0
	for i := range frames - 1 {
		sum += int(le.Uint32(z[start+8+i*entry:]))
	}
	if last := start - sum; last > 0 {
		le.PutUint32(z[start+8+(frames-1)*entry:], uint32(last))
	}
	return z
}

// refFrame decodes one frame's compressed bytes with the stream decoder
// (not DecodeAll, which Seekable uses), at most max+1 bytes.
func refFrame(src []byte, max int64) ([]byte, error) {
	d, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxSeekFrame), zstd.WithDecoderMaxMemory(MaxSeekFrame))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(io.LimitReader(d, max+1))
}

// FuzzSeekable: whatever the file (hostile seek tables, frames whose
// declared and real sizes differ, huge declared content sizes, truncated
// frames), OpenSeekable and ReadAt of any range never panic, hang or
// allocate beyond their bounds, and a read returns either an error or the
// bytes zstd's stream decoder gives for the frames it covers.
//
//	go test -run '^$' -fuzz FuzzSeekable -fuzztime 5m ./format/compress/
func FuzzSeekable(f *testing.F) {
	text := bytes.Repeat([]byte("seekable frames of a vma archive "), 400)
	good := seekableFile(f, text[:512], text, text[:5000], text[100:9000])
	f.Add(good, false, uint32(400), uint16(9000))
	f.Add(good[:len(good)-30], true, uint32(0), uint16(600))
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	frame := enc.EncodeAll(text[:3000], nil)
	// A table that lies about what the frame holds, both ways.
	f.Add(withTable(frame, false, uint32(len(frame)), 2999), false, uint32(10), uint16(3000))
	f.Add(withTable(frame, false, uint32(len(frame)), 3001), false, uint32(2990), uint16(20))
	// Entries with checksums; an empty frame.
	f.Add(withTable(append(bytes.Clone(frame), enc.EncodeAll(nil, nil)...), true, uint32(len(frame)), 3000, uint32(len(enc.EncodeAll(nil, nil))), 0), false, uint32(0), uint16(4000))
	// A frame whose header declares 2^40 bytes (its content size field
	// rewritten), and one cut short.
	h := frame[4]
	keep := 5 + boolInt(h&0x20 == 0) + []int{0, 1, 2, 4}[h&3] // magic, descriptor, window, dictionary
	huge := append(binary.LittleEndian.AppendUint64(bytes.Clone(frame[:keep]), 1<<40), frame[keep+fcsBytes(h):]...)
	huge[4] |= 0xc0 // 8 bytes of content size
	f.Add(withTable(huge, false, uint32(len(huge)), 3000), true, uint32(0), uint16(100))
	f.Add(withTable(frame[:len(frame)/2], false, uint32(len(frame)/2), 3000), true, uint32(1000), uint16(100))
	// A frame followed by a skippable frame of padding under one entry.
	padded := binary.LittleEndian.AppendUint32(bytes.Clone(frame), 0x184D2A50)
	padded = append(binary.LittleEndian.AppendUint32(padded, 100), make([]byte, 100)...)
	f.Add(withTable(padded, false, uint32(len(padded)), 3000), false, uint32(5), uint16(200))
	// A frame that claims the most the reader takes.
	f.Add(withTable(frame, false, uint32(len(frame)), MaxSeekFrame), false, uint32(MaxSeekFrame-10), uint16(100))

	f.Fuzz(func(t *testing.T, z []byte, fix bool, off uint32, n uint16) {
		if fix {
			z = fixTable(z)
		}
		var m0, m1, m2 runtime.MemStats
		runtime.ReadMemStats(&m0)
		s, err := OpenSeekable(bytes.NewReader(z), int64(len(z)))
		runtime.ReadMemStats(&m1)
		// The table: 16 bytes a frame (8 in the file), read in pieces;
		// the decoders.
		if a := m1.TotalAlloc - m0.TotalAlloc; a > 2*uint64(len(z))+2<<20 {
			t.Fatalf("OpenSeekable of %d bytes allocated %d KiB (%v)", len(z), a>>10, err)
		}
		if err != nil {
			var ce *Error
			if !errors.Is(err, ErrNotSeekable) && !errors.As(err, &ce) {
				t.Fatalf("OpenSeekable: %T %v", err, err)
			}
			return
		}
		defer s.Close()
		// What each frame holds, by the reference; nil if it does not hold
		// what its entry says.
		ref := func(i int) []byte {
			want := s.dec[i+1] - s.dec[i]
			b, err := refFrame(z[s.comp[i]:s.comp[i+1]], want)
			if err != nil || int64(len(b)) != want {
				return nil
			}
			return b
		}
		// Every frame read whole (the first 16), then one range.
		wants := make([][]byte, min(s.Frames(), 16))
		for i := range wants {
			wants[i] = ref(i)
		}
		weight := uint64(0)
		runtime.ReadMemStats(&m1)
		for i, want := range wants {
			size := s.dec[i+1] - s.dec[i]
			weight += uint64(frameWeight(s.comp[i+1]-s.comp[i], size)) + 64<<10
			got := make([]byte, size)
			k, err := s.ReadAt(got, s.dec[i])
			switch {
			case size == 0: // nothing to read: the frame is never decoded
			case want == nil && err == nil:
				t.Fatalf("frame %d (%d bytes): read without error, the reference decoder fails", i, size)
			case want != nil && (err != nil && err != io.EOF || k != len(got)):
				t.Fatalf("frame %d (%d bytes): %d, %v; the reference decodes it", i, size, k, err)
			case want != nil && !bytes.Equal(got, want):
				t.Fatalf("frame %d: bytes differ from the reference", i)
			}
		}
		runtime.ReadMemStats(&m2)
		if a := m2.TotalAlloc - m1.TotalAlloc; a > weight+1<<20 {
			t.Fatalf("reading frames allocated %d KiB, their decodes weigh %d KiB", a>>10, weight>>10)
		}
		if s.Size() == 0 {
			return
		}
		at := int64(off) % s.Size()
		p := make([]byte, n)
		k, err := s.ReadAt(p, at)
		if k > len(p) || err == nil && k != len(p) {
			t.Fatalf("ReadAt(%d at %d) = %d, %v", n, at, k, err)
		}
		// The bytes read are the reference's, frame by frame.
		for pos := at; pos < at+int64(k); {
			i := 0
			for s.dec[i+1] <= pos {
				i++
			}
			want := ref(i)
			if want == nil {
				t.Fatalf("ReadAt(%d at %d) read frame %d, which the reference fails", n, at, i)
			}
			end := min(at+int64(k), s.dec[i+1])
			if !bytes.Equal(p[pos-at:end-at], want[pos-s.dec[i]:end-s.dec[i]]) {
				t.Fatalf("ReadAt(%d at %d): frame %d differs from the reference", n, at, i)
			}
			pos = end
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fcsBytes is the size of the content size field of a frame header
// descriptor.
func fcsBytes(h byte) int {
	switch h >> 6 {
	case 0:
		return boolInt(h&0x20 != 0)
	case 1:
		return 2
	case 2:
		return 4
	}
	return 8
}

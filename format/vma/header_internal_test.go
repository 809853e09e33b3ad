package vma

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// walkBlobs is the blob walk done the plain way, on the whole buffer, blob
// by blob: what blobWalker must find, fed in pieces and skipping runs of
// empty blobs.
func walkBlobs(buf []byte, start, end int64, want []int64) map[int64][]byte {
	got := map[int64][]byte{}
	for _, o := range want {
		got[o] = nil
	}
	for next := start + 1; next+2 <= end; {
		s := next
		next = s + 2 + (int64(buf[s]) | int64(buf[s+1])<<8)
		if next > end {
			break
		}
		if _, ok := got[s]; ok {
			got[s] = append(make([]byte, 0, next-s-2), buf[s+2:next]...)
		}
	}
	return got
}

// TestBlobWalker: blob buffers of short blobs among long runs of zero
// bytes (empty blobs), walked in pieces of every size, keep exactly the
// blobs the plain walk keeps: empty blobs that are wanted inside a run (a
// config with no data), none where a wanted offset falls between two
// length fields of a run, and the blob that crosses the end ignored.
func TestBlobWalker(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100 {
		var buf []byte
		var starts []int64 // every blob's start, from the plain walk's view
		start := int64(rng.IntN(5))
		buf = make([]byte, start+1)
		for len(buf) < 20000 {
			if rng.IntN(3) == 0 { // a run of empty blobs, maybe past a block
				n := 2 * (1 + rng.IntN(3000))
				for k := 0; k < n; k += 2 {
					starts = append(starts, int64(len(buf)+k))
				}
				buf = append(buf, make([]byte, n)...)
				continue
			}
			n := rng.IntN(40)
			starts = append(starts, int64(len(buf)))
			buf = append(buf, byte(n), byte(n>>8))
			for range n {
				buf = append(buf, byte(rng.IntN(3))) // zeros among the data
			}
		}
		end := int64(len(buf)) - int64(rng.IntN(30)) // may cut the last blob
		var want []int64
		for range 1 + rng.IntN(12) {
			switch rng.IntN(3) {
			case 0:
				want = append(want, starts[rng.IntN(len(starts))])
			case 1:
				want = append(want, starts[rng.IntN(len(starts))]+1) // mid-field
			default:
				want = append(want, start+int64(rng.IntN(len(buf)+10)))
			}
		}
		w := &blobWalker{want: map[int64][]byte{}, start: start, end: end, next: start + 1}
		for _, o := range want {
			w.want[o] = nil
		}
		for pos := 0; pos < len(buf); {
			n := min(1+rng.IntN([]int{1, 3, 100, 5000, 30000}[i%5]), len(buf)-pos)
			w.feed(int64(pos), buf[pos:pos+n])
			pos += n
		}
		ref := walkBlobs(buf, start, end, want)
		for _, o := range want {
			if g, r := w.want[o], ref[o]; (g == nil) != (r == nil) || !bytes.Equal(g, r) {
				t.Fatalf("buffer %d, blob at %d: walker kept %v (nil %v), the plain walk %v (nil %v)", i, o, g, g == nil, r, r == nil)
			}
		}
	}
}

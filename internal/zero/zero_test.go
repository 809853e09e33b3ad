package zero

import (
	"bytes"
	"fmt"
	"testing"
)

// TestIsZero: any non-zero byte, in any 4 KiB block or the tail, is found.
func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 3*4096 + 17} {
		b := make([]byte, n)
		if !IsZero(b) {
			t.Errorf("%d zero bytes: not zero", n)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if n == 0 {
				continue
			}
			b[i] = 1
			if IsZero(b) {
				t.Errorf("%d bytes, byte %d set: zero", n, i)
			}
			b[i] = 0
		}
	}
}

// rec records the WriteAt calls.
type rec struct{ calls []string }

func (r *rec) WriteAt(p []byte, off int64) (int, error) {
	r.calls = append(r.calls, fmt.Sprintf("%d+%d", off, len(p)))
	return len(p), nil
}

// TestWriteNonZero: runs of non-zero 4 KiB blocks, on the grid of the
// writer's offsets, are written in one call each; zero blocks are not.
func TestWriteNonZero(t *testing.T) {
	p := make([]byte, 5*4096)
	p[100] = 1         // block 0 of p, which starts 1000 bytes into the grid's block
	p[4096*2+5000] = 1 // spans into the next
	p[len(p)-1] = 1    // the tail
	var r rec
	if err := WriteNonZero(&r, p, 1000); err != nil {
		t.Fatal(err)
	}
	// Grid blocks: [1000,4096) is p[0:3096]; then 4096-byte blocks.
	got := fmt.Sprint(r.calls)
	want := "[1000+3096 12288+4096 20480+1000]"
	if got != want {
		t.Errorf("writes %s, want %s", got, want)
	}
	if err := WriteNonZero(&r, bytes.Repeat([]byte{0}, 8192), 0); err != nil || len(r.calls) != 3 {
		t.Errorf("zeros written: %v", r.calls)
	}
}

package qcow2

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriterBoundedInOrder: with data arriving in order, an L2 table is
// written as soon as its range is complete, so at most two are held at
// any time (one being filled, and one finished by the same write), while
// with the first half of every range written before any second half they
// are all held.
func TestWriterBoundedInOrder(t *testing.T) {
	// 4 KiB clusters: an L2 table maps 2 MiB; 64 MiB need 32 tables.
	const size, cs = 64 << 20, 4096
	data := make([]byte, 256<<10)
	for i := range data {
		data[i] = byte(i%251) | 1
	}
	for _, order := range []string{"in order", "halves"} {
		f, err := os.Create(filepath.Join(t.TempDir(), "x.qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(f, size, WriterOptions{ClusterSize: cs})
		if err != nil {
			t.Fatal(err)
		}
		most := 0
		for k := range int64(size / len(data)) {
			off := k * int64(len(data))
			if order == "halves" { // all ranges' first 1 MiB, then their second
				const rng, per = 2 << 20, 4 // 4 writes of 256 KiB a half-range
				n := int64(size / rng * per)
				half, r := k/n, k%n
				off = r/per*rng + half*rng/2 + r%per*int64(len(data))
			}
			if _, err := w.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
			most = max(most, len(w.l2))
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		switch {
		case order == "in order" && most > 2:
			t.Errorf("in order: %d L2 tables held at once", most)
		case order == "halves" && most < 32:
			t.Errorf("halves: only %d L2 tables held; the test does not test", most)
		}
	}
}

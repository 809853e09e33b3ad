package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// badMap is a source whose zero map fails.
type badMap struct{ *memSource }

func (badMap) Region(int64, int64) (format.Region, error) {
	return format.Region{}, errors.New("no map")
}

// firstData is the start of the first sector of b that is not zero.
func firstData(b []byte) int64 {
	i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 })
	return int64(i) &^ 511
}

// badRead is a source that cannot be read.
type badRead struct{ *memSource }

func (badRead) ReadAt([]byte, int64) (int, error) { return 0, errors.New("EIO") }

// TestCompare: the first difference is reported as qemu-img compare
// reports it (the start of its sector; where the smaller disk ends, the
// start of the larger one's sector counted from there; the end of a raw
// file that ends inside the differing sector), zeros past a disk's end
// match zeros, zero ranges of both are not read, and a failing map is a
// MapError.
func TestCompare(t *testing.T) {
	disk := testutil.GenDisk(1, 2<<20, "mixed")
	changed := bytes.Clone(disk)
	changed[1234567] ^= 0x40
	longer := append(bytes.Clone(disk), make([]byte, 4096)...)
	odd := bytes.Clone(disk[:1000]) // ends inside its second sector
	oddTail := append(bytes.Clone(odd), make([]byte, 24)...)
	oddTail[1010] = 7 // past odd's end, within its last sector
	oddOwn := append(bytes.Clone(disk[:999]), make([]byte, 25)...)
	oddOwn[999] = ^disk[999] // the raw file's own last byte
	small, big := make([]byte, 1000), make([]byte, 2000)
	big[1600] = 1
	mem := func(b []byte) pipeline.Compared {
		return pipeline.Compared{Source: &memSource{b: b}, End: int64(len(b))}
	}
	padded := func(b []byte) pipeline.Compared {
		return pipeline.Compared{Source: format.Pad(&memSource{b: b}, (int64(len(b))+511)&^511), End: int64(len(b))}
	}
	for _, tc := range []struct {
		name string
		a, b pipeline.Compared
		want int64
	}{
		{"identical", mem(disk), pipeline.Compared{Source: holeySource{&memSource{b: disk}}, End: int64(len(disk))}, -1},
		{"changed", mem(disk), mem(changed), 1234567 &^ 511},
		{"one disk's holes, the other's data", pipeline.Compared{Source: holeySource{&memSource{b: make([]byte, 2<<20)}}, End: 2 << 20}, mem(disk), firstData(disk)},
		{"zeros past the end", mem(disk), mem(longer), -1},
		{"the larger's extra part, from the smaller's end", mem(small), mem(big), 1000 + 512},
		{"a raw file that ends inside the sector", padded(odd), mem(oddTail), 1000},
		{"the raw file's own bytes differ", padded(odd), mem(oddOwn), 512},
	} {
		for _, w := range []int{1, 4} {
			at, err := pipeline.Compare(context.Background(), tc.a, tc.b, pipeline.Options{Workers: w, ChunkSize: 64 << 10})
			if err != nil || at != tc.want {
				t.Errorf("%s, %d workers: %d, %v; want %d", tc.name, w, at, err, tc.want)
			}
		}
	}
	// Zero ranges of both are not read.
	zeros := make([]byte, 8<<20)
	za, zb := &memSource{b: zeros}, &memSource{b: zeros}
	if at, err := pipeline.Compare(context.Background(), pipeline.Compared{Source: holeySource{za}, End: 8 << 20}, pipeline.Compared{Source: holeySource{zb}, End: 8 << 20}, pipeline.Options{}); at != -1 || err != nil || za.reads.Load()+zb.reads.Load() != 0 {
		t.Errorf("zero disks: %d, %v, %d bytes read", at, err, za.reads.Load()+zb.reads.Load())
	}
	_, err := pipeline.Compare(context.Background(), mem(disk), pipeline.Compared{Source: badMap{&memSource{b: disk}}, End: 2 << 20}, pipeline.Options{})
	if !errors.As(err, new(pipeline.MapError)) || err.Error() != "no map" {
		t.Errorf("a failing map: %v, want a MapError", err)
	}
	_, err = pipeline.Compare(context.Background(), mem(disk), pipeline.Compared{Source: badRead{&memSource{b: disk}}, End: 2 << 20}, pipeline.Options{})
	if err == nil || errors.As(err, new(pipeline.MapError)) {
		t.Errorf("a failing read: %v, want an error that is not a MapError", err)
	}
}

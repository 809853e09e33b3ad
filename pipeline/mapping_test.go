package pipeline_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/pipeline"
)

// placed is a source with its own Mapper: 4 KiB ranges of data at
// offsets 1 MiB on, contiguous except for a jump at 16 KiB.
type placed struct{ *memSource }

func (placed) Mapping(start, length int64) (format.Mapping, error) {
	off := 1<<20 + start
	if start >= 16<<10 {
		off += 1 << 20
	}
	return format.Mapping{Start: start, Length: min(length, 4096), Present: true, Data: true, Offset: off}, nil
}

func walk(t *testing.T, src format.Source, size int64, o pipeline.MapOptions) []format.Mapping {
	t.Helper()
	var got []format.Mapping
	err := pipeline.Map(context.Background(), src, size, o, func(m format.Mapping, last bool) error {
		got = append(got, m)
		if last != (m.Start+m.Length >= o.End) {
			t.Errorf("entry %+v: last %v", m, last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestMap: entries are merged as qemu-img map merges them (same status,
// contiguous places in the file), a source without a Mapper is mapped
// from its zeros, a padded tail is zero at its own offset, and the walk
// keeps within its bounds.
func TestMap(t *testing.T) {
	b := make([]byte, 256<<10)
	b[5], b[196<<10] = 1, 1
	holey := holeySource{&memSource{b: b}}
	want := []format.Mapping{
		{Start: 0, Length: 64 << 10, Present: true, Data: true, Offset: -1},
		{Start: 64 << 10, Length: 128 << 10, Present: true, Zero: true, Offset: -1},
		{Start: 192 << 10, Length: 64 << 10, Present: true, Data: true, Offset: -1},
	}
	if got := walk(t, holey, 256<<10, pipeline.MapOptions{End: 256 << 10}); !reflect.DeepEqual(got, want) {
		t.Errorf("archive-like map:\n%+v\nwant\n%+v", got, want)
	}
	// Bounds.
	want = []format.Mapping{{Start: 100 << 10, Length: 92 << 10, Present: true, Zero: true, Offset: -1}, {Start: 192 << 10, Length: 8 << 10, Present: true, Data: true, Offset: -1}}
	if got := walk(t, holey, 256<<10, pipeline.MapOptions{Start: 100 << 10, End: 200 << 10}); !reflect.DeepEqual(got, want) {
		t.Errorf("bounded map:\n%+v\nwant\n%+v", got, want)
	}
	// A raw file of 1000 bytes, seen as 1024.
	want = []format.Mapping{{Start: 0, Length: 1000, Present: true, Data: true, Offset: -1}, {Start: 1000, Length: 24, Present: true, Zero: true, Offset: 1000}}
	if got := walk(t, &memSource{b: b[:1000]}, 1024, pipeline.MapOptions{End: 1024}); !reflect.DeepEqual(got, want) {
		t.Errorf("padded map:\n%+v\nwant\n%+v", got, want)
	}
	// Places in the file merge while contiguous.
	want = []format.Mapping{{Start: 0, Length: 16 << 10, Present: true, Data: true, Offset: 1 << 20}, {Start: 16 << 10, Length: 16 << 10, Present: true, Data: true, Offset: 2<<20 + 16<<10}}
	if got := walk(t, placed{&memSource{b: b[:32<<10]}}, 32<<10, pipeline.MapOptions{End: 32 << 10}); !reflect.DeepEqual(got, want) {
		t.Errorf("placed map:\n%+v\nwant\n%+v", got, want)
	}
}

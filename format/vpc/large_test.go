package vpc_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vpc"
	"github.com/vmaconv/vmaconv/pipeline"
)

// sparseDisk is a disk of zeros but for a few bytes at a few offsets,
// with a zero map: a disk of any size at the cost of its data.
type sparseDisk struct {
	size int64
	data map[int64]string // offset -> bytes there
}

func (d sparseDisk) Size() int64  { return d.size }
func (d sparseDisk) Close() error { return nil }

func (d sparseDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for at, s := range d.data {
		for i := range int64(len(s)) {
			if k := at + i - off; k >= 0 && k < int64(len(p)) {
				p[k] = s[i]
			}
		}
	}
	return len(p), nil
}

// Region: 64 KiB around each piece of data is data, the rest zero.
func (d sparseDisk) Region(start, length int64) (format.Region, error) {
	end := start + length
	for at := range d.data {
		lo, hi := at&^(64<<10-1), (at+64<<10)&^(64<<10-1)
		switch {
		case lo <= start && start < hi:
			return format.Region{Start: start, Length: min(hi, end) - start}, nil
		case start < lo && lo < end:
			end = lo
		}
	}
	return format.Region{Start: start, Length: end - start, Zero: true}, nil
}

// allocated returns the bytes the process allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestLargeDisk: a dynamic disk of 2040 GiB, the largest, holding a few
// bytes, is written and read in bounded memory (its BAT, 4 MiB, and the
// pipeline's buffers), takes two blocks of the file, and its zero map
// costs a few steps.
func TestLargeDisk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "large.vhd")
	disk := sparseDisk{size: vpc.MaxSize, data: map[int64]string{1<<40 + 12345: "hello, VHD", vpc.MaxSize - 3: "end"}}
	var err error
	written := allocated(func() {
		var sink format.Sink
		if sink, err = vpc.Format.Create(format.Dest{Path: path}, []format.Device{{Size: disk.size}}, format.CreateOptions{}); err != nil {
			return
		}
		if err = pipeline.Copy(context.Background(), sink.Disk(0), disk, pipeline.Options{Workers: 2, ChunkSize: 64 << 10}); err != nil {
			sink.Abort()
			return
		}
		err = sink.Commit()
	})
	if err != nil {
		t.Fatal(err)
	}
	if written > 24<<20 {
		t.Errorf("writing allocated %d MiB", written>>20)
	}
	fi, err := os.Stat(path)
	const bat = 0xff000000 / 4096 * 4 // entries of 2 MiB blocks
	if err != nil || fi.Size() != 512+1024+bat+2*(512+2<<20)+512 {
		t.Fatalf("%v: %d bytes, want two blocks", err, fi.Size())
	}
	var src *vpc.Source
	steps := 0
	read := allocated(func() {
		if src, err = open(t, path, format.OpenOptions{}); err != nil {
			return
		}
		for pos := int64(0); pos < src.Size(); steps++ {
			var r format.Region
			if r, err = src.Region(pos, src.Size()-pos); err != nil {
				return
			}
			pos += r.Length
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	t.Logf("2040 GiB: writing allocated %.1f MiB, opening and mapping %.1f MiB in %d steps", float64(written)/(1<<20), float64(read)/(1<<20), steps)
	if read > 16<<20 || steps > 16 {
		t.Errorf("opening and mapping: %d MiB allocated, %d steps", read>>20, steps)
	}
	for at, s := range disk.data {
		b := make([]byte, len(s))
		if _, err := src.ReadAt(b, at); err != nil || string(b) != s {
			t.Errorf("at %d: %q, %v", at, b, err)
		}
	}
}

package vmdk_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// benchDisk is 64 MiB of half data (mixed: zero, sparse and random
// blocks) and half holes, as the comparison's disks.
func benchDisk() []byte {
	d := make([]byte, 64<<20)
	copy(d, testutil.GenDisk(1, 32<<20, "mixed"))
	return d
}

// BenchmarkWrite: the disk written by the pipeline into each subformat,
// to a file (streamOptimized also to a stream, as into an OVA);
// SetBytes is the disk's size.
func BenchmarkWrite(b *testing.B) {
	data := benchDisk()
	for _, c := range []struct{ name, opts string }{
		{"monolithicSparse", "subformat=monolithicSparse"},
		{"streamOptimized", "subformat=streamOptimized"},
		{"streamOptimized-pipe", "subformat=streamOptimized"},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			v, err := format.ParseOptions(vmdk.Format, c.opts)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				d := format.Dest{Path: filepath.Join(dir, "b.vmdk"), Overwrite: true, NoSync: true}
				if c.name == "streamOptimized-pipe" {
					d.Stream = io.Discard
				}
				sink, err := vmdk.Format.Create(d, []format.Device{{Size: int64(len(data))}}, format.CreateOptions{Options: v})
				if err != nil {
					b.Fatal(err)
				}
				if err := pipeline.Copy(context.Background(), sink.Disk(0), mem(data), pipeline.Options{}); err != nil {
					b.Fatal(err)
				}
				if err := sink.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRead: the disk read by the pipeline's readers (its zero map
// first) from each subformat; SetBytes is the disk's size.
func BenchmarkRead(b *testing.B) {
	data := benchDisk()
	dir := b.TempDir()
	for _, sub := range []string{vmdk.MonolithicSparse, vmdk.StreamOptimized} {
		p := filepath.Join(dir, sub+".vmdk")
		create(b, p, nil, data, "subformat="+sub, "seq")
		b.Run(sub, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				src, err := vmdk.Open(f, format.OpenOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := pipeline.Copy(context.Background(), discard{}, src, pipeline.Options{}); err != nil {
					b.Fatal(err)
				}
				src.Close()
			}
		})
	}
}

// discard is a disk writer that keeps nothing, written from any number
// of goroutines.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discard) ZeroAt(int64, int64) error              { return nil }
func (discard) OrderIndependent()                      {}

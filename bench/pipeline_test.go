package bench

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/pipeline"
)

const e2eDisk = 256 << 20

var (
	e2eOnce sync.Once
	e2eDir  string
	e2eErr  error
)

// e2eFiles writes, once per process, a 256 MiB raw disk (half its 4 KiB
// blocks zero, zeros written out as a used VM disk has them) and its
// archive into a temporary directory.
func e2eFiles(b *testing.B) (diskPath, archivePath string) {
	e2eOnce.Do(func() {
		e2eDir, e2eErr = os.MkdirTemp("", "vmaconv-bench-")
		if e2eErr != nil {
			return
		}
		data := disk(e2eDisk)
		if e2eErr = os.WriteFile(filepath.Join(e2eDir, "disk.raw"), data, 0o644); e2eErr != nil {
			return
		}
		f, err := os.Create(filepath.Join(e2eDir, "disk.vma"))
		if err != nil {
			e2eErr = err
			return
		}
		pack(b, f, data)
		e2eErr = f.Close()
	})
	if e2eErr != nil {
		b.Fatal(e2eErr)
	}
	return filepath.Join(e2eDir, "disk.raw"), filepath.Join(e2eDir, "disk.vma")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if e2eDir != "" {
		os.RemoveAll(e2eDir)
	}
	os.Exit(code)
}

var workerCases = []struct {
	name    string
	workers int
}{{"m1", 1}, {"default", 0}}

// BenchmarkCreate: a raw file through pipeline.Pack (parallel readers,
// zero detection, the extent packer) into an archive file.
func BenchmarkCreate(b *testing.B) {
	diskPath, _ := e2eFiles(b)
	for _, wc := range workerCases {
		b.Run(wc.name, func(b *testing.B) {
			b.SetBytes(e2eDisk)
			b.ReportAllocs()
			out := filepath.Join(b.TempDir(), "out.vma")
			for b.Loop() {
				f, _ := os.Open(diskPath)
				src, err := raw.Open(f)
				if err != nil {
					b.Fatal(err)
				}
				os.Remove(out) // truncating it would make ext4 flush it on close
				dst, _ := os.Create(out)
				w := vma.NewWriter(dst)
				id, _ := w.AddDevice("drive-scsi0", src.Size())
				if err := pipeline.Pack(context.Background(), w, []pipeline.Disk{{ID: id, Src: src}}, pipeline.Options{Workers: wc.workers}); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				dst.Close()
				src.Close()
			}
		})
	}
}

// BenchmarkRestore: an archive file through pipeline.Unpack into a sparse
// raw file (device bytes per second).
func BenchmarkRestore(b *testing.B) {
	_, arcPath := e2eFiles(b)
	for _, wc := range workerCases {
		b.Run(wc.name, func(b *testing.B) {
			b.SetBytes(e2eDisk)
			b.ReportAllocs()
			out := filepath.Join(b.TempDir(), "out.raw")
			for b.Loop() {
				f, _ := os.Open(arcPath)
				r, err := vma.NewReader(f)
				if err != nil {
					b.Fatal(err)
				}
				os.Remove(out) // truncating it would make ext4 flush it on close
				dst, _ := os.Create(out)
				dst.Truncate(e2eDisk)
				if _, err := pipeline.Unpack(context.Background(), r, map[int]io.WriterAt{1: dst}, pipeline.UnpackOptions{Workers: wc.workers}); err != nil {
					b.Fatal(err)
				}
				dst.Close()
				f.Close()
			}
		})
	}
}

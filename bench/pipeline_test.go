package bench

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/qcow2"
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
// blocks zero, zeros written out as a used VM disk has them), its archive
// and a qcow2 image of it into a temporary directory.
func e2eFiles(b *testing.B) (diskPath, archivePath, qcow2Path string) {
	e2eOnce.Do(func() {
		e2eDir, e2eErr = os.MkdirTemp("", "vmaconv-bench-")
		if e2eErr != nil {
			return
		}
		data := disk(e2eDisk)
		if e2eErr = os.WriteFile(filepath.Join(e2eDir, "disk.raw"), data, 0o644); e2eErr != nil {
			return
		}
		for _, out := range []struct {
			name string
			fm   format.Format
		}{{"disk.vma", vma.Format}, {"disk.qcow2", qcow2.Format}} {
			if e2eErr = convert(filepath.Join(e2eDir, "disk.raw"), out.fm, filepath.Join(e2eDir, out.name), 0, format.CreateOptions{}); e2eErr != nil {
				return
			}
		}
	})
	if e2eErr != nil {
		b.Fatal(e2eErr)
	}
	return filepath.Join(e2eDir, "disk.raw"), filepath.Join(e2eDir, "disk.vma"), filepath.Join(e2eDir, "disk.qcow2")
}

func TestMain(m *testing.M) {
	if action := os.Getenv(filesChildEnv); action != "" {
		os.Exit(filesChild(action, os.Getenv(filesArchiveEnv)))
	}
	if path := os.Getenv(apartServerEnv); path != "" {
		os.Exit(httpServerChild(path))
	}
	code := m.Run()
	for _, d := range []string{e2eDir, sparseDir, remoteDir, filesDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// convert does what vmaconv SRC DST does for a random-access source: open
// it through its driver, create the sink (a temporary file, synced and
// renamed into place at the end, as users get it), copy every disk.
func convert(src string, out format.Format, dst string, workers int, o format.CreateOptions) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	var in format.Format
	switch filepath.Ext(src) {
	case ".vma":
		in = vma.Format
	case ".qcow2":
		in = qcow2.Format
	default:
		in = raw.Format
	}
	img, err := in.Open(f, format.OpenOptions{})
	if err != nil {
		return err
	}
	defer img.Close()
	var devs []format.Device
	for _, d := range img.Disks() {
		name := d.Name
		if out.Multi && name == "" {
			name = "drive-scsi0"
		}
		devs = append(devs, format.Device{Name: name, Size: d.Source.Size()})
	}
	os.Remove(dst)
	sink, err := out.Create(format.Dest{Path: dst}, devs, o)
	if err != nil {
		return err
	}
	defer sink.Abort()
	for i, d := range img.Disks() {
		if err := pipeline.Copy(context.Background(), sink.Disk(i), d.Source, pipeline.Options{Workers: workers}); err != nil {
			return err
		}
	}
	return sink.Commit()
}

var workerCases = []struct {
	name    string
	workers int
}{{"m1", 1}, {"default", 0}}

// BenchmarkConvert: vmaconv SRC DST end to end on files, sync and rename
// included, for the conversions users run (device bytes per second).
func BenchmarkConvert(b *testing.B) {
	rawPath, vmaPath, qcowPath := e2eFiles(b)
	for _, c := range []struct {
		name string
		src  string
		out  format.Format
		o    format.CreateOptions
	}{
		{"create/raw-vma", rawPath, vma.Format, format.CreateOptions{}},
		{"restore/vma-raw", vmaPath, raw.Format, format.CreateOptions{}},
		{"vma-qcow2", vmaPath, qcow2.Format, format.CreateOptions{}},
		{"raw-qcow2", rawPath, qcow2.Format, format.CreateOptions{}},
		{"qcow2-raw", qcowPath, raw.Format, format.CreateOptions{}},
		{"qcow2-vma", qcowPath, vma.Format, format.CreateOptions{}},
	} {
		for _, wc := range workerCases {
			b.Run(c.name+"/"+wc.name, func(b *testing.B) {
				b.SetBytes(e2eDisk)
				b.ReportAllocs()
				out := filepath.Join(b.TempDir(), "out")
				for b.Loop() {
					if err := convert(c.src, c.out, out, wc.workers, c.o); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRestoreStream: an archive read as a stream (as from a pipe or a
// compressed file) through vma.Unpack into a new sparse raw file,
// synced and renamed (device bytes per second).
func BenchmarkRestoreStream(b *testing.B) {
	_, arcPath, _ := e2eFiles(b)
	for _, wc := range workerCases {
		b.Run(wc.name, func(b *testing.B) {
			b.SetBytes(e2eDisk)
			b.ReportAllocs()
			out := filepath.Join(b.TempDir(), "out.raw")
			for b.Loop() {
				f, err := os.Open(arcPath)
				if err != nil {
					b.Fatal(err)
				}
				r, err := vma.NewReader(f)
				if err != nil {
					b.Fatal(err)
				}
				os.Remove(out)
				sink, err := raw.Create(format.Dest{Path: out}, []format.Device{{Size: e2eDisk}}, format.CreateOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := vma.Unpack(context.Background(), r, map[int]io.WriterAt{1: sink.Disk(0)}, vma.UnpackOptions{Workers: wc.workers}); err != nil {
					b.Fatal(err)
				}
				if err := sink.Commit(); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}

// BenchmarkOpenIndex: vma.Open reading every extent header of the 256 MiB
// disk's archive and building its index (device bytes per second: the
// 256 MiB disk it makes readable; archive-MB/s counts the archive's bytes).
func BenchmarkOpenIndex(b *testing.B) {
	_, arcPath, _ := e2eFiles(b)
	f, err := os.Open(arcPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(e2eDisk)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := vma.Open(f, fi.Size()); err != nil {
			b.Fatal(err)
		}
	}
	reportArchiveRate(b, fi.Size())
}

// reportArchiveRate reports archive-MB/s, the archive bytes of each op per
// second, beside MB/s of device bytes.
func reportArchiveRate(b *testing.B, archive int64) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(archive)*float64(b.N)/1e6/s, "archive-MB/s")
	}
}

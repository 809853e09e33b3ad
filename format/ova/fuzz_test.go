package ova_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/ova"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

// smallOVA is an OVA of two small disks (VMDKs the sink writes) and the
// example VM's config.
func smallOVA(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "small.ova")
	devs := []format.Device{{Name: "drive-scsi0", Size: 200000}, {Name: "drive-ide1", Size: 70000}}
	sink, err := ova.Format.Create(format.Dest{Path: path}, devs, format.CreateOptions{Configs: []format.Config{{Name: "qemu-server.conf", Data: []byte(testutil.ExampleConfig)}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range devs {
		if err := pipeline.Copy(context.Background(), sink.Disk(i), memSource(testutil.GenDisk(uint64(i), d.Size, "mixed")), pipeline.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// memSource is a format.Source of a byte slice.
type memSource []byte

func (m memSource) Size() int64  { return int64(len(m)) }
func (m memSource) Close() error { return nil }
func (m memSource) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m).ReadAt(p, off)
}

// FuzzOpen opens anything as an OVA and reads what it opens: its disks'
// first and last MiB, their zero maps (each answer must move on), their
// manifest checks, its config. Nothing may panic, hang, or allocate by a
// size the input claims.
func FuzzOpen(f *testing.F) {
	b := smallOVA(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	var t bytes.Buffer
	tw := tar.NewWriter(&t)
	tw.WriteHeader(&tar.Header{Name: "vm.ovf", Mode: 0o644, Size: 5, Format: tar.FormatUSTAR})
	tw.Write([]byte("<x/>\n"))
	tw.WriteHeader(&tar.Header{Name: "disk.vmdk", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Format: tar.FormatUSTAR})
	tw.Close()
	f.Add(t.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("%d bytes took %v", len(b), d)
			}
		}()
		img, err := ova.Format.OpenAt(bytes.NewReader(b), int64(len(b)), format.OpenOptions{})
		if err != nil {
			return
		}
		defer img.Close()
		for _, d := range img.Disks() {
			src := d.Source
			size := src.Size()
			buf := make([]byte, 1<<20)
			for _, off := range []int64{0, max(size-int64(len(buf)), 0)} {
				n := min(int64(len(buf)), size-off)
				src.ReadAt(buf[:n], off)
			}
			if z, ok := src.(format.ZeroMapper); ok {
				for off, k := int64(0), 0; off < size && k < 1000; k++ {
					r, err := z.Region(off, size-off)
					if err != nil {
						break
					}
					if r.Length <= 0 || r.Start != off {
						t.Fatalf("%s: region %+v at %d", d.Name, r, off)
					}
					off += r.Length
				}
			}
			if c, ok := src.(format.Checker); ok {
				c.Check()
			}
		}
		img.Configs()
	})
}

package ova_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/ova"
	"github.com/vmaconv/vmaconv/pipeline"
)

// TestHugeDisk writes a 1 TiB disk of holes with a few data blocks into
// an OVA, and reads it back, in bounded memory: the sink holds what its
// VMDK writer holds (a grain directory's worth, not the disk's grain
// tables), the OVA is small, and reading maps the holes without reading
// them.
func TestHugeDisk(t *testing.T) {
	const size = 1 << 40
	path := filepath.Join(t.TempDir(), "huge.ova")
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	sink, err := ova.Format.Create(format.Dest{Path: path}, []format.Device{{Name: "drive-scsi0", Size: size}}, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 64<<10)
	copy(block, "data")
	w := sink.Disk(0)
	for off := int64(0); off < size; off += 1 << 30 {
		if off%(256<<30) == 0 { // a block of data every 256 GiB
			if _, err := w.WriteAt(block, off); err != nil {
				t.Fatal(err)
			}
			if err := w.ZeroAt(off+int64(len(block)), 1<<30-int64(len(block))); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := w.ZeroAt(off, 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	if a := m1.TotalAlloc - m0.TotalAlloc; a > 32<<20 {
		t.Errorf("writing allocated %d MiB", a>>20)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > 4<<20 {
		t.Fatalf("the OVA of 1 TiB of holes: %v, %v", fi.Size(), err)
	}

	img := openOVA(t, path, format.OpenOptions{})
	defer img.Close()
	src := img.Disks()[0].Source
	runtime.GC()
	runtime.ReadMemStats(&m0)
	data := int64(0)
	err = pipeline.Scan(context.Background(), src, pipeline.Options{}, func(off, n int64, b []byte) error {
		if b != nil {
			data += n
		}
		return nil
	})
	if err != nil || data == 0 || data > 64<<20 {
		t.Fatalf("scanning: %d bytes of data read: %v", data, err)
	}
	runtime.ReadMemStats(&m1)
	if a := m1.TotalAlloc - m0.TotalAlloc; a > 64<<20 {
		t.Errorf("mapping 1 TiB allocated %d MiB", a>>20)
	}
	got := make([]byte, 4)
	if _, err := src.ReadAt(got, 768<<30); err != nil || string(got) != "data" {
		t.Errorf("read %q: %v", got, err)
	}
}

package vhdx

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestConformance: every kind of image qemu-img writes reads bit-exact
// against qemu-img's own reading, with a zero map that tiles the disk and
// never calls data zero: at any offset, in parallel, for images of
// 1 MiB blocks, dynamic and fixed (formattest reads a disk over 100 MiB
// in all, in parallel the costliest part under -race); read whole and
// mapped for the others.
func TestConformance(t *testing.T) {
	images := fixtures(t)
	for name, path := range images {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := oracle(t, path)
			src, err := openPath(t, path, format.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			switch name {
			case "odd-size":
				formattest.TestSource(t, src, want)
				return
			case "dynamic-1m", "fixed":
				formattest.TestSourceSerial(t, src, want)
				return
			}
			if src.Size() != int64(len(want)) {
				t.Fatalf("Size() = %d, want %d", src.Size(), len(want))
			}
			if !bytes.Equal(readAll(t, src), want) {
				t.Error("the disk read whole differs from qemu-img's")
			}
			for pos := int64(0); pos < src.Size(); {
				e, err := src.Region(pos, src.Size()-pos)
				if err != nil || e.Start != pos || e.Length <= 0 || e.Start+e.Length > src.Size() {
					t.Fatalf("Region(%d, %d) = %+v, %v", pos, src.Size()-pos, e, err)
				}
				if e.Zero && !testutil.AllZero(want[pos:pos+e.Length]) {
					t.Errorf("extent %+v is reported zero but is not", e)
				}
				pos += e.Length
			}
		})
	}
}

// TestZeroMap: blocks in a zero state, and the zero 4 KiB blocks of
// present blocks (holes of the file), are zero regions; the data is not.
func TestZeroMap(t *testing.T) {
	path := fixtures(t)["sparse"]
	src, err := openPath(t, path, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// 20 MiB, 8 MiB blocks: data in block 2 only, 300000 bytes from
	// 17 MiB.
	var zero int64
	for pos := int64(0); pos < src.Size(); {
		r, err := src.Region(pos, src.Size()-pos)
		if err != nil {
			t.Fatal(err)
		}
		if r.Zero {
			zero += r.Length
		}
		pos += r.Length
	}
	data := (300000 + 4095) / 4096 * 4096
	if zero != src.Size()-int64(data) {
		t.Errorf("%d zero bytes mapped, want %d (all but the data's 4 KiB blocks)", zero, src.Size()-int64(data))
	}
	if r, _ := src.Region(0, src.Size()); !r.Zero || r.Length != 17<<20 {
		t.Errorf("Region(0) = %+v, want the 2 zero blocks and the hole of the data block before its data (17 MiB)", r)
	}
}

// TestInfo: info reports what qemu-img info reports, key for key of its
// JSON, for dynamic and fixed images of every block size.
func TestInfo(t *testing.T) {
	images := fixtures(t)
	for _, name := range []string{"dynamic-1m", "sparse", "dynamic-256m", "fixed", "odd-size", "empty"} {
		path := images[name]
		out := qemuOutput(t, "info", "--output", "json", path)
		var want map[string]any
		json.Unmarshal(out, &want)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		in, err := info(f, fi.Size(), format.FileStat{Name: path, Size: fi.Size(), Allocated: int64(want["actual-size"].(float64))})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(in)
		var got map[string]any
		json.Unmarshal(b, &got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: info %v, qemu-img says %v", name, got, want)
		}
	}
}

// TestFourKSectors: an image of 4 KiB logical sectors (which qemu-img
// neither writes nor sizes right) reads as the same image of 512-byte
// sectors: for a disk within one chunk, the BAT is the same.
func TestFourKSectors(t *testing.T) {
	path := fixtures(t)["few-1m"]
	m := compact(t, loadImage(t, path))
	le32(m[m.metaItem(t, logicalSectorGUID):], 4096)
	le32(m[m.metaItem(t, physicalSectorGUID):], 4096)
	p := m.save(t, filepath.Join(t.TempDir(), "4k.vhdx"))
	src, err := openPath(t, p, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.l.chunkRatio != 32768 {
		t.Errorf("chunk ratio %d, want 32768", src.l.chunkRatio)
	}
	formattest.TestSourceSerial(t, src, oracle(t, path))
	// A size that is not whole 4 KiB sectors is cut to them.
	le64(m[m.metaItem(t, virtualSizeGUID):], 3<<20-512)
	p = m.save(t, filepath.Join(t.TempDir(), "4k-cut.vhdx"))
	if src, err := openPath(t, p, format.OpenOptions{}); err != nil || src.Size() != 3<<20-4096 {
		t.Errorf("size %v; want %d", err, 3<<20-4096)
	} else {
		src.Close()
	}
}

// TestHeaderChoice: the current header is the valid one with the larger
// sequence number; a damaged region table is replaced by its copy.
func TestHeaderChoice(t *testing.T) {
	path := fixtures(t)["few-1m"]
	want := oracle(t, path)
	dir := t.TempDir()
	m := loadImage(t, path)
	l := m.layout(t)
	other := int64(header1Offset + header2Offset - l.headAt)
	head := bytes.Clone(m[:headerSection])
	for _, tc := range []struct {
		name  string
		patch func(m image)
		head  int64 // the header expected current
	}{
		{"current-damaged", func(m image) { m[l.headAt+100]++ }, other},
		{"other-damaged", func(m image) { m[other+100]++ }, l.headAt},
		{"other-newer", func(m image) {
			binary.LittleEndian.PutUint64(m[other+8:], l.head.seq+1)
			m.fixHeader(other)
		}, other},
		{"region-table-damaged", func(m image) { m[region1Offset+70]++ }, l.headAt},
	} {
		tc.patch(m)
		p := m.save(t, filepath.Join(dir, tc.name))
		copy(m[:headerSection], head) // the patches change the header section only
		src, err := openPath(t, p, format.OpenOptions{})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if src.l.headAt != tc.head {
			t.Errorf("%s: header at %#x chosen, want %#x", tc.name, src.l.headAt, tc.head)
		}
		if !bytes.Equal(readAll(t, src), want) {
			t.Errorf("%s: content differs", tc.name)
		}
		src.Close()
	}
}

// TestOpenAt: a self-contained image opens from any io.ReaderAt.
func TestOpenAt(t *testing.T) {
	path := fixtures(t)["dynamic-1m"]
	m := loadImage(t, path)
	src, err := OpenAt(readerAt(m), int64(len(m)), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if !bytes.Equal(readAll(t, src), oracle(t, path)) {
		t.Error("content differs")
	}
	if _, err := OpenAt(readerAt("vhdxfil"), 7, format.OpenOptions{}); err == nil {
		t.Error("7 bytes opened")
	}
}

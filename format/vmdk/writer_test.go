package vmdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
	"github.com/vmaconv/vmaconv/pipeline"
)

// mem is a format.Source of a byte slice.
type mem []byte

func (m mem) Size() int64  { return int64(len(m)) }
func (m mem) Close() error { return nil }

func (m mem) ReadAt(p []byte, off int64) (int, error) { return bytes.NewReader(m).ReadAt(p, off) }

// create writes data through the format's sink, to a file at path or, if
// stream is set, to it, with the given -o options, in the given order:
// "seq" (the pipeline's: ascending, zero runs declared), "shuffle" (whole
// grains in random order) or "pieces" (random-sized pieces in random
// order, zero ones declared with ZeroAt).
func create(t testing.TB, path string, stream io.Writer, data []byte, opts, order string) {
	t.Helper()
	v, err := format.ParseOptions(vmdk.Format, opts)
	if err != nil {
		t.Fatal(err)
	}
	d := format.Dest{Path: path, Stream: stream}
	sink, err := vmdk.Format.Create(d, []format.Device{{Size: int64(len(data))}}, format.CreateOptions{Options: v, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	dw := sink.Disk(0)
	if order == "seq" {
		err = pipeline.Copy(context.Background(), dw, mem(data), pipeline.Options{Workers: 2, ChunkSize: 256 << 10})
	} else {
		err = writePieces(dw, data, order)
	}
	if err != nil {
		sink.Abort()
		t.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
}

func writePieces(dw format.DiskWriter, data []byte, order string) error {
	const grain = 64 << 10
	type piece struct{ off, n int64 }
	var pieces []piece
	size := int64(len(data))
	rng := rand.New(rand.NewPCG(uint64(size), 9))
	for off := int64(0); off < size; {
		n := min(grain, size-off)
		if order == "pieces" {
			n = min(1+rng.Int64N(3*grain), size-off)
		}
		pieces = append(pieces, piece{off, n})
		off += n
	}
	rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	for _, p := range pieces {
		b := data[p.off : p.off+p.n]
		var err error
		if zero.IsZero(b) && order == "pieces" {
			err = dw.ZeroAt(p.off, p.n)
		} else {
			_, err = dw.WriteAt(b, p.off)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// qemuCheck runs qemu-img check and qemu-img compare against raw, and
// returns qemu-img info's JSON.
func qemuCheck(t *testing.T, img, raw string) map[string]any {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors were found on the image.") {
		t.Fatalf("qemu-img check %s: %v\n%s", filepath.Base(img), err, out)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "vmdk", raw, img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare %s: %v\n%s", filepath.Base(img), err, out)
	}
	out, err = exec.Command("qemu-img", "info", "--output", "json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// createType is qemu-img info's create type of an image.
func createType(info map[string]any) string {
	fs, _ := info["format-specific"].(map[string]any)
	data, _ := fs["data"].(map[string]any)
	s, _ := data["create-type"].(string)
	return s
}

// qemuMap returns qemu-img map's JSON entries of an image.
func qemuMap(t *testing.T, img string) []map[string]any {
	t.Helper()
	out, err := exec.Command("qemu-img", "map", "--output", "json", img).Output()
	if err != nil {
		t.Fatalf("qemu-img map %s: %v", img, err)
	}
	var m []map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// readBack reads an image whole through the package.
func readBack(t *testing.T, path string) []byte {
	t.Helper()
	src, err := open(t, path, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := make([]byte, src.Size())
	if n, err := src.ReadAt(got, 0); n != len(got) {
		t.Fatalf("read %d of %d: %v", n, len(got), err)
	}
	return got
}

// TestWriteQemuImg: every image written, both subformats, for sizes not a
// multiple of 64 KiB or of 512, empty and full disks, more than one grain
// table, data in order, shuffled or in pieces, to a file and
// (streamOptimized) to a stream, passes qemu-img check, equals its data
// for qemu-img compare and for this package's reader, has the create type
// qemu-img info reports, and keeps its zeros unallocated (qemu-img map); a
// monolithicSparse image written in order is qemu-img convert's, byte for
// byte (its CID aside).
func TestWriteQemuImg(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	disks := map[string][]byte{
		"mixed":  testutil.GenDisk(1, 3<<20, "mixed"),
		"odd":    testutil.GenDisk(2, 1<<20+7*512+100, "text"), // neither 64 KiB nor 512 aligned
		"empty":  make([]byte, 5<<20),
		"full":   testutil.GenDisk(3, 1<<20, "data"),
		"tiny":   testutil.GenDisk(5, 1000, "data"),
		"tables": sparseDisk(6, 66<<20, 100<<10, 40<<20, 66<<20-1000), // three grain tables, one of them empty
	}
	raws := map[string]string{}
	for name, data := range disks {
		raws[name] = filepath.Join(dir, name+".raw")
		if err := os.WriteFile(raws[name], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{vmdk.MonolithicSparse, vmdk.StreamOptimized} {
		for name, data := range disks {
			for _, order := range []string{"seq", "shuffle", "pieces", "stream"} {
				if order == "stream" && sub != vmdk.StreamOptimized || name == "tables" && order != "seq" && order != "stream" {
					continue
				}
				t.Run(fmt.Sprintf("%s-%s-%s", sub, name, order), func(t *testing.T) {
					t.Parallel()
					path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".vmdk")
					if order == "stream" {
						var buf bytes.Buffer
						create(t, path, &buf, data, "subformat="+sub, "seq")
						if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
							t.Fatal(err)
						}
					} else {
						create(t, path, nil, data, "subformat="+sub, order)
					}
					if sub == vmdk.MonolithicSparse && order == "seq" {
						// qemu-img convert writes the same bytes, its CID aside (our
						// zero blocks in grains are holes, which read the same).
						theirs := path + ".qemu.vmdk"
						testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", raws[name], theirs)
						a, _ := os.ReadFile(path)
						b, _ := os.ReadFile(theirs)
						da := bytes.Replace(cidLine.ReplaceAll(descOf(a), nil), []byte(filepath.Base(path)), []byte(filepath.Base(theirs)), 1)
						if db := cidLine.ReplaceAll(descOf(b), nil); !bytes.Equal(da, db) ||
							len(a) != len(b) || !bytes.Equal(a[:512], b[:512]) || !bytes.Equal(a[512+10240:], b[512+10240:]) {
							t.Errorf("the image differs from qemu-img convert's (%d and %d bytes)", len(a), len(b))
						}
					}
					info := qemuCheck(t, path, raws[name])
					if got := createType(info); got != sub {
						t.Errorf("qemu-img info: create type %q, want %s", got, sub)
					}
					got := readBack(t, path)
					if len(got) < len(data) || !bytes.Equal(got[:len(data)], data) || !zero.IsZero(got[len(data):]) {
						t.Fatal("content read back differs")
					}
					// Zero grains are unallocated: qemu-img maps nothing of them.
					mapped := int64(0)
					for _, e := range qemuMap(t, path) {
						if e["data"] == true {
							mapped += int64(e["length"].(float64))
						}
					}
					if want := dataGrains(data); mapped != want {
						t.Errorf("qemu-img map: %d bytes of data, want %d (the non-zero grains)", mapped, want)
					}
				})
			}
		}
	}
}

// dataGrains returns the bytes of the 64 KiB grains of data that hold
// something other than zeros (the last one cut to whole sectors).
func dataGrains(data []byte) int64 {
	size := int64(len(data)+511) &^ 511
	n := int64(0)
	for off := int64(0); off < int64(len(data)); off += 64 << 10 {
		if !zero.IsZero(data[off:min(off+64<<10, int64(len(data)))]) {
			n += min(64<<10, size-off)
		}
	}
	return n
}

// TestStreamAPI: the contract the OVA sink relies on. A streamOptimized
// image created on a stream has a format.Sequential disk; its bytes,
// opened with OpenAt (a tar member), read back what was written; qemu-img
// reads it too. A monolithicSparse image is refused on a stream, and
// OpenAt refuses a descriptor file, which names other files.
func TestStreamAPI(t *testing.T) {
	data := testutil.GenDisk(11, 2<<20+512*3, "mixed")
	opts, err := format.CheckOptions(vmdk.Format, []format.Setting{{Name: "subformat", Value: "streamOptimized"}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sink, err := vmdk.Format.Create(format.Dest{Stream: &buf, Name: "vm-disk1.vmdk"}, []format.Device{{Size: int64(len(data))}}, format.CreateOptions{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sink.Disk(0).(format.Sequential); !ok {
		t.Fatal("the stream's disk writer is not format.Sequential")
	}
	if err := pipeline.Copy(context.Background(), sink.Disk(0), mem(data), pipeline.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes()[:2048], []byte(`RW 4099 SPARSE "vm-disk1.vmdk"`)) {
		t.Errorf("the descriptor does not name the extent vm-disk1.vmdk:\n%s", buf.Bytes()[512:1024])
	}
	img, err := vmdk.Format.OpenAt(bytes.NewReader(buf.Bytes()), int64(buf.Len()), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := img.Disks()[0].Source
	got := make([]byte, src.Size())
	if n, err := src.ReadAt(got, 0); n != len(data) || !bytes.Equal(got, data) {
		t.Errorf("OpenAt read %d bytes (%v), want %d equal", n, err, len(data))
	}
	img.Close()
	stream := bytes.Clone(buf.Bytes())
	if _, err := vmdk.Format.Create(format.Dest{Stream: &buf}, []format.Device{{Size: 1 << 20}}, format.CreateOptions{}); err == nil ||
		!strings.Contains(err.Error(), "pass -o subformat=streamOptimized") {
		t.Errorf("a monolithicSparse image on a stream: %v", err)
	}
	desc := []byte("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"x-flat.vmdk\" 0\n")
	if _, err := vmdk.OpenAt(bytes.NewReader(desc), int64(len(desc)), format.OpenOptions{}); err == nil || !strings.Contains(err.Error(), "open it as a file") {
		t.Errorf("OpenAt of a descriptor: %v", err)
	}
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	p, raw := filepath.Join(dir, "s.vmdk"), filepath.Join(dir, "s.raw")
	os.WriteFile(p, stream, 0o644)
	os.WriteFile(raw, data, 0o644)
	qemuCheck(t, p, raw)
}

// cidLine matches the descriptor's CID line, which qemu-img draws at
// random.
var cidLine = regexp.MustCompile(`(?m)^CID=[0-9a-f]+$`)

// TestOptionsQemuImg: with every option qemu-img takes, an empty
// monolithicSparse image is byte for byte the one qemu-img create makes
// (its CID aside): header, descriptor (adapter type, hardware and tools
// versions, geometry, createType), both grain directories and the size of
// the file; a streamOptimized image's descriptor is qemu-img's. compat6
// with hwversion is refused, as qemu-img refuses it.
func TestOptionsQemuImg(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	for i, opts := range []string{"", "adapter_type=lsilogic", "adapter_type=buslogic,hwversion=14", "adapter_type=legacyESX,toolsversion=12345",
		"compat6=on", "zeroed_grain=on", "hwversion=21,adapter_type=ide"} {
		for _, size := range []int64{100 << 20, 3<<30 + 7*512} {
			name := fmt.Sprintf("o%d-%d.vmdk", i, size)
			ours, theirs := filepath.Join(dir, name), filepath.Join(dir, "q"+name)
			testutil.Run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", strings.TrimPrefix(opts+",subformat=monolithicSparse", ","), theirs, fmt.Sprint(size))
			v, err := format.ParseOptions(vmdk.Format, opts)
			if err != nil {
				t.Fatal(err)
			}
			// The descriptor names the extent by its file's name: qemu-img's.
			sink, err := vmdk.Format.Create(format.Dest{Path: ours, Name: theirs}, []format.Device{{Size: size}}, format.CreateOptions{Options: v})
			if err != nil {
				t.Fatal(err)
			}
			if err := sink.Disk(0).ZeroAt(0, size); err != nil {
				t.Fatal(err)
			}
			if err := sink.Commit(); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(ours)
			b, _ := os.ReadFile(theirs)
			da, db := cidLine.ReplaceAll(descOf(a), nil), cidLine.ReplaceAll(descOf(b), nil)
			if len(a) != len(b) || !bytes.Equal(a[:512], b[:512]) || !bytes.Equal(a[512+10240:], b[512+10240:]) || !bytes.Equal(da, db) {
				t.Errorf("-o %q, %d bytes: the image differs from qemu-img create's (%d and %d bytes; descriptor:\n%s\nqemu-img's:\n%s)",
					opts, size, len(a), len(b), da, db)
			}
			// streamOptimized: the same descriptor.
			sv, err := format.ParseOptions(vmdk.Format, strings.TrimPrefix(opts+",subformat=streamOptimized", ","))
			if err != nil {
				t.Fatal(err)
			}
			qs := filepath.Join(dir, "qs"+name)
			testutil.Run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", strings.TrimPrefix(opts+",subformat=streamOptimized", ","), qs, fmt.Sprint(size))
			var buf bytes.Buffer
			sink, err = vmdk.Format.Create(format.Dest{Stream: &buf, Name: qs}, []format.Device{{Size: size}}, format.CreateOptions{Options: sv})
			if err != nil {
				t.Fatal(err)
			}
			if err := sink.Disk(0).ZeroAt(0, size); err != nil {
				t.Fatal(err)
			}
			if err := sink.Commit(); err != nil {
				t.Fatal(err)
			}
			qb, _ := os.ReadFile(qs)
			if got, want := cidLine.ReplaceAll(descOf(buf.Bytes()), nil), cidLine.ReplaceAll(descOf(qb), nil); !bytes.Equal(got, want) {
				t.Errorf("-o %q, streamOptimized: descriptor\n%s\nqemu-img's:\n%s", opts, got, want)
			}
		}
	}
	v, err := format.ParseOptions(vmdk.Format, "compat6=on,hwversion=7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vmdk.Format.Create(format.Dest{Path: filepath.Join(dir, "x.vmdk")}, []format.Device{{Size: 1 << 20}}, format.CreateOptions{Options: v}); !errors.Is(err, format.ErrUnsupportedOption) {
		t.Errorf("compat6 with hwversion: %v", err)
	}
	for _, bad := range []string{`hwversion=4"`, "toolsversion=a\tb", "adapter_type=scsi", "subformat=monolithicFlat"} {
		if _, err := format.ParseOptions(vmdk.Format, bad); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("-o %s: %v", bad, err)
		}
	}
}

// descOf returns the descriptor embedded in a sparse image.
func descOf(b []byte) []byte {
	d := b[512 : 512+10240]
	if i := bytes.IndexByte(d, 0); i >= 0 {
		d = d[:i]
	}
	return d
}

// TestDeterministic: the same writes give the same bytes, whatever the
// number of compressing goroutines, in order or in pieces out of order.
func TestDeterministic(t *testing.T) {
	data := testutil.GenDisk(12, 5<<20+1000, "mixed")
	for _, order := range []string{"seq", "pieces"} {
		var first []byte
		for _, workers := range []int{1, 4, 4} {
			v, _ := format.ParseOptions(vmdk.Format, "subformat=streamOptimized")
			var buf bytes.Buffer
			sink, err := vmdk.Format.Create(format.Dest{Stream: &buf, Name: "d.vmdk"}, []format.Device{{Size: int64(len(data))}},
				format.CreateOptions{Options: v, Workers: workers})
			if err != nil {
				t.Fatal(err)
			}
			if order == "seq" {
				err = pipeline.Copy(context.Background(), sink.Disk(0), mem(data), pipeline.Options{ChunkSize: 192 << 10})
			} else {
				err = writePieces(sink.Disk(0), data, order)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := sink.Commit(); err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = buf.Bytes()
			} else if !bytes.Equal(first, buf.Bytes()) {
				t.Errorf("%s, %d workers: the bytes differ from 1 worker's", order, workers)
			}
		}
	}
}

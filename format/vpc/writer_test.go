package vpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vpc"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/internal/zero"
	"github.com/vmaconv/vmaconv/pipeline"
)

// fixedUUID and fixedTime make written images reproducible.
const (
	fixedUUID = "6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	fixedTime = "1718000000"
)

// convert writes the raw file rawPath as a VHD at dst through the sink,
// with the -o options given (and a fixed UUID and time), as vmaconv
// convert does, and returns the notes.
func convert(t *testing.T, rawPath, dst, opts string, stream io.Writer) []string {
	t.Helper()
	f, err := os.Open(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	src, err := raw.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	v, err := format.ParseOptions(vpc.Format, opts, "uuid="+fixedUUID+",ctime="+fixedTime)
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	sink, err := vpc.Format.Create(format.Dest{Path: dst, Stream: stream}, []format.Device{{Size: src.Size()}},
		format.CreateOptions{Options: v, Note: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := pipeline.Copy(context.Background(), sink.Disk(0), src, pipeline.Options{Workers: 3, ChunkSize: 256 << 10}); err != nil {
		sink.Abort()
		t.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	return notes
}

// sameBytes compares a VHD written here with qemu-img's of the same disk
// and options: equal but for the fields qemu-img fills in from the clock
// and at random (time stamp, UUID) and the checksums they change, in both
// copies of the footer.
func sameBytes(t *testing.T, ours, theirs string) {
	t.Helper()
	a, err := os.ReadFile(ours)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(theirs)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("%d bytes, qemu-img writes %d", len(a), len(b))
	}
	for _, img := range [][]byte{a, b} {
		for _, off := range []int{0, len(img) - 512} {
			if string(img[off:off+8]) == "conectix" {
				clear(img[off+24 : off+28]) // time stamp
				clear(img[off+64 : off+84]) // checksum, UUID
			}
		}
	}
	if !bytes.Equal(a, b) { // firstDiff costs a lot more under -race
		i := firstDiff(a, b)
		t.Fatalf("differs from qemu-img's image at %#x: %#02x, qemu-img writes %#02x", i, a[i], b[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// qemuInfo returns qemu-img info -f vpc's JSON of an image (once).
func qemuInfo(t *testing.T, path string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mustOnce(t, "qemu-img", "info", "-f", "vpc", "--output", "json", path), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// qemuCompare runs qemu-img compare of an image against the raw disk it
// holds (once; qemu-img check does not check VHDs: "This image format
// does not support checks").
func qemuCompare(t *testing.T, img, rawPath string) {
	t.Helper()
	out, err := once("qemu-img", "compare", "-f", "raw", "-F", "vpc", rawPath, img)
	if err != nil || !strings.Contains(string(out), "Images are identical.") {
		t.Fatalf("qemu-img compare %s: %v\n%s", filepath.Base(img), err, out)
	}
}

// vhdOpts is a key of -o options for file names.
var vhdOpts = strings.NewReplacer("=", "_", ",", "_")

// TestWriterQemuImg: every disk written, dynamic and fixed, with and
// without force_size, of sizes that need rounding to a CHS geometry, is
// byte for byte what qemu-img convert -O vpc writes (but for its time
// stamp and UUID), equals its disk for qemu-img compare, and is described
// by qemu-img info as asked; a fixed disk written to a stream is the
// file's bytes; each says how its size grew.
func TestWriterQemuImg(t *testing.T) {
	needFixtures(t)
	if out, err := once("qemu-img", "check", "-f", "vpc", fixtures.cases["dynamic"]); err == nil || !strings.Contains(string(out), "does not support checks") {
		t.Fatalf("qemu-img check checks VHDs now (%v: %s): make it part of this test", err, out)
	}
	dir := filepath.Join(fixtures.dir, "writer") // qemu-img's images made once
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	raws := map[string]string{}
	for name, data := range map[string][]byte{
		"tiny":  testutil.GenDisk(5, 1000, "data"),
		"empty": make([]byte, 3<<20),
		"exact": testutil.GenDisk(6, 100*4*17*512, "mixed"), // a geometry: nothing to round
		"full":  testutil.GenDisk(7, 2<<20+4096, "data"),
	} {
		raws[name] = filepath.Join(dir, name+".raw")
		if err := os.WriteFile(raws[name], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raws["mixed"], raws["sparse"] = fixtures.raws["mixed"], fixtures.raws["sparse"]
	for name, rawPath := range raws {
		for _, opts := range []string{"", "subformat=fixed", "force_size=on", "subformat=fixed,force_size=on"} {
			if strings.Contains(opts, "force_size") && name != "mixed" && name != "tiny" {
				continue // the size kept: the same for any content
			}
			t.Run(name+"-"+opts, func(t *testing.T) {
				t.Parallel()
				key := name + "-" + vhdOpts.Replace(opts)
				ours, first := keep(t, "writer/"+key+".vhd")
				theirs := filepath.Join(dir, key+".qemu.vhd")
				notes := convert(t, rawPath, ours, opts, nil)
				if first != "" { // a later pass: the first's bytes, which were checked
					sameAsFirst(t, ours, first)
					return
				}
				args := []string{"convert", "-f", "raw", "-O", "vpc", rawPath, theirs}
				if opts != "" {
					args = append(args, "-o", opts)
				}
				mustOnce(t, "qemu-img", args...)
				sameBytes(t, ours, theirs)
				// Zeros stay holes, as qemu-img leaves them (give or take
				// the file system's own blocks for a file written in
				// another order).
				if a, b := diskBytes(t, ours), diskBytes(t, theirs); a > b+b/64+16<<10 {
					t.Errorf("%d bytes on disk, qemu-img's image %d", a, b)
				}
				qemuCompare(t, ours, rawPath)
				info := qemuInfo(t, ours)
				fi, _ := os.Stat(rawPath)
				vsize := int64(info["virtual-size"].(float64))
				if info["format"] != "vpc" || (info["cluster-size"] != nil) == strings.Contains(opts, "fixed") {
					t.Errorf("qemu-img info: %v", info)
				}
				if grew := vsize != (fi.Size()+511)&^511; grew != (len(notes) == 1) || grew && !strings.Contains(notes[0], "rounded up to a CHS geometry") {
					t.Errorf("notes %q for %d bytes of %d", notes, vsize, fi.Size())
				}
				if strings.Contains(opts, "fixed") {
					var buf bytes.Buffer
					convert(t, rawPath, "-", opts, &buf)
					if b, _ := os.ReadFile(ours); !bytes.Equal(buf.Bytes(), b) {
						t.Error("the stream differs from the file")
					}
				}
				// Our reader reads it back as qemu-img does.
				src, err := open(t, ours, format.OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				if src.Size() != vsize {
					t.Errorf("read back: %d bytes, qemu-img reads %d", src.Size(), vsize)
				}
			})
		}
	}
}

// TestCreateQemuImg: an empty disk of every size qemu-img rounds
// differently (each regime of the CHS algorithm and its edges, past the
// largest geometry, up to 2040 GiB) has qemu-img create's footer, header
// and BAT: the same bytes but for the time stamp and UUID; and the same
// file size, fixed or dynamic.
func TestCreateQemuImg(t *testing.T) {
	needFixtures(t)
	dir := filepath.Join(fixtures.dir, "create") // qemu-img's images made once
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ourDir := t.TempDir()
	const spt31 = 16 * 1024 * 17 * 512  // where 31 sectors a track start
	const spt63 = 65535 * 16 * 63 * 512 // where 255 sectors a track start
	const maxGeom = 65535 * 16 * 255 * 512
	sizes := []int64{0, 1000, 10 << 20, spt31 - 512, spt31 + 512, 200 << 20,
		spt63 - 512, spt63, maxGeom - 4096, maxGeom, maxGeom + 512, vpc.MaxSize}
	for _, size := range sizes {
		for _, opts := range []string{"", "force_size=on", "subformat=fixed"} {
			t.Run(fmt.Sprintf("%d-%s", size, opts), func(t *testing.T) {
				t.Parallel()
				key := fmt.Sprintf("%d-%s.vhd", size, vhdOpts.Replace(opts))
				ours, theirs := filepath.Join(ourDir, key), filepath.Join(dir, key)
				v, err := format.ParseOptions(vpc.Format, opts, "uuid="+fixedUUID+",ctime="+fixedTime)
				if err != nil {
					t.Fatal(err)
				}
				sink, err := vpc.Format.Create(format.Dest{Path: ours}, []format.Device{{Size: size}}, format.CreateOptions{Options: v})
				if err != nil {
					t.Fatal(err)
				}
				if err := sink.Disk(0).ZeroAt(0, size); err != nil {
					t.Fatal(err)
				}
				if err := sink.Commit(); err != nil {
					t.Fatal(err)
				}
				args := []string{"create", "-q", "-f", "vpc", theirs, fmt.Sprint(size)}
				if opts != "" {
					args = append(args, "-o", opts)
				}
				mustOnce(t, "qemu-img", args...)
				if !strings.Contains(opts, "fixed") {
					sameBytes(t, ours, theirs)
					return
				}
				// A fixed disk: the same size, and the same footer.
				a, b := tail(t, ours), tail(t, theirs)
				if a.size != b.size {
					t.Fatalf("%d bytes, qemu-img writes %d", a.size, b.size)
				}
				for _, f := range [][]byte{a.foot, b.foot} {
					clear(f[24:28])
					clear(f[64:84])
				}
				if i := firstDiff(a.foot, b.foot); i >= 0 {
					t.Fatalf("footer differs from qemu-img's at %#x", i)
				}
			})
		}
	}
	for _, size := range []int64{vpc.MaxSize + 512, 1 << 50} {
		if _, err := vpc.Format.Create(format.Dest{Path: filepath.Join(dir, "big.vhd")}, []format.Device{{Size: size}}, format.CreateOptions{}); err == nil {
			t.Errorf("a disk of %d bytes: no error", size)
		}
	}
}

// diskBytes returns the bytes a file takes on disk (st_blocks).
func diskBytes(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(fi.Sys())
	if v.Kind() != reflect.Pointer || !v.Elem().FieldByName("Blocks").CanInt() {
		t.Skip("no st_blocks here")
	}
	return v.Elem().FieldByName("Blocks").Int() * 512
}

type fileTail struct {
	size int64
	foot []byte
}

func tail(t *testing.T, path string) fileTail {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, fi.Size()-512); err != nil {
		t.Fatal(err)
	}
	return fileTail{fi.Size(), b}
}

// TestWriterOrder: a dynamic disk written in pieces in any order, zeros
// declared or written, is the same disk (for qemu-img and for the
// reader); blocks that only receive zeros stay out of the file.
func TestWriterOrder(t *testing.T) {
	needFixtures(t)
	data := mixedDisk()
	clear(data[2<<20 : 4<<20]) // a zero block
	dir := t.TempDir()
	rawPath := filepath.Join(dir, "disk.raw")
	os.WriteFile(rawPath, data, 0o644)
	for _, seed := range []uint64{1, 2} {
		path := filepath.Join(dir, fmt.Sprintf("order%d.vhd", seed))
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		w, err := vpc.NewWriter(f, int64(len(data)), vpc.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		type piece struct{ off, n int64 }
		var pieces []piece
		rng := rand.New(rand.NewPCG(seed, 7))
		for off := int64(0); off < int64(len(data)); {
			n := min(1+rng.Int64N(700<<10), int64(len(data))-off)
			pieces = append(pieces, piece{off, n})
			off += n
		}
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
		for _, p := range pieces {
			b := data[p.off : p.off+p.n]
			if zero.IsZero(b) && seed == 1 {
				err = w.ZeroAt(p.off, p.n)
			} else {
				_, err = w.WriteAt(b, p.off)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		qemuCompare(t, path, rawPath)
		src, err := open(t, path, format.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if _, err := src.ReadAt(got, 0); err != nil && err != io.EOF || !bytes.Equal(got, data) {
			t.Errorf("order %d: read back differs (%v)", seed, err)
		}
		if r, err := src.Region(2<<20, 2<<20); err != nil || !r.Zero || r.Length != 2<<20 {
			t.Errorf("order %d: the zero block: %+v, %v", seed, r, err)
		}
		src.Close()
		// Footer, header, BAT (3 entries), two blocks of the three, footer.
		if fi, _ := os.Stat(path); fi.Size() != 512+1024+512+2*(512+2<<20)+512 {
			t.Errorf("order %d: %d bytes: the zero block was allocated", seed, fi.Size())
		}
	}
}

// TestAzure: --target azure (azure=on) writes a fixed disk of a whole
// number of MiB that keeps that size (the creator qem2 and the largest
// geometry, as force_size writes), with a note; it refuses a dynamic
// disk or force_size=off, and is a target of the format.
func TestAzure(t *testing.T) {
	needFixtures(t)
	dir := t.TempDir()
	for _, opts := range []string{"azure=on", "azure=on,subformat=fixed,force_size=on"} {
		path := filepath.Join(dir, vhdOpts.Replace(opts)+".vhd")
		notes := convert(t, fixtures.raws["mixed"], path, opts, nil)
		qemuCompare(t, path, fixtures.raws["mixed"])
		info := qemuInfo(t, path)
		fi, _ := os.Stat(fixtures.raws["mixed"])
		want := (fi.Size() + 1<<20 - 1) &^ (1<<20 - 1)
		if got := int64(info["virtual-size"].(float64)); got != want || got%(1<<20) != 0 || info["cluster-size"] != nil {
			t.Errorf("%s: qemu-img info %v; want a fixed disk of %d bytes", opts, info, want)
		}
		tl := tail(t, path)
		if tl.size != want+512 || string(tl.foot[28:32]) != "qem2" || !bytes.Equal(tl.foot[56:60], []byte{0xff, 0xff, 16, 255}) {
			t.Errorf("%s: %d bytes, footer % x", opts, tl.size, tl.foot[:64])
		}
		if len(notes) != 1 || !strings.Contains(notes[0], fmt.Sprintf("virtual size %d bytes, rounded up to a whole MiB for Azure", want)) {
			t.Errorf("%s: notes %q", opts, notes)
		}
	}
	for _, opts := range []string{"azure=on,subformat=dynamic", "azure=on,force_size=off"} {
		v, err := format.ParseOptions(vpc.Format, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vpc.Format.Create(format.Dest{Path: filepath.Join(dir, "no.vhd")}, []format.Device{{Size: 1 << 20}}, format.CreateOptions{Options: v}); err == nil {
			t.Errorf("%s: no error", opts)
		}
	}
	ss, err := format.TargetSettings(vpc.Format, "azure")
	if err != nil {
		t.Fatal(err)
	}
	v, err := format.CheckOptions(vpc.Format, ss)
	if err != nil || !v.Bool("azure") || v.GivenAs("azure") != "--target azure" {
		t.Errorf("--target azure: %v, %v", v.Names(), err)
	}
}

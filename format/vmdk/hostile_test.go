package vmdk_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// readAll opens path and reads it whole and through its zero map; it
// returns the first error.
func readAll(t *testing.T, path string, o format.OpenOptions) error {
	t.Helper()
	src, err := open(t, path, o)
	if err != nil {
		return err
	}
	defer src.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < src.Size(); off += int64(len(buf)) {
		if _, err := src.Region(off, src.Size()-off); err != nil {
			return err
		}
		if _, err := src.ReadAt(buf, off); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// sparseImage makes a monolithicSparse or streamOptimized image of data
// with qemu-img, or with this package (stream: VMware's layout, its grain
// directory in the footer), and returns its bytes.
func sparseImage(t *testing.T, dir string, data []byte, sub string) []byte {
	t.Helper()
	p := filepath.Join(dir, "base-"+sub+".vmdk")
	if sub == "vmware" {
		var buf bytes.Buffer
		create(t, p, &buf, data, "subformat=streamOptimized", "seq")
		return buf.Bytes()
	}
	testutil.RequireTool(t, "qemu-img")
	raw := filepath.Join(dir, "base.raw")
	os.WriteFile(raw, data, 0o644)
	testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sub, raw, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gtOf returns the offset of the first grain table of a sparse image
// whose grain directory is where its header says.
func gtOf(b []byte) int64 {
	gd := int64(binary.LittleEndian.Uint64(b[56:])) * 512
	return int64(binary.LittleEndian.Uint32(b[gd:])) * 512
}

// TestHostile: corrupt and hostile images are refused with one error
// naming the field and its offset, in bounded time and memory; images
// QEMU reads alike (overlapping grains) read as QEMU reads them.
func TestHostile(t *testing.T) {
	dir := t.TempDir()
	data := testutil.GenDisk(21, 1<<20, "data")
	sparse := sparseImage(t, dir, data, "monolithicSparse")
	stream := sparseImage(t, dir, data, "streamOptimized")
	vmware := sparseImage(t, dir, data, "vmware")
	le := binary.LittleEndian
	edit := func(b []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(b)) }
	cases := []struct {
		name  string
		image []byte
		want  string // in the error
	}{
		{"short header", sparse[:300], "header too short"},
		{"version 4", edit(sparse, func(b []byte) []byte { le.PutUint32(b[4:], 4); return b }), "version 4"},
		{"grain tables too large", edit(sparse, func(b []byte) []byte { le.PutUint32(b[44:], 513); return b }), "numGTEsPerGT 513"},
		{"no grain table entries", edit(sparse, func(b []byte) []byte { le.PutUint32(b[44:], 0); return b }), "numGTEsPerGT is 0"},
		{"grain size 0", edit(sparse, func(b []byte) []byte { le.PutUint64(b[20:], 0); return b }), "grainSize 0"},
		{"grain of 2 GiB", edit(sparse, func(b []byte) []byte { le.PutUint64(b[20:], 1<<22); return b }), "grainSize 4194304"},
		{"capacity 2^60", edit(sparse, func(b []byte) []byte { le.PutUint64(b[12:], 1<<60); return b }), "capacity 1152921504606846976 sectors"},
		{"grain directory too large", edit(sparse, func(b []byte) []byte { le.PutUint64(b[12:], 1<<50); return b }), "grain directory of 17179869184 entries"},
		{"grain directory past the end", edit(sparse, func(b []byte) []byte { le.PutUint64(b[56:], 1<<40); return b }), "grain directory at 0x20000000000"},
		{"grain directory across the end", edit(sparse, func(b []byte) []byte { le.PutUint64(b[12:], 1<<38); return b }), "runs past the end of the file"},
		{"first grain past the end", edit(sparse, func(b []byte) []byte { le.PutUint64(b[64:], 1<<30); return b }), "the file is truncated"},
		{"grain table past the end", edit(sparse, func(b []byte) []byte {
			gd := int64(le.Uint64(b[56:])) * 512
			le.PutUint32(b[gd:], 1<<31)
			return b
		}), "grain table at 0x10000000000 (grain directory entry 0) runs past the end"},
		{"grain past the end", edit(sparse, func(b []byte) []byte { le.PutUint32(b[gtOf(b)+4*5:], 1<<30); return b }), "grain for disk offset 0x50000 at 0x8000000000 runs past the end"},
		{"grain in the header", edit(sparse, func(b []byte) []byte { le.PutUint32(b[gtOf(b)+4*3:], 1); return b }), "grain at 0x200, inside the header"},
		{"file cut in a grain", sparse[:len(sparse)-4096], "runs past the end of the file"},
		{"descriptor in a sparse file, names a file outside", edit(sparse, func(b []byte) []byte {
			le.PutUint64(b[12:], 0)
			d := "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/hostname\" 0\n"
			copy(b[512:512*21], make([]byte, 512*20))
			copy(b[512:], d)
			return b
		}), `extent file "/etc/hostname" lies outside the descriptor's directory; pass --allow-backing`},
		// Compressed grains.
		{"compressed size 0", edit(stream, func(b []byte) []byte { le.PutUint32(b[int64(le.Uint32(b[gtOf(b):]))*512+8:], 0); return b }), "compressed size 0"},
		{"compressed size huge", edit(stream, func(b []byte) []byte {
			le.PutUint32(b[int64(le.Uint32(b[gtOf(b):]))*512+8:], 1<<31)
			return b
		}), "compressed size 2147483648"},
		{"compressed grain past the end", edit(stream, func(b []byte) []byte {
			le.PutUint32(b[int64(le.Uint32(b[gtOf(b):]))*512+8:], 100000)
			return b[:int64(le.Uint32(b[gtOf(b):]))*512+50000]
		}), "runs past the end of the file"},
		{"compressed garbage", edit(stream, func(b []byte) []byte {
			g := int64(le.Uint32(b[gtOf(b):])) * 512
			copy(b[g+12:g+40], "not a zlib stream, no no no")
			return b
		}), "compressed grain at"},
		{"compressed grains of 4 MiB", edit(stream, func(b []byte) []byte { le.PutUint64(b[20:], 8192); le.PutUint32(b[44:], 1); return b }), "compressed grains of 4194304 bytes"},
		// The footer of a streamOptimized image.
		{"no footer", vmware[:len(vmware)-1536], "no footer marker"},
		{"footer without its magic", edit(vmware, func(b []byte) []byte { copy(b[len(b)-1024:], "XXXX"); return b }), `footer at`},
		{"no end-of-stream marker", edit(vmware, func(b []byte) []byte { b[len(b)-500] = 3; return b }), "no end-of-stream marker"},
		{"footer's directory past the end", edit(vmware, func(b []byte) []byte { le.PutUint64(b[len(b)-1024+56:], 1<<40); return b }), "grain directory at 0x20000000000"},
		{"footer says GD_AT_END again", edit(vmware, func(b []byte) []byte { le.PutUint64(b[len(b)-1024+56:], 1<<64-1); return b }), "grain directory at"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".vmdk")
			if err := os.WriteFile(p, c.image, 0o644); err != nil {
				t.Fatal(err)
			}
			err := readAll(t, p, format.OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("got %v, want an error line with %q", err, c.want)
			}
		})
	}
	// Two grain table entries naming one grain: QEMU reads that grain
	// twice, and so does this package.
	overlap := edit(sparse, func(b []byte) []byte { copy(b[gtOf(b)+4*7:gtOf(b)+4*8], b[gtOf(b)+4*2:]); return b })
	p := filepath.Join(dir, "overlap.vmdk")
	os.WriteFile(p, overlap, 0o644)
	testutil.Run(t, "qemu-img", "convert", "-O", "raw", p, p+".oracle")
	src, err := open(t, p, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := oracle(t, p)
	got := make([]byte, len(want))
	if n, err := src.ReadAt(got, 0); n != len(got) || !bytes.Equal(got, want) || !bytes.Equal(got[7<<16:8<<16], data[2<<16:3<<16]) {
		t.Errorf("overlapping grains: read %d bytes (%v), not as qemu-img reads them", n, err)
	}
}

// TestDescriptorHostile: descriptors whose extents are malformed, of
// kinds not read, too many, too large, or not regular files are refused
// with one line naming the line or the file, and never hang (a FIFO).
func TestDescriptorHostile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f.bin"), make([]byte, 8192), 0o644)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	many := make([]string, 4097)
	for i := range many {
		many[i] = `RW 1 FLAT "f.bin" 0`
	}
	cases := []struct {
		name    string
		extents []string
		ctype   string
		want    string
	}{
		{"unquoted name", []string{`RW 16 FLAT f.bin 0`}, "monolithicFlat", "the file name is not quoted"},
		{"flat without offset", []string{`RW 16 FLAT "f.bin"`}, "monolithicFlat", "a FLAT extent has an offset"},
		{"vmfs with offset", []string{`RW 16 VMFS "f.bin" 2`}, "vmfs", "only a FLAT extent has an offset"},
		{"negative size", []string{`RW -16 FLAT "f.bin" 0`}, "monolithicFlat", "not a number of sectors"},
		{"raw device mapping", []string{`RW 16 VMFSRDM "f.bin"`}, "vmfs", "extent type VMFSRDM"},
		{"seSparse", []string{`RW 16 SESPARSE "f.bin"`}, "seSparse", "seSparse extent"},
		{"no access", []string{`NOACCESS 16 FLAT "f.bin" 0`}, "monolithicFlat", "NOACCESS"},
		{"custom type", []string{`RW 16 FLAT "f.bin" 0`}, "custom", `createType "custom"`},
		{"file too short", []string{`RW 17 FLAT "f.bin" 0`}, "monolithicFlat", `"f.bin": the descriptor (line 10) says 8704 bytes from 0x0, the file has 8192`},
		{"offset past the file", []string{`RW 1 FLAT "f.bin" 16`}, "monolithicFlat", "says 512 bytes from 0x2000"},
		{"missing file", []string{`RW 16 FLAT "gone.bin" 0`}, "monolithicFlat", `"gone.bin": no such file`},
		{"a FIFO", []string{`RW 16 FLAT "fifo" 0`}, "monolithicFlat", `"fifo" is not a regular file`},
		{"a directory", []string{`RW 16 FLAT "." 0`}, "monolithicFlat", `"." is not a regular file`},
		{"sparse extent not sparse", []string{`RW 16 SPARSE "f.bin"`}, "twoGbMaxExtentSparse", `extent file "f.bin" (line 10): not a sparse extent (magic "\x00\x00\x00\x00")`},
		{"too many extents", many, "twoGbMaxExtentFlat", "4097 extents (at most 4096)"},
		{"sizes that overflow", []string{`RW 9007199254740992 ZERO`, `RW 9007199254740992 ZERO`}, "monolithicFlat", "the extents add up to more than"},
		{"NUL in a name", []string{"RW 16 FLAT \"f\x00.bin\" 0"}, "monolithicFlat", "the file name has no closing quote"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".vmdk")
			os.WriteFile(p, descriptorFile(c.ctype, 1, 0xffffffff, "", c.extents...), 0o644)
			err := readAll(t, p, format.OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %v, want an error line with %q", err, c.want)
			}
		})
	}
}

// TestConsent: extent files are read from the descriptor's directory
// only; an absolute name, "..", or a symbolic link out of it needs
// AllowBacking, and each one followed is told to Note; a parent always
// needs it. A parent chain with a loop, one deeper than 16, a parent
// whose CID is not the child's parentCID, and a missing parent are
// refused.
func TestConsent(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "vm")
	os.Mkdir(dir, 0o755)
	content := testutil.GenDisk(31, 64<<10, "data")
	os.WriteFile(filepath.Join(top, "outside-flat.vmdk"), content, 0o644)
	os.WriteFile(filepath.Join(dir, "inside-flat.vmdk"), content, 0o644)
	os.Symlink(filepath.Join(top, "outside-flat.vmdk"), filepath.Join(dir, "link-flat.vmdk"))
	os.Symlink("inside-flat.vmdk", filepath.Join(dir, "innerlink-flat.vmdk"))
	flat := func(name, file string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, descriptorFile("monolithicFlat", 7, 0xffffffff, "", fmt.Sprintf("RW 128 FLAT %q 0", file)), 0o644)
		return p
	}
	chain := func(name string, cid, parentCID uint32, parent string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, descriptorFile("vmfsSparse", cid, parentCID, parent, `RW 128 FLAT "inside-flat.vmdk" 0`), 0o644)
		return p
	}
	inside, innerLink := flat("in.vmdk", "inside-flat.vmdk"), flat("innerlink.vmdk", "innerlink-flat.vmdk")
	abs := flat("abs.vmdk", filepath.Join(top, "outside-flat.vmdk"))
	dotdot := flat("dotdot.vmdk", "../outside-flat.vmdk")
	link := flat("link.vmdk", "link-flat.vmdk")
	child := chain("child.vmdk", 2, 7, "in.vmdk")
	loopA, _ := chain("loop-a.vmdk", 10, 11, "loop-b.vmdk"), chain("loop-b.vmdk", 11, 10, "loop-a.vmdk")
	deep := chain("deep0.vmdk", 100, 0xffffffff, "")
	for i := 1; i <= 17; i++ {
		deep = chain(fmt.Sprintf("deep%d.vmdk", i), uint32(100+i), uint32(99+i), filepath.Base(deep))
	}
	mismatch := chain("mismatch.vmdk", 3, 8, "in.vmdk")
	missing := chain("missing.vmdk", 4, 7, "gone.vmdk")
	for _, c := range []struct {
		path  string
		allow bool
		want  string // error, or "" for success
		note  string // a note the open must give, with consent
	}{
		{inside, false, "", ""},
		{innerLink, false, "", ""},
		{abs, false, "lies outside the descriptor's directory; pass --allow-backing to read it", ""},
		{dotdot, false, `extent file "../outside-flat.vmdk" lies outside the descriptor's directory; pass --allow-backing`, ""},
		{link, false, `extent file "link-flat.vmdk" lies outside`, ""},
		{abs, true, "", "reading extent file " + filepath.Join(top, "outside-flat.vmdk") + ", outside the descriptor's directory"},
		{dotdot, true, "", "reading extent file " + dir + "/../outside-flat.vmdk"},
		{link, true, "", "reading extent file " + dir + "/link-flat.vmdk"},
		{child, false, `the image has parent "in.vmdk"; pass --allow-backing to read it`, ""},
		{child, true, "", child + ": reading parent image " + dir + "/in.vmdk"},
		{loopA, true, "loop: loop-a.vmdk is already in the chain", ""},
		{deep, true, "a parent chain deeper than 16", ""},
		{mismatch, true, "its CID 00000007 is not the image's parentCID 00000008", ""},
		{missing, true, `parent image "gone.vmdk": no such file`, ""},
	} {
		var notes []string
		src, err := open(t, c.path, format.OpenOptions{AllowBacking: c.allow, Note: func(m string) { notes = append(notes, m) }})
		name := fmt.Sprintf("%s (allow %v)", filepath.Base(c.path), c.allow)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		case c.note != "" && !strings.Contains(strings.Join(notes, "\n"), c.note):
			t.Errorf("%s: notes %q, want one with %q", name, notes, c.note)
		case c.note == "" && len(notes) > 0 && err == nil:
			t.Errorf("%s: notes %q, want none", name, notes)
		}
		if err == nil {
			got := make([]byte, len(content))
			if n, _ := src.ReadAt(got, 0); n != len(got) || !bytes.Equal(got, content) {
				t.Errorf("%s: content differs", name)
			}
			src.Close()
		}
	}
	// The descriptor's directory, not the working directory: a relative
	// descriptor path opened from elsewhere.
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(top)
	if src, err := open(t, "vm/in.vmdk", format.OpenOptions{}); err != nil {
		t.Errorf("vm/in.vmdk from its parent directory: %v", err)
	} else {
		src.Close()
	}
}

// TestHugeHoles: a disk of the largest size Create writes, all holes, is
// written (both subformats) and read back with memory bounded by a
// constant: no table is held for the whole disk, and no grain is
// allocated.
func TestHugeHoles(t *testing.T) {
	dir := t.TempDir()
	size := int64(vmdk.MaxSize)
	for _, sub := range []string{vmdk.MonolithicSparse, vmdk.StreamOptimized} {
		v, err := format.ParseOptions(vmdk.Format, "subformat="+sub)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, sub+".vmdk")
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sink, err := vmdk.Format.Create(format.Dest{Path: p}, []format.Device{{Size: size}}, format.CreateOptions{Options: v})
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < size; off += 1 << 40 {
			if err := sink.Disk(0).ZeroAt(off, min(1<<40, size-off)); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Commit(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		// The directories of a 256 TiB disk are 32 MiB each: they are
		// written in pieces, never held.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 12<<20 {
			t.Errorf("%s: writing %d bytes of holes allocated %d MiB", sub, size, alloc>>20)
		}
		runtime.ReadMemStats(&before)
		src, err := open(t, p, format.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if src.Size() != size {
			t.Errorf("%s: size %d, want %d", sub, src.Size(), size)
		}
		// A region walk over the last TiB, and reads here and there.
		for pos := size - 1<<40; pos < size; {
			e, err := src.Region(pos, size-pos)
			if err != nil || !e.Zero {
				t.Fatalf("%s: Region(%d) = %+v, %v", sub, pos, e, err)
			}
			pos += e.Length
		}
		buf := make([]byte, 1<<20)
		for _, off := range []int64{0, size / 3, size - 1<<20} {
			if n, err := src.ReadAt(buf, off); n != len(buf) || !testutil.AllZero(buf) {
				t.Errorf("%s: ReadAt(%d) = %d, %v", sub, off, n, err)
			}
		}
		src.Close()
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 24<<20 {
			t.Errorf("%s: reading allocated %d MiB", sub, alloc>>20)
		}
	}
}

// TestDescriptorSemantics: a descriptor is read as VMware reads it where
// QEMU differs: a ZERO extent is zeros (in the zero map too), a RDONLY
// extent is read, an extent line after a blank line is read once, keys
// take spaces around "=" and unquoted values; a sparse extent's size is
// its header's, as QEMU reads it.
func TestDescriptorSemantics(t *testing.T) {
	dir := t.TempDir()
	a, b := testutil.GenDisk(41, 64<<10, "data"), testutil.GenDisk(42, 32<<10, "data")
	os.WriteFile(filepath.Join(dir, "a.bin"), a, 0o644)
	os.WriteFile(filepath.Join(dir, "b.bin"), b, 0o644)
	var s bytes.Buffer
	create(t, filepath.Join(dir, "s.vmdk"), &s, b, "subformat=streamOptimized", "seq")
	os.WriteFile(filepath.Join(dir, "s.vmdk"), s.Bytes(), 0o644)
	desc := "# Disk DescriptorFile\nversion=1\nCID = 0000abcd\nparentCID=ffffffff\ncreateType = twoGbMaxExtentFlat\n\n" +
		"RW 128 FLAT \"a.bin\" 0\n\nRW 256 ZERO\n   \nRDONLY 64 FLAT \"b.bin\" 0\nRW 1 SPARSE \"s.vmdk\"\n"
	p := filepath.Join(dir, "d.vmdk")
	os.WriteFile(p, []byte(desc), 0o644)
	want := slices.Concat(a, make([]byte, 128<<10), b, b)
	src, err := open(t, p, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := make([]byte, src.Size())
	if n, err := src.ReadAt(got, 0); n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (%v), want %d: the extents FLAT, ZERO, RDONLY FLAT, SPARSE", n, err, len(want))
	}
	if e, err := src.Region(64<<10, 128<<10); err != nil || !e.Zero || e.Length != 128<<10 {
		t.Errorf("the ZERO extent: Region = %+v, %v", e, err)
	}
}

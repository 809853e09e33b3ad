package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// The proof of the plug (issue 20): a format defined here and nowhere
// else, "xor", goes through the CLI (convert, create, info, checksum,
// compare, map, serve) and the conformance suites with no change to the
// CLI, which takes its formats from its registry. An xor file is a
// 512-byte header ("XORDISK\0", the disk's size as 8 bytes big-endian,
// the key byte) followed by the disk's bytes XOR the key. It reads at
// random and writes new files; it declares one option, key.

const (
	xorMagic  = "XORDISK\x00"
	xorHeader = 512
)

var xorFormat = format.Format{
	Name:       "xor",
	Probe:      func(head []byte) bool { return bytes.HasPrefix(head, []byte(xorMagic)) },
	Open:       xorOpen,
	Extensions: []string{".xor"},
	Create:     xorCreate,
	Options: []format.Option{{Name: "key", Type: format.OptInt, Default: "90",
		Help: "The byte every byte of the disk is XORed with", Check: func(v any) error {
			if n := v.(int64); n < 0 || n > 255 {
				return fmt.Errorf("want 0 to 255")
			}
			return nil
		}}},
	Info: func(f *os.File, st format.FileStat) (format.Info, error) {
		size, key, err := xorReadHeader(f)
		if err != nil {
			return nil, err
		}
		return format.Info{
			{Key: "filename", Label: "image", Value: st.Name, Show: format.ShowName},
			{Key: "format", Label: "file format", Value: "xor"},
			{Key: "virtual-size", Label: "virtual size", Value: size, Show: format.ShowSize},
			{Key: "key", Label: "key", Value: int(key)},
		}, nil
	},
}

func xorReadHeader(f io.ReaderAt) (size int64, key byte, err error) {
	h := make([]byte, 17)
	if _, err := f.ReadAt(h, 0); err != nil || string(h[:8]) != xorMagic {
		return 0, 0, fmt.Errorf("xor: not an xor file (%v)", err)
	}
	return int64(binary.BigEndian.Uint64(h[8:])), h[16], nil
}

func xorOpen(f *os.File, _ format.OpenOptions) (format.Image, error) {
	size, key, err := xorReadHeader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return format.SingleDisk(&xorSource{f: f, size: size, key: key}), nil
}

type xorSource struct {
	f    *os.File
	size int64
	key  byte
}

func (s *xorSource) Size() int64  { return s.size }
func (s *xorSource) Close() error { return s.f.Close() }

func (s *xorSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), s.size-off)
	n, err := s.f.ReadAt(p[:want], xorHeader+off)
	xorKey(p[:n], p[:n], s.key)
	switch {
	case int64(n) == want && want < int64(len(p)):
		return n, io.EOF
	case int64(n) == want:
		return n, nil
	case err == io.EOF || err == nil:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func xorCreate(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	if len(disks) != 1 || len(o.Configs) > 0 {
		return nil, format.Unsupported("an xor file holds one disk and no configs")
	}
	if d.Stream != nil || d.InPlace {
		return nil, format.Unsupported("xor writes new files only")
	}
	key := byte(90)
	if o.Options.Has("key") {
		key = byte(o.Options.Int("key"))
	}
	f, err := outfile.Create(d)
	if err != nil {
		return nil, err
	}
	h := make([]byte, xorHeader)
	copy(h, xorMagic)
	binary.BigEndian.PutUint64(h[8:], uint64(disks[0].Size))
	h[16] = key
	if _, err := f.WriteAt(h, 0); err != nil {
		f.Abort()
		return nil, err
	}
	return &xorSink{f: f, key: key}, nil
}

type xorSink struct {
	f   *outfile.File
	key byte
}

func (s *xorSink) Disk(int) format.DiskWriter { return s }
func (s *xorSink) Commit() error              { return s.f.Commit() }
func (s *xorSink) Abort() error               { return s.f.Abort() }

func (s *xorSink) WriteAt(p []byte, off int64) (int, error) {
	b := make([]byte, len(p))
	xorKey(b, p, s.key)
	return s.f.WriteAt(b, xorHeader+off)
}

// xorKey sets dst to src XOR key, a word at a time (subtle.XORBytes):
// under -race a loop over bytes would cost more than the tests that use
// it.
func xorKey(dst, src []byte, key byte) {
	var k [4096]byte
	for i := range k {
		k[i] = key
	}
	for len(src) > 0 {
		n := subtle.XORBytes(dst, src, k[:])
		dst, src = dst[n:], src[n:]
	}
}

func (s *xorSink) ZeroAt(off, n int64) error {
	for n > 0 { // the key's bytes, written out
		k := min(n, 1<<20)
		if _, err := s.WriteAt(make([]byte, k), off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// plugRegistry is the built-in formats and xor.
func plugRegistry() *format.Registry {
	r := all.Registry()
	r.Register(xorFormat)
	return r
}

// TestPlug: xor, registered in the CLI's registry by this test only, is
// written (by its extension, by -O, with its option), read, described,
// hashed, compared, mapped, packed into an archive and back, converted to
// and from qcow2 and served over NBD, as the built-in formats are; and it
// passes the conformance suites.
func TestPlug(t *testing.T) {
	saved := registry
	t.Cleanup(func() { registry = saved }) // first registered, last run: after serve stops
	registry = plugRegistry()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	disk := testutil.GenDisk(31, 1<<20+3*512, "mixed")
	sum := sha256.Sum256(disk)
	hexSum := hex.EncodeToString(sum[:])
	os.WriteFile(at("d.raw"), disk, 0o644)

	// Written by its extension, and by -O with its option.
	vmaconv(t, "-q", at("d.raw"), at("d.xor"))
	vmaconv(t, "-q", "-O", "xor", "-o", "key=7", at("d.raw"), at("k.bin"))
	for name, key := range map[string]byte{"d.xor": 90, "k.bin": 7} {
		b, err := os.ReadFile(at(name))
		if err != nil || !bytes.HasPrefix(b, []byte(xorMagic)) || b[16] != key || len(b) != xorHeader+len(disk) || b[xorHeader] != disk[0]^key {
			t.Fatalf("%s: not the xor file of the disk with key %d (%v)", name, key, err)
		}
	}
	_, stderr, st := runVmaconv(at("d.raw"), at("x.xor"), "-o", "nope=1")
	if st != exitUsage || stderr != "vmaconv: xor does not take option nope (it takes: key)\n" {
		t.Errorf("-o nope=1: status %d, %q", st, stderr)
	}
	stdout, _, st := runVmaconv("convert", "-o", "help", "-O", "xor", "a", "b")
	if st != exitOK || !strings.Contains(stdout, "key") || !strings.Contains(stdout, "XORed") {
		t.Errorf("-o help: status %d, %q", st, stdout)
	}

	// info, as text and as JSON.
	stdout = vmaconv(t, "info", at("d.xor"))
	if want := fmt.Sprintf("image: %s\nfile format: xor\nvirtual size: 1 MiB (%d bytes)\nkey: 90\n", at("d.xor"), len(disk)); stdout != want {
		t.Errorf("info:\n%s\nwant\n%s", stdout, want)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(vmaconv(t, "info", "--output", "json", at("k.bin"))), &info); err != nil || info["format"] != "xor" || info["key"] != 7.0 {
		t.Errorf("info --output json: %v, %v", info, err)
	}

	// checksum, compare and map.
	if got := vmaconv(t, "checksum", at("d.xor"), at("k.bin")); got != hexSum+"  "+at("d.xor")+"\n"+hexSum+"  "+at("k.bin")+"\n" {
		t.Errorf("checksum:\n%s", got)
	}
	if got := vmaconv(t, "compare", at("d.xor"), at("d.raw")); got != "Images are identical.\n" {
		t.Errorf("compare: %q", got)
	}
	changed := bytes.Clone(disk)
	changed[700000] ^= 1
	os.WriteFile(at("c.raw"), changed, 0o644)
	vmaconv(t, "-q", at("c.raw"), at("c.xor"))
	stdout, _, st = runVmaconv("compare", at("k.bin"), at("c.xor"))
	if st != compareDiffer || stdout != fmt.Sprintf("Content mismatch at offset %d!\n", 700000&^511) {
		t.Errorf("compare of different disks: status %d, %q", st, stdout)
	}
	if got := vmaconv(t, "map", "--output", "json", at("d.xor")); got != fmt.Sprintf(`[{ "start": 0, "length": %d, "depth": 0, "present": true, "zero": false, "data": true, "compressed": false}]`+"\n", len(disk)) {
		t.Errorf("map: %s", got)
	}

	// Into an archive (convert and create) and back, to and from qcow2.
	vmaconv(t, "-q", at("d.xor"), at("d.vma"))
	vmaconv(t, "-q", "create", at("two.vma"), "drive-scsi0="+at("d.xor"), "drive-scsi1="+at("k.bin"))
	vmaconv(t, "-q", at("two.vma:scsi1"), at("back.xor"))
	vmaconv(t, "-q", at("d.xor"), at("d.qcow2"))
	vmaconv(t, "-q", "-o", "key=200", at("d.qcow2"), at("q.xor"))
	got := vmaconv(t, "checksum", at("d.vma"), at("two.vma"), at("back.xor"), at("d.qcow2"), at("q.xor"))
	if n := strings.Count(got, hexSum+"  "); n != 6 {
		t.Errorf("checksums after the round trips: %d of 6 are the disk's:\n%s", n, got)
	}

	// Served over NBD: qemu-img reads it as the raw disk.
	if testutil.RequireTool(t, "qemu-img") != "" {
		uris := serving(t, at("d.xor"), "--socket", at("s"))
		qemuImg(t, "compare", "-f", "raw", at("d.raw"), uris["disk"])
	}

	// The conformance suites: the source, and every sink of the registry
	// from every source, xor among both.
	f, err := os.Open(at("d.xor"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := xorFormat.Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	formattest.TestSource(t, img.Disks()[0].Source, disk)
	formattest.TestSinks(t, registry, []string{at("d.xor"), at("d.raw")}, disk)
}

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// check runs diskcheck and returns its output, or fails the test.
func check(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(args, &out); err != nil {
		t.Fatalf("diskcheck %v: %v", args, err)
	}
	return out.String()
}

// rawLine is diskcheck raw's digest and size of data.
func rawLine(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(check(t, "raw", p))
	return f[1] + " " + f[2]
}

// TestGolden: the archives Proxmox's vma wrote pass, and every device's
// digest is that of its content (read by format/vma, whose sha256 is the
// manifest's): two independent readers agree on Proxmox's bytes.
func TestGolden(t *testing.T) {
	dir, m := testutil.LoadManifest(t)
	for name, a := range m {
		if filepath.Ext(name) != ".vma" {
			continue
		}
		out := check(t, "vma", filepath.Join(dir, name))
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ar, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range ar.Devices() {
			data := make([]byte, d.Size())
			if _, err := d.ReadAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%x", sha256.Sum256(data)) != a.Devices[i].SHA256 {
				t.Fatalf("%s: device %s is not the manifest's", name, d.Device().Name)
			}
			if want := "disk " + rawLine(t, data) + " " + d.Device().Name + "\n"; !strings.Contains(out, want) {
				t.Errorf("%s: diskcheck says\n%s; want a line %q", name, out, want)
			}
		}
		for _, c := range a.Configs {
			if want := fmt.Sprintf("config %s %d %s\n", c.SHA256, c.Size, c.Name); !strings.Contains(out, want) {
				t.Errorf("%s: diskcheck says\n%s; want a line %q", name, out, want)
			}
		}
	}
}

// TestDamage: an archive of two interleaved disks, neither a whole number
// of clusters, gives the digests of its disks; damage that Proxmox's
// reader or a restore refuses is an error naming where, and a changed
// data byte changes the digest.
func TestDamage(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 7<<20+5*4096+100, "mixed")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 540672, "mixed")},
	}
	conf := []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}
	good := testutil.WriteArchive(t, disks, conf, "runs", 3)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := ""
	for _, c := range conf {
		want += fmt.Sprintf("config %x %d %s\n", sha256.Sum256(c.Data), len(c.Data), c.Name)
	}
	for _, d := range disks {
		want += "disk " + rawLine(t, d.Data) + " " + d.Name + "\n"
	}
	if got := check(t, "vma", write("good.vma", good)); got != want {
		t.Fatalf("diskcheck vma says\n%s; want\n%s", got, want)
	}

	hs := int(binary.BigEndian.Uint32(good[56:]))
	extents := []int{} // offsets of the extents
	for off := hs; off < len(good); {
		extents = append(extents, off)
		off += 512 + 4096*int(binary.BigEndian.Uint16(good[off+6:]))
	}
	last := extents[len(extents)-1]
	second := good[extents[1]:extents[2]]
	flipped := bytes.Clone(good)
	flipped[extents[0]+512+100] ^= 1 // data is not covered by any MD5
	if got := check(t, "vma", write("flipped.vma", flipped)); got == want {
		t.Error("a flipped data byte leaves the digests as they were")
	}
	for _, c := range []struct {
		name  string
		b     []byte
		match string
	}{
		{"cut", good[:last], "missing"},
		{"repeated", append(bytes.Clone(good[:extents[2]]), append(bytes.Clone(second), good[extents[2]:]...)...), fmt.Sprintf("extent at byte %d: slot 0: cluster", extents[2])},
		{"trailing", append(bytes.Clone(good), make([]byte, 512)...), fmt.Sprintf("extent at byte %d: MD5 mismatch", len(good))},
		{"short-tail", append(bytes.Clone(good), make([]byte, 100)...), fmt.Sprintf("extent at byte %d: 100 bytes", len(good))},
		{"header", func() []byte { b := bytes.Clone(good); b[5000]++; return b }(), "header: MD5 mismatch"},
		{"extent-header", func() []byte { b := bytes.Clone(good); b[extents[1]+45]++; return b }(), fmt.Sprintf("extent at byte %d: MD5 mismatch", extents[1])},
		{"data-cut", good[:last+512+4096], fmt.Sprintf("extent at byte %d: ", last)},
	} {
		var out bytes.Buffer
		err := run([]string{"vma", write(c.name+".vma", c.b)}, &out)
		if err == nil || !strings.Contains(err.Error(), c.match) {
			t.Errorf("%s: %v; want an error containing %q", c.name, err, c.match)
		}
	}
}

// TestRawHoles: a sparse file's digest, holes skipped, is that of its
// bytes read as a stream, wherever its data lies: inside a piece, across
// pieces, after long holes, at the end; and -size is the file extended.
func TestRawHoles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sparse.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8<<20 + 12345
	f.Truncate(size)
	for _, off := range []int64{3<<20 + 4096*7, 5<<20 - 8192, 7 << 20, size - 100} {
		f.WriteAt(bytes.Repeat([]byte{byte(off >> 12)}, 10000)[:min(10000, size-off)], off)
	}
	f.Close()
	content, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.Write(content); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	stream := check(t, "raw", "-")
	os.Stdin = old
	r.Close()
	if file := check(t, "raw", p); strings.TrimSuffix(file, p+"\n") != strings.TrimSuffix(stream, "-\n") {
		t.Errorf("file %s, stream %s", file, stream)
	}
	padded := check(t, "raw", "-size", "20M", p)
	os.Truncate(p, 20<<20)
	if file := check(t, "raw", p); file != padded {
		t.Errorf("-size 20M: %s; the file extended: %s", padded, file)
	}
}

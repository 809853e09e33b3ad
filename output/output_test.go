package output_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/output"
)

// TestChoose: a destination's format is the one named, else standard
// output's by the input, an archive into a directory, the extension's;
// foreign and compressor names are refused with the way out; anything else
// is raw, with a note for a file name.
func TestChoose(t *testing.T) {
	reg := all.Registry()
	reg.Register(format.Format{Name: "readonly", Probe: func([]byte) bool { return false }})
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("exists.bin"), nil, 0o644)
	for _, tc := range []struct {
		dst   string
		o     output.Options
		want  string // format, or "error: …" for a usage error
		noted bool
	}{
		{"x.qcow2", output.Options{Forced: "raw"}, "raw", false},
		{"x", output.Options{Forced: "nope"}, `error: unknown format "nope" (known: ova, qcow2, raw, readonly, vdi, vhdx, vma, vmdk, vpc)`, false},
		{"x", output.Options{Forced: "readonly"}, "error: readonly cannot be written", false},
		{"-", output.Options{FromArchive: true}, "raw", false},
		{"-", output.Options{}, "vma", false},
		{dir, output.Options{}, "vma", false},
		{at("a.QCOW2"), output.Options{}, "qcow2", false},
		{at("a.vma.zst"), output.Options{}, "vma", false},
		{at("a.img"), output.Options{}, "raw", false},
		{at("a.vmdk"), output.Options{}, "vmdk", false},
		{at("a.qed"), output.Options{}, "error: " + at("a.qed") + ": vmaconv does not write QED images: write qcow2 or raw and convert that (qemu-img convert -O qed disk.qcow2 " + at("a.qed") + "), or pass -O raw to write raw bytes under this name", false},
		{at("a.VHD"), output.Options{}, "vpc", false},
		{at("a.vma.xz"), output.Options{}, "error: " + at("a.vma.xz") + ": vmaconv does not write xz; it compresses archives as .vma.zst (zstd) or .vma.gz (gzip), which Proxmox restores", false},
		{at("a.vma.zst.bz2"), output.Options{}, "error: " + at("a.vma.zst.bz2") + ": vmaconv does not write bzip2-compressed images; it compresses archives (.vma.zst, .vma.gz) and qcow2 clusters (--compress): write " + at("a.vma.zst") + " and compress that, or pass -O raw to write raw bytes under this name", false},
		{at("a.raw.gz"), output.Options{}, "error: " + at("a.raw.gz") + ": vmaconv does not write gzip-compressed images; it compresses archives (.vma.zst, .vma.gz) and qcow2 clusters (--compress): write " + at("a.raw") + " and compress that, or pass -O raw to write raw bytes under this name", false},
		{at("a.data"), output.Options{}, "raw", true},
		{at("exists.bin"), output.Options{}, "raw", true},
		{"/dev/null", output.Options{}, "raw", false},
	} {
		var notes []string
		tc.o.Note = func(m string) { notes = append(notes, m) }
		fm, err := output.Choose(reg, tc.dst, tc.o)
		got := fm.Name
		if err != nil {
			got = "error: " + err.Error()
			if !errors.Is(err, format.ErrUnsupportedOption) {
				got += " (not a usage error)"
			}
		}
		if got != tc.want {
			t.Errorf("Choose(%s, %+v) = %s, want %s", tc.dst, tc.o.Forced, got, tc.want)
		}
		if want := tc.dst + ": no known extension, writing raw (pass -O raw to say so)"; tc.noted != (len(notes) == 1 && notes[0] == want) || len(notes) > 1 {
			t.Errorf("Choose(%s): notes %q", tc.dst, notes)
		}
	}
}

// TestReadConfigs: -c FILE is stored under its base name, -c NAME=FILE
// under NAME (unless NAME=FILE is itself a file), and a file larger than
// an archive holds is a usage error, read no further than one byte past
// the limit.
func TestReadConfigs(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("qemu-server.conf"), []byte("memory: 512\n"), 0o644)
	os.WriteFile(at("a=b.conf"), []byte("eq"), 0o644)
	cs, err := output.ReadConfigs([]string{at("qemu-server.conf"), "x.conf=" + at("qemu-server.conf"), at("a=b.conf")}, 100)
	if err != nil || len(cs) != 3 || cs[0].Name != "qemu-server.conf" || cs[1].Name != "x.conf" || string(cs[1].Data) != "memory: 512\n" || cs[2].Name != "a=b.conf" {
		t.Errorf("ReadConfigs: %+v, %v", cs, err)
	}
	_, err = output.ReadConfigs([]string{"/dev/zero"}, 100)
	if !errors.Is(err, format.ErrUnsupportedOption) || err.Error() != "/dev/zero: a config file holds at most 100 bytes" {
		t.Errorf("-c /dev/zero: %v", err)
	}
	if cs, err := output.ReadConfigs([]string{at("qemu-server.conf")}, 12); err != nil || len(cs) != 1 {
		t.Errorf("a config of the limit's size: %v", err)
	}
	for _, arg := range []string{at("missing"), "d/x.conf=" + at("qemu-server.conf")} { // a NAME with a slash is a path
		if _, err := output.ReadConfigs([]string{arg}, 100); !errors.Is(err, os.ErrNotExist) || errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("-c %s: %v", arg, err)
		}
	}
}

// TestCreate: standard output is the stream given, unless it is a
// terminal or asked to be written in place; a file is never a stream.
func TestCreate(t *testing.T) {
	reg := all.Registry()
	raw, _ := reg.Lookup("raw")
	devs := []format.Device{{Size: 4096}}
	var buf bytes.Buffer
	for _, tc := range []struct {
		d        format.Dest
		terminal bool
		want     string
	}{
		{format.Dest{Path: "-", Stream: &buf}, true, "refusing to write raw data to a terminal: redirect it to a file (> out) or pipe it (| ssh host …)"},
		{format.Dest{Path: "-", Stream: &buf, InPlace: true}, false, "-n writes into an existing file; - is standard output"},
	} {
		if _, err := output.Create(raw, tc.d, devs, format.CreateOptions{}, tc.terminal); !errors.Is(err, format.ErrUnsupportedOption) || err.Error() != tc.want {
			t.Errorf("Create(%+v, terminal %v): %v, want %s", tc.d, tc.terminal, err, tc.want)
		}
	}
	s, err := output.Create(raw, format.Dest{Path: "-", Stream: &buf}, devs, format.CreateOptions{}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.Disk(0).WriteAt([]byte("data"), 0)
	s.Disk(0).ZeroAt(4, 4092)
	if err := s.Commit(); err != nil || buf.Len() != 4096 || !strings.HasPrefix(buf.String(), "data") {
		t.Errorf("standard output: %d bytes, %v", buf.Len(), err)
	}
	dst := filepath.Join(t.TempDir(), "out.raw")
	buf.Reset()
	s, err = output.Create(raw, format.Dest{Path: dst, Stream: &buf}, devs, format.CreateOptions{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(); err != nil || buf.Len() != 0 {
		t.Errorf("a file written to the stream: %d bytes, %v", buf.Len(), err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() != 4096 {
		t.Errorf("the file: %v", err)
	}
}

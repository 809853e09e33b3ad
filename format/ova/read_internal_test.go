package ova

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// entry is a member of a tar built by buildTar.
type entry struct {
	name string
	data []byte
	typ  byte   // tar.TypeReg if 0
	link string // a link's target
}

func buildTar(t testing.TB, es ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: e.typ, Linkname: e.link, Format: tar.FormatUSTAR}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(e.data)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// simpleOVF is the descriptor of a VM with one SCSI disk whose file is
// href.
func simpleOVF(href string, capacity int64) []byte {
	h := &Hardware{Name: "simple", Sockets: 1, Cores: 1, MemoryMiB: 512, Version: 14, OS: osTypes["l26"],
		Controllers: []Controller{{Bus: BusSCSI, SubType: "lsilogic"}},
		Disks:       []Disk{{Key: "scsi0", Device: "drive-scsi0", Capacity: capacity, File: href, FileSize: -1}}}
	return h.OVF()
}

func mfLine(name string, data []byte) string {
	sum := sha256.Sum256(data)
	return manifestLine("SHA256", name, sum[:])
}

func openBytes(b []byte, o format.OpenOptions) (*image, error) {
	return openPackage(bytes.NewReader(b), int64(len(b)), o, rawDriver)
}

// TestOpenPackage reads an OVA written by the sink back: its disks, its
// config, its manifest checked; a disk altered fails its Check, naming
// its file; the descriptor altered fails Open.
func TestOpenPackage(t *testing.T) {
	path, data := writeOVA(t, t.TempDir(), "seq", layoutDevices, layoutConfig)
	ova, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	img, err := openBytes(ova, format.OpenOptions{Note: collect(&notes)})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	ds := img.Disks()
	if len(ds) != 2 || ds[0].Name != "drive-scsi0" || ds[1].Name != "drive-sata0" || ds[1].Source.Size() != 300032 {
		t.Fatalf("disks %+v", ds)
	}
	for i, k := range []int{1, 3} {
		got := make([]byte, ds[i].Source.Size())
		if _, err := ds[i].Source.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(data[k])], data[k]) || !testutil.AllZero(got[len(data[k]):]) {
			t.Errorf("%s differs", ds[i].Name)
		}
		if err := ds[i].Source.(format.Checker).Check(); err != nil {
			t.Errorf("%s: %v", ds[i].Name, err)
		}
	}
	cs := img.Configs()
	if len(cs) != 1 || cs[0].Name != vma.ConfigName || !strings.Contains(string(cs[0].Data), "#qmdump#map:sata0:drive-sata0:::\n") ||
		!strings.Contains(string(cs[0].Data), "\n# UEFI (bios: ovmf) without the EFI variables") {
		t.Errorf("configs %q", cs)
	}
	if !img.Created().Equal(testutil.TestCTime) {
		t.Errorf("created %v", img.Created())
	}
	if len(notes) != 0 {
		t.Errorf("notes %q", notes)
	}

	// A byte of the second disk's member changed.
	bad := bytes.Clone(ova)
	i := bytes.LastIndex(bad, data[3][:4096])
	bad[i+100] ^= 1
	img2, err := openBytes(bad, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = img2.Disks()[1].Source.(format.Checker).Check()
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "layout-disk2.vmdk: its SHA256 is") || !strings.Contains(err.Error(), "layout.mf") {
		t.Errorf("a disk altered: %v", err)
	}
	img2.Close()
	// A byte of the descriptor changed.
	bad = bytes.Clone(ova)
	i = bytes.Index(bad, []byte("<Name>layout</Name>"))
	bad[i+7] = 'L'
	if _, err := openBytes(bad, format.OpenOptions{}); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "ova: layout.ovf: its SHA256 is") {
		t.Errorf("the descriptor altered: %v", err)
	}
}

// TestHostile opens packages built to hurt: each fails with one line
// naming what is wrong, in bounded time and memory.
func TestHostile(t *testing.T) {
	disk := bytes.Repeat([]byte{7}, 4096)
	ovf := simpleOVF("disk.vmdk", 4096)
	ok := []entry{{name: "vm.ovf", data: ovf}, {name: "disk.vmdk", data: disk}}
	withMF := func(mf string, es ...entry) []byte {
		return buildTar(t, append([]entry{es[0], {name: "vm.mf", data: []byte(mf)}}, es[1:]...)...)
	}
	bomb := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>` +
		`<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Name>&lol3;</Name></VirtualSystem></Envelope>`
	xee := `<?xml version="1.0"?><!DOCTYPE some [<!ENTITY external SYSTEM "file:///etc/passwd">]>` +
		`<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Name>&external;</Name></VirtualSystem></Envelope>`
	huge := buildTar(t, ok...)
	// The disk member's size field: 077777777777 bytes.
	at := bytes.Index(huge, []byte("disk.vmdk\x00"))
	copy(huge[at+124:at+136], "77777777777\x00")
	setChecksum(huge[at : at+blockSize])
	many := []entry{{name: "vm.ovf", data: ovf}}
	for i := range maxMembers {
		many = append(many, entry{name: fmt.Sprintf("f%d", i)})
	}
	for _, c := range []struct {
		name string
		tar  []byte
		err  error
		want string
	}{
		{"empty", buildTar(t), ErrCorrupt, "an empty tar archive"},
		{"not a tar", []byte(strings.Repeat("x", 2048)), ErrCorrupt, "tar header"},
		{"no descriptor", buildTar(t, entry{name: "disk.vmdk", data: disk}), format.ErrUnknownFormat, "no OVF descriptor"},
		{"dot-dot", buildTar(t, entry{name: "vm.ovf", data: simpleOVF("../disk.vmdk", 4096)}, entry{name: "../disk.vmdk", data: disk}), ErrCorrupt, `the file reference ../disk.vmdk leaves the archive`},
		{"absolute", buildTar(t, entry{name: "vm.ovf", data: simpleOVF("/etc/passwd", 4096)}), ErrCorrupt, "the file reference /etc/passwd leaves the archive"},
		{"escaped", buildTar(t, entry{name: "vm.ovf", data: simpleOVF("%2e%2e/x", 4096)}), ErrCorrupt, "leaves the archive"},
		{"URL", buildTar(t, entry{name: "vm.ovf", data: simpleOVF("http://example.com/disk.vmdk", 4096)}), ErrUnsupported, "is a URL"},
		{"symlink", buildTar(t, ok[0], entry{name: "disk.vmdk", typ: tar.TypeSymlink, link: "/etc/passwd"}), ErrCorrupt, "disk.vmdk: the disk's file is a symbolic link (to /etc/passwd)"},
		{"hard link", buildTar(t, ok[0], entry{name: "disk.vmdk", typ: tar.TypeLink, link: "vm.ovf"}), ErrCorrupt, "a hard link (to vm.ovf)"},
		{"directory", buildTar(t, ok[0], entry{name: "disk.vmdk", typ: tar.TypeDir}), ErrCorrupt, "a directory"},
		{"twice", buildTar(t, ok[0], ok[1], ok[1]), ErrCorrupt, "2 members named disk.vmdk"},
		{"missing", buildTar(t, ok[0]), ErrCorrupt, "the archive holds no member disk.vmdk"},
		{"descriptor past the end", huge[:len(huge)-2048], ErrCorrupt, "runs past the end"},
		{"huge member", huge, ErrCorrupt, "disk.vmdk: its data (8589934591 bytes at byte offset"},
		{"truncated", buildTar(t, ok...)[:1536+2048], ErrCorrupt, "runs past the end"},
		{"descriptor too large", buildTar(t, entry{name: "vm.ovf", data: bytes.Repeat([]byte(" "), MaxOVFSize+1)}), ErrCorrupt, "over the 4194304 an OVF descriptor may have"},
		{"descriptor a link", buildTar(t, entry{name: "vm.ovf", typ: tar.TypeSymlink, link: "/etc/passwd"}), ErrCorrupt, "the OVF descriptor is a symbolic link"},
		{"descriptor out", buildTar(t, entry{name: "../vm.ovf", data: ovf}), ErrCorrupt, "the descriptor's name leaves the archive"},
		{"too many members", buildTar(t, many...), ErrCorrupt, "more members than an OVA holds (4096)"},
		{"XML bomb", buildTar(t, entry{name: "vm.ovf", data: []byte(bomb)}), ErrCorrupt, "invalid character entity &lol3;"},
		{"external entity", buildTar(t, entry{name: "vm.ovf", data: []byte(xee)}), ErrCorrupt, "invalid character entity &external;"},
		{"not OVF", buildTar(t, entry{name: "vm.ovf", data: []byte(`<html/>`)}), ErrCorrupt, "the root element is <html>"},
		{"collection", buildTar(t, entry{name: "vm.ovf", data: []byte(`<Envelope xmlns="` + nsOVF + `"><VirtualSystemCollection/></Envelope>`)}), ErrUnsupported, "VirtualSystemCollection"},
		{"no system", buildTar(t, entry{name: "vm.ovf", data: []byte(`<Envelope xmlns="` + nsOVF + `"/>`)}), ErrCorrupt, "no VirtualSystem"},
		{"capacity", buildTar(t, entry{name: "vm.ovf", data: bytes.Replace(ovf, []byte(`ovf:capacity="4"`), []byte(`ovf:capacity="99999999999999999999"`), 1)}), ErrCorrupt, "capacity"},
		{"capacity units", buildTar(t, entry{name: "vm.ovf", data: bytes.Replace(ovf, []byte(`byte * 2^10`), []byte(`byte * 2^60`), 1)}), ErrCorrupt, `allocation unit "byte * 2^60" is too large`},
		{"memory", buildTar(t, entry{name: "vm.ovf", data: bytes.Replace(ovf, []byte(`<rasd:VirtualQuantity>512</rasd:VirtualQuantity>`), []byte(`<rasd:VirtualQuantity>-5</rasd:VirtualQuantity>`), 1)}), ErrCorrupt, "memory"},
		{"compressed file", buildTar(t, entry{name: "vm.ovf", data: bytes.Replace(ovf, []byte(`ovf:id="file1"`), []byte(`ovf:id="file1" ovf:compression="gzip"`), 1)}), ErrUnsupported, "gzip-compressed"},
		{"manifest mismatch", withMF(mfLine("vm.ovf", []byte("other")), ok...), ErrChecksum, "ova: vm.ovf: its SHA256 is"},
		{"manifest names a stranger", withMF(mfLine("vm.ovf", ovf)+mfLine("evil.vmdk", nil), ok...), ErrCorrupt, "the manifest names evil.vmdk, which the archive does not hold"},
		{"manifest garbage", withMF("SHA256(vm.ovf)= zz\n", ok...), ErrCorrupt, "vm.mf: line 1: the SHA256 digest of vm.ovf is not 64 hex digits"},
		{"manifest algorithm", withMF("MD5(vm.ovf)= 00\n", ok...), ErrCorrupt, `unknown digest algorithm "MD5"`},
		{"manifest twice", withMF(mfLine("vm.ovf", ovf)+mfLine("vm.ovf", ovf), ok...), ErrCorrupt, "vm.ovf is named twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			img, err := openBytes(c.tar, format.OpenOptions{})
			if err == nil {
				img.Close()
			}
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v\nwant %v: …%s…", err, c.err, c.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
	// What stays readable: a manifest in CRLF lines, SHA1 and SHA512, a
	// member named ./disk.vmdk.
	mf := strings.ReplaceAll(mfLine("vm.ovf", ovf), "\n", "\r\n")
	img, err := openBytes(withMF(mf, ok[0], entry{name: "./disk.vmdk", data: disk}), format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Disks()) != 1 || img.Disks()[0].Source.Size() != 4096 {
		t.Errorf("disks %+v", img.Disks())
	}
	img.Close()
}

// TestManifest reads the lines ovftool and ova-compose write.
func TestManifest(t *testing.T) {
	ds, err := parseManifest([]byte("SHA1(a b (1).vmdk)=da39a3ee5e6b4b0d3255bfef95601890afd80709\r\nsha512(c)= " + strings.Repeat("00", 64) + "\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Algorithm != "SHA1" || ds[0].File != "a b (1).vmdk" || len(ds[0].Sum) != 20 || ds[1].Algorithm != "SHA512" || ds[1].File != "c" {
		t.Errorf("%+v", ds)
	}
	if _, err := parseManifest(make([]byte, MaxManifestSize+1)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a huge manifest: %v", err)
	}
	if _, err := parseManifest([]byte("SHA256 vm.ovf 00\n")); err == nil || !strings.Contains(err.Error(), "line 1: not ALGORITHM(FILE)= DIGEST") {
		t.Errorf("a line without parentheses: %v", err)
	}
}

// TestOpenOVF reads a bare descriptor with its files beside it: files
// outside its directory (.., absolute, a symbolic link out) only with
// consent, each followed said.
func TestOpenOVF(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pkg")
	os.Mkdir(dir, 0o755)
	disk := bytes.Repeat([]byte{9}, 8192)
	os.WriteFile(filepath.Join(dir, "disk.raw"), disk, 0o644)
	os.WriteFile(filepath.Join(root, "outside.raw"), disk, 0o644)
	os.Symlink(filepath.Join(root, "outside.raw"), filepath.Join(dir, "link.raw"))
	for _, c := range []struct {
		href    string
		escapes bool
	}{
		{"disk.raw", false},
		{"../outside.raw", true},
		{filepath.Join(root, "outside.raw"), true},
		{"link.raw", true},
	} {
		p := filepath.Join(dir, "vm.ovf")
		ovf := simpleOVF(c.href, 8192)
		os.WriteFile(p, ovf, 0o644)
		os.WriteFile(filepath.Join(dir, "vm.mf"), []byte(mfLine("vm.ovf", ovf)+mfLine(c.href, disk)), 0o644)
		for _, allow := range []bool{false, true} {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			var notes []string
			img, err := openFile(f, format.OpenOptions{AllowBacking: allow, Note: collect(&notes)}, rawDriver)
			switch {
			case c.escapes && !allow:
				if !errors.Is(err, format.ErrUnsupportedOption) || !strings.Contains(err.Error(), "--allow-backing") || !strings.Contains(err.Error(), c.href) {
					t.Errorf("%s: %v, want a refusal naming it and --allow-backing", c.href, err)
				}
				f.Close()
				continue
			case err != nil:
				t.Errorf("%s (allow %v): %v", c.href, allow, err)
				f.Close()
				continue
			}
			src := img.Disks()[0].Source
			got := make([]byte, 8192)
			if _, err := src.ReadAt(got, 0); err != nil || !bytes.Equal(got, disk) {
				t.Errorf("%s: read %v", c.href, err)
			}
			if err := src.(format.Checker).Check(); err != nil {
				t.Errorf("%s: %v", c.href, err)
			}
			if c.escapes != hasNote(notes, "following") {
				t.Errorf("%s: notes %q", c.href, notes)
			}
			img.Close()
		}
	}
	// A bare descriptor read through OpenAt has no directory.
	ovf := simpleOVF("disk.raw", 8192)
	if _, err := openPackage(bytes.NewReader(ovf), int64(len(ovf)), format.OpenOptions{}, rawDriver); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "open the .ovf file itself") {
		t.Errorf("a bare descriptor through OpenAt: %v", err)
	}
}

// TestProbe checks what is taken for an OVA or an OVF.
func TestProbe(t *testing.T) {
	ova := buildTar(t, entry{name: "vm.ovf", data: simpleOVF("d.vmdk", 512)})
	var gnu bytes.Buffer // a long name first: the descriptor's header after the name's
	tw := tar.NewWriter(&gnu)
	tw.WriteHeader(&tar.Header{Name: strings.Repeat("n", 120) + ".ovf", Size: 3, Mode: 0o644, Format: tar.FormatGNU})
	tw.Write([]byte("abc"))
	tw.Close()
	var pax bytes.Buffer // a long name in a PAX header
	tw = tar.NewWriter(&pax)
	tw.WriteHeader(&tar.Header{Name: strings.Repeat("p", 120) + ".ovf", Size: 3, Mode: 0o644, Format: tar.FormatPAX})
	tw.Write([]byte("abc"))
	tw.Close()
	for _, c := range []struct {
		name string
		head []byte
		want bool
	}{
		{"OVA", ova, true},
		{"OVA, a PAX name", pax.Bytes(), true},
		{"OVA, a long name", gnu.Bytes(), true},
		{"OVF", simpleOVF("d.vmdk", 512), true},
		{"OVF with a BOM", append([]byte("\xef\xbb\xbf\n"), simpleOVF("d.vmdk", 512)...), true},
		{"another tar", buildTar(t, entry{name: "a.txt", data: []byte("x")}), false},
		{"a checksum off", append(append([]byte(nil), ova[:148]...), append([]byte("0000000\x00"), ova[156:]...)...), false},
		{"XML", []byte(`<?xml version="1.0"?><html/>`), false},
		{"VMA", []byte("VMA\x00"), false},
		{"short", []byte("us"), false},
	} {
		if got := Probe(c.head[:min(len(c.head), 4096)]); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestInfo describes an OVA from its descriptor.
func TestInfo(t *testing.T) {
	path, _ := writeOVA(t, t.TempDir(), "seq", layoutDevices, layoutConfig)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	in, err := fileInfo(f, fi.Size(), format.FileStat{Name: "layout.ova", Size: fi.Size()})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	in.WriteText(&b)
	want := `file: layout.ova
format: ova
descriptor: layout.ovf
name: layout
hardware version: vmx-14
guest OS: other (VMware otherGuest64, CIM 102)
CPUs: 1 (1 socket(s) × 1 core(s))
memory: 1 GiB (1073741824 bytes)
firmware: efi
manifest: layout.mf (SHA256)
disks: 2
  scsi0  SCSI 0:0 lsilogic          layout-disk1.vmdk  1 MiB (1048576 bytes)
  sata0  SATA 0:0 vmware.sata.ahci  layout-disk2.vmdk  293 KiB (300032 bytes)
NICs: 1
  e1000  vmbr0
`
	if b.String() != want {
		t.Errorf("info\n%s\nwant\n%s", b.String(), want)
	}
	js, err := in.MarshalJSON()
	if err != nil || !bytes.Contains(js, []byte(`"cpus":1,"sockets":1,"cores":1,"memory":1073741824,"firmware":"efi"`)) {
		t.Errorf("JSON %s: %v", js, err)
	}
	if _, err := io.ReadAll(f); err != nil {
		t.Fatal(err)
	}
}

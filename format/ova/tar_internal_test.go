package ova

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// layoutConfig is a VM of two disks (one of an odd size), an EFI disk
// and a saved RAM state, which the OVA leaves out.
const layoutConfig = "bios: ovmf\ncores: 1\nmemory: 1024\nname: layout\nscsi0: x:vm-1-disk-0,size=1M\nsata0: x:vm-1-disk-1\nnet0: e1000=BC:24:11:00:00:01,bridge=vmbr0\n"

var layoutDevices = []format.Device{
	{Name: "drive-efidisk0", Size: 8192},
	{Name: "drive-scsi0", Size: 1 << 20},
	{Name: "vmstate", Size: 5000},
	{Name: "drive-sata0", Size: 300000}, // not whole sectors: padded to 300032
}

// writeOVA writes an OVA of devs (content from testutil.GenDisk) to dir
// with the raw stand-in for VMDK; order says how the disks' data comes:
// "seq" disk after disk, "interleave" in turns of 64 KiB (the first
// disk's last), "reverse" the last disk first.
func writeOVA(t *testing.T, dir, order string, devs []format.Device, conf string) (string, [][]byte) {
	t.Helper()
	path := filepath.Join(dir, "layout.ova")
	var notes []string
	s, err := create(format.Dest{Path: path}, devs, format.CreateOptions{
		Configs: []format.Config{{Name: vma.ConfigName, Data: []byte(conf)}, {Name: "qemu-server.fw", Data: []byte("x")}},
		From:    &format.Origin{CTime: testutil.TestCTime}, Note: collect(&notes)}, rawDriver)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	data := make([][]byte, len(devs))
	for i, d := range devs {
		data[i] = testutil.GenDisk(uint64(i), d.Size, "mixed")
	}
	const chunk = 64 << 10
	put := func(i int, off int64) {
		n := min(chunk, devs[i].Size-off)
		b := data[i][off : off+n]
		if testutil.AllZero(b) {
			err = s.Disk(i).ZeroAt(off, n)
		} else {
			_, err = s.Disk(i).WriteAt(b, off)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	switch order {
	case "seq", "reverse":
		idx := []int{0, 1, 2, 3}
		if order == "reverse" {
			slices.Reverse(idx)
		}
		for _, i := range idx {
			for off := int64(0); off < devs[i].Size; off += chunk {
				put(i, off)
			}
		}
	case "interleave":
		for off := int64(0); ; off += chunk {
			n := 0
			for i := len(devs) - 1; i >= 0; i-- {
				if off < devs[i].Size {
					put(i, off)
					n++
				}
			}
			if n == 0 {
				break
			}
		}
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"config qemu-server.fw is not exported", "drive-efidisk0: the EFI variables", "vmstate: the VM's saved RAM"} {
		if !hasNote(notes, n) {
			t.Errorf("no note %q in %q", n, notes)
		}
	}
	return path, data
}

// TestLayout checks the tar an OVA is: descriptor, manifest, a VMDK per
// disk, in that order, ustar headers, the manifest's sums, the OVF's file
// sizes; the same bytes whatever the order the disks' data comes in, and
// nothing left beside it.
func TestLayout(t *testing.T) {
	dir := t.TempDir()
	path, data := writeOVA(t, dir, "seq", layoutDevices, layoutConfig)
	ova, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ova)%blockSize != 0 || !testutil.AllZero(ova[len(ova)-2*blockSize:]) {
		t.Errorf("%d bytes, the last two blocks %x…", len(ova), ova[len(ova)-2*blockSize:][:16])
	}
	tr := tar.NewReader(bytes.NewReader(ova))
	members := map[string][]byte{}
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Format != tar.FormatUSTAR || h.Typeflag != tar.TypeReg || h.Mode != 0o644 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(testutil.TestCTime) {
			t.Errorf("%s: format %v type %c mode %o owner %d/%d mtime %v", h.Name, h.Format, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		members[h.Name] = b
	}
	if want := []string{"layout.ovf", "layout.mf", "layout-disk1.vmdk", "layout-disk2.vmdk"}; !slices.Equal(names, want) {
		t.Fatalf("members %q, want %q", names, want)
	}
	// The stand-in writes the disk's bytes, padded to whole sectors.
	if !bytes.Equal(members["layout-disk1.vmdk"], data[1]) ||
		!bytes.Equal(members["layout-disk2.vmdk"], append(slices.Clone(data[3]), make([]byte, 32)...)) {
		t.Errorf("disk members differ from the disks")
	}
	var mf strings.Builder
	for _, n := range names[:1] {
		sum := sha256.Sum256(members[n])
		fmt.Fprintf(&mf, "SHA256(%s)= %s\n", n, hex.EncodeToString(sum[:]))
	}
	for _, n := range names[2:] {
		sum := sha256.Sum256(members[n])
		fmt.Fprintf(&mf, "SHA256(%s)= %s\n", n, hex.EncodeToString(sum[:]))
	}
	if string(members["layout.mf"]) != mf.String() {
		t.Errorf("manifest\n%s\nwant\n%s", members["layout.mf"], mf.String())
	}
	ovf := members["layout.ovf"]
	if !bytes.HasSuffix(bytes.TrimRight(ovf, " \n"), []byte("</Envelope>")) {
		t.Errorf("the descriptor ends %q", ovf[len(ovf)-40:])
	}
	h, err := ParseOVF(ovf, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, d := range h.Disks {
		files = append(files, fmt.Sprintf("%s %s %d %d", d.Key, d.File, d.Capacity, d.FileSize))
	}
	if want := []string{"scsi0 layout-disk1.vmdk 1048576 1048576", "sata0 layout-disk2.vmdk 300032 300032"}; !slices.Equal(files, want) {
		t.Errorf("the OVF's disks %q, want %q", files, want)
	}
	if h.Name != "layout" || !h.EFI || h.MemoryMiB != 1024 || len(h.NICs) != 1 {
		t.Errorf("hardware %+v", h)
	}

	// The same bytes when the disks come in another order (staged), and
	// nothing left beside them.
	for _, order := range []string{"interleave", "reverse"} {
		sub := filepath.Join(dir, order)
		os.Mkdir(sub, 0o755)
		p, _ := writeOVA(t, sub, order, layoutDevices, layoutConfig)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, ova) {
			t.Errorf("%s: other bytes", order)
		}
		if entries, _ := os.ReadDir(sub); len(entries) != 1 {
			t.Errorf("%s: left in the directory: %v", order, entries)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 { // the OVA and two directories
		t.Errorf("left in the directory: %v", entries)
	}
}

// TestLayoutPromoted has the second disk outgrow the first, so that,
// interleaved, it is staged, then copied into place and written on in
// place: the same bytes again.
func TestLayoutPromoted(t *testing.T) {
	devs := slices.Clone(layoutDevices)
	devs[1].Size, devs[3].Size = 300000, 1500000
	var first []byte
	for _, order := range []string{"seq", "interleave", "reverse"} {
		sub := filepath.Join(t.TempDir(), order)
		os.Mkdir(sub, 0o755)
		p, _ := writeOVA(t, sub, order, devs, layoutConfig)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		} else if !bytes.Equal(b, first) {
			t.Errorf("%s: other bytes", order)
		}
	}
}

// TestSinkRefusals checks what Create refuses, writes out of order, and
// that a failed or aborted OVA leaves nothing, staged disks included.
func TestSinkRefusals(t *testing.T) {
	dir := t.TempDir()
	devs := []format.Device{{Name: "drive-scsi0", Size: 1 << 20}, {Name: "drive-scsi1", Size: 1 << 20}}
	for _, d := range []format.Dest{{Path: "-", Stream: io.Discard}, {Path: filepath.Join(dir, "x.ova"), InPlace: true}, {Path: filepath.Join(dir, "x.ovf")}} {
		if _, err := create(d, devs, format.CreateOptions{}, rawDriver); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("%+v: %v, want a usage error", d, err)
		}
	}
	path := filepath.Join(dir, "vm.ova")
	for _, how := range []string{"incomplete", "abort", "out of order"} {
		s, err := create(format.Dest{Path: path}, devs, format.CreateOptions{}, rawDriver)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 64<<10)
		data[0] = 1
		s.Disk(1).WriteAt(data, 0) // staged
		s.Disk(0).WriteAt(data, 0) // in place
		switch how {
		case "incomplete":
			if err := s.Commit(); err == nil || !strings.Contains(err.Error(), "drive-scsi0: got 65536 of 1048576 bytes") {
				t.Errorf("Commit of an incomplete OVA: %v", err)
			}
		case "abort":
			if err := s.Abort(); err != nil {
				t.Error(err)
			}
		case "out of order":
			if _, err := s.Disk(0).WriteAt(data, 128<<10); err == nil || !strings.Contains(err.Error(), "next byte is 65536") {
				t.Errorf("a write out of order: %v", err)
			}
			if err := s.Commit(); err == nil {
				t.Errorf("Commit after a failed write succeeded")
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: left %v", how, entries)
		}
	}
}

// TestTarHeader checks the headers written: ustar up to 8 GiB, GNU's
// base-256 size beyond, both read back by archive/tar.
func TestTarHeader(t *testing.T) {
	for _, size := range []int64{0, 1, maxOctalSize, maxOctalSize + 1, 3 << 40} {
		h := tarHeader("vm-disk1.vmdk", size, testutil.TestCTime)
		if !validChecksum(h) {
			t.Errorf("%d: bad checksum", size)
		}
		tr := tar.NewReader(io.MultiReader(bytes.NewReader(h), zeroReader{}))
		hd, err := tr.Next()
		if err != nil {
			t.Fatalf("%d: %v", size, err)
		}
		want := tar.FormatUSTAR
		if size > maxOctalSize {
			want = tar.FormatGNU
		}
		if hd.Size != size || hd.Name != "vm-disk1.vmdk" || hd.Format != want || !hd.ModTime.Equal(testutil.TestCTime) {
			t.Errorf("%d: read back %d %q %v %v", size, hd.Size, hd.Name, hd.Format, hd.ModTime)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

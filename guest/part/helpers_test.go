package part

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// overlay is a disk of size bytes that reads as zeros except where a
// patch lies (later patches win).
type overlay struct {
	base    io.ReaderAt // nil: zeros
	size    int64
	patches []patch
}

type patch struct {
	off int64
	b   []byte
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if off >= o.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > o.size-off {
		n = int(o.size - off)
	}
	q := p[:n]
	if o.base != nil {
		if m, err := o.base.ReadAt(q, off); m < n {
			return m, err
		}
	} else {
		clear(q)
	}
	for _, pt := range o.patches {
		lo, hi := max(off, pt.off), min(off+int64(n), pt.off+int64(len(pt.b)))
		if lo < hi {
			copy(q[lo-off:hi-off], pt.b[lo-pt.off:hi-pt.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (o *overlay) add(off int64, b []byte) *overlay {
	o.patches = append(o.patches, patch{off, b})
	return o
}

// needTool skips the test when a tool is missing, or fails it under CI=true.
func needTool(t testing.TB, tool, pkg string) string {
	t.Helper()
	p, err := findTool(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: install the Debian package %s", tool, pkg)
		}
		t.Skipf("%s not found: install the Debian package %s", tool, pkg)
	}
	return p
}

func run(t testing.TB, stdin string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// findTool looks for a tool in PATH and in /usr/sbin and /sbin.
func findTool(tool string) (string, error) {
	p, err := exec.LookPath(tool)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, e := os.Stat(dir + "/" + tool); e == nil {
			return dir + "/" + tool, nil
		}
	}
	return "", err
}

// sfJSON is "sfdisk -J" output.
type sfJSON struct {
	PT struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func parseSfdisk(t testing.TB, out []byte) *sfJSON {
	t.Helper()
	var j sfJSON
	if err := json.Unmarshal(out, &j); err != nil {
		t.Fatalf("sfdisk -J: %v: %s", err, out)
	}
	if j.PT.SectorSize == 0 {
		j.PT.SectorSize = 512
	}
	return &j
}

// nodeNumber returns the partition number at the end of a node name
// ("disk.raw5", "/dev/loop0p3").
func nodeNumber(node string) int {
	i := len(node)
	for i > 0 && node[i-1] >= '0' && node[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(node[i:])
	return n
}

// compare checks every field of tab against sfdisk's view.
func compare(t *testing.T, tab *Table, want *sfJSON) {
	t.Helper()
	if tab == nil {
		t.Fatalf("Read returned no table, sfdisk sees a %s label", want.PT.Label)
	}
	if tab.Kind != want.PT.Label {
		t.Errorf("Kind %q, sfdisk %q", tab.Kind, want.PT.Label)
	}
	if tab.SectorSize != want.PT.SectorSize {
		t.Errorf("SectorSize %d, sfdisk %d", tab.SectorSize, want.PT.SectorSize)
	}
	if tab.DiskID != want.PT.ID {
		t.Errorf("DiskID %q, sfdisk %q", tab.DiskID, want.PT.ID)
	}
	if len(tab.Partitions) != len(want.PT.Partitions) {
		t.Fatalf("%d partitions, sfdisk %d: %+v", len(tab.Partitions), len(want.PT.Partitions), tab.Partitions)
	}
	ss := int64(want.PT.SectorSize)
	for _, w := range want.PT.Partitions {
		n := nodeNumber(w.Node)
		var p *Partition
		for i := range tab.Partitions {
			if tab.Partitions[i].Number == n {
				p = &tab.Partitions[i]
			}
		}
		if p == nil {
			t.Errorf("partition %d missing", n)
			continue
		}
		typ := w.Type
		if tab.Kind == "dos" {
			v, _ := strconv.ParseUint(w.Type, 16, 8)
			typ = "0x" + strconv.FormatUint(v|0x100, 16)[1:]
		}
		if p.Start != w.Start*ss || p.Size != w.Size*ss || p.Type != typ || p.GUID != w.UUID ||
			p.Name != w.Name || p.Bootable != w.Bootable {
			t.Errorf("partition %d: got %+v, sfdisk start %d size %d type %s uuid %s name %q bootable %v",
				n, *p, w.Start*ss, w.Size*ss, typ, w.UUID, w.Name, w.Bootable)
		}
	}
	for i := 1; i < len(tab.Partitions); i++ {
		if tab.Partitions[i].Number <= tab.Partitions[i-1].Number {
			t.Errorf("partitions not in number order: %d after %d", tab.Partitions[i].Number, tab.Partitions[i-1].Number)
		}
	}
}

// mbrSector builds an MBR (or EBR) sector with up to four entries.
type ent struct {
	status, typ  byte
	start, count uint32
}

func mbrSector(id uint32, es ...ent) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[440:], id)
	for i, e := range es {
		o := 446 + 16*i
		b[o] = e.status
		b[o+4] = e.typ
		binary.LittleEndian.PutUint32(b[o+8:], e.start)
		binary.LittleEndian.PutUint32(b[o+12:], e.count)
	}
	b[510], b[511] = 0x55, 0xAA
	return b
}

// gptEnt is a GPT entry for gptDisk.
type gptEnt struct {
	typ, guid  [16]byte
	start, end uint64
	name       string
}

// gptOpts shapes a synthetic GPT.
type gptOpts struct {
	ss        int64
	size      int64
	count     uint32 // entries in the array
	entrySize uint32
	noBackup  bool
}

// gptDisk builds a GPT disk (protective MBR, primary and backup) as an
// overlay.
func gptDisk(o gptOpts, es ...gptEnt) *overlay {
	if o.entrySize == 0 {
		o.entrySize = 128
	}
	if o.count == 0 {
		o.count = 4
	}
	ss := o.ss
	last := uint64(o.size/ss) - 1
	arr := make([]byte, int(o.count)*int(o.entrySize))
	for i, e := range es {
		b := arr[i*int(o.entrySize):]
		copy(b[0:], e.typ[:])
		copy(b[16:], e.guid[:])
		binary.LittleEndian.PutUint64(b[32:], e.start)
		binary.LittleEndian.PutUint64(b[40:], e.end)
		for j, c := range utf16.Encode([]rune(e.name)) {
			binary.LittleEndian.PutUint16(b[56+2*j:], c)
		}
	}
	arrLBAs := (uint64(len(arr)) + uint64(ss) - 1) / uint64(ss)
	hdr := func(my, alt, arrLBA uint64) []byte {
		h := make([]byte, ss)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 2+arrLBAs)
		binary.LittleEndian.PutUint64(h[48:], last-1-arrLBAs)
		copy(h[56:], "0123456789abcdef")
		binary.LittleEndian.PutUint64(h[72:], arrLBA)
		binary.LittleEndian.PutUint32(h[80:], o.count)
		binary.LittleEndian.PutUint32(h[84:], o.entrySize)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	mbr := mbrSector(0, ent{0, 0xEE, 1, uint32(min(last, 0xFFFFFFFF))})
	d := &overlay{size: o.size}
	d.add(0, mbr).add(ss, hdr(1, last, 2)).add(2*ss, arr)
	if !o.noBackup {
		d.add(int64(last-arrLBAs)*ss, arr).add(int64(last)*ss, hdr(last, 1, last-arrLBAs))
	}
	return d
}

var linuxFS = [16]byte{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4}

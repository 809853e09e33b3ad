package part

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

// Tests on tables built here byte by byte: damage sfdisk cannot make.

func wantErr(t *testing.T, tab *Table, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got %+v, want an error about %q", tab, substr)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), substr) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q: want one line about %q wrapping ErrCorrupt", err, substr)
	}
}

func TestNoTable(t *testing.T) {
	for _, c := range []struct {
		name string
		d    *overlay
	}{
		{"zeros", &overlay{size: 1 << 20}},
		{"tiny", &overlay{size: 511}},
		{"empty", &overlay{size: 0}},
		{"bad status", (&overlay{size: 1 << 20}).add(0, mbrSector(0, ent{0x12, 0x83, 1, 10}))},
		{"no signature", (&overlay{size: 1 << 20}).add(0, mbrSector(0, ent{0x80, 0x83, 1, 10})[:510])},
		{"ntfs", (&overlay{size: 1 << 20}).add(0, mbrSector(0, ent{0x80, 0x83, 1, 10})).add(3, []byte("NTFS    "))},
	} {
		tab, err := Read(c.d, c.d.size)
		if tab != nil || err != nil {
			t.Errorf("%s: Read = %+v, %v; want nil, nil", c.name, tab, err)
		}
	}
	if tab, err := Read(nil, 1<<20); tab != nil || err != nil {
		t.Errorf("nil reader: %v, %v", tab, err)
	}
}

// ebrDisk builds a DOS disk with an extended partition at LBA 100 of
// 100000 sectors, whose EBRs are given by LBA.
func ebrDisk(ebrs map[int64][]byte) *overlay {
	d := &overlay{size: 200000 * 512}
	d.add(0, mbrSector(0x11223344, ent{0, 0x83, 1, 99}, ent{0, 0x05, 100, 100000}))
	for lba, b := range ebrs {
		d.add(lba*512, b)
	}
	return d
}

func TestEBRChain(t *testing.T) {
	// A valid chain of three, with garbage in the EBRs' fourth entries.
	tab, err := Read(ebrDisk(map[int64][]byte{
		100:  mbrSector(0, ent{0, 0x83, 1, 9}, ent{0, 0x05, 10, 20}, ent{}, ent{0, 0x83, 50000, 90000}),
		110:  mbrSector(0, ent{0, 0x82, 2, 8}, ent{0, 0x05, 1000, 10}),
		1100: mbrSector(0, ent{0, 0x8e, 1, 9}),
	}), 200000*512)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range tab.Partitions {
		got = append(got, fmt.Sprintf("%d:%d+%d:%s", p.Number, p.Start/512, p.Size/512, p.Type))
	}
	want := "1:1+99:0x83 2:100+100000:0x05 5:101+9:0x83 6:112+8:0x82 7:1101+9:0x8e"
	if strings.Join(got, " ") != want || tab.DiskID != "0x11223344" || len(tab.Warnings) != 0 {
		t.Errorf("got %q %s %q, want %q", got, tab.DiskID, tab.Warnings, want)
	}

	// A loop.
	tab, err = Read(ebrDisk(map[int64][]byte{
		100: mbrSector(0, ent{0, 0x83, 1, 9}, ent{0, 0x05, 10, 20}),
		110: mbrSector(0, ent{0, 0x83, 1, 9}, ent{0, 0x05, 0, 20}),
	}), 200000*512)
	wantErr(t, tab, err, "loops")

	// A chain past the disk's end.
	tab, err = Read(ebrDisk(map[int64][]byte{
		100: mbrSector(0, ent{0, 0x83, 1, 9}, ent{0, 0x05, 1 << 30, 20}),
	}), 200000*512)
	wantErr(t, tab, err, "extended partition 2: EBR at byte")

	// An EBR without signature ends the chain with a warning.
	tab, err = Read(ebrDisk(map[int64][]byte{
		100: mbrSector(0, ent{0, 0x83, 1, 9}, ent{0, 0x05, 10, 20}),
		110: make([]byte, 512),
	}), 200000*512)
	if err != nil || len(tab.Partitions) != 3 || len(tab.Warnings) != 1 || !strings.Contains(tab.Warnings[0], "no signature") {
		t.Errorf("EBR without signature: %+v, %v", tab, err)
	}

	// Too many logical partitions; too many empty EBRs.
	many, empty := map[int64][]byte{}, map[int64][]byte{}
	for i := int64(0); i < 600; i++ {
		many[100+10*i] = mbrSector(0, ent{0, 0x83, 1, 9}, ent{0, 0x05, uint32(10*i + 10), 10})
		empty[100+10*i] = mbrSector(0, ent{}, ent{0, 0x05, uint32(10*i + 10), 10})
	}
	tab, err = Read(ebrDisk(many), 200000*512)
	wantErr(t, tab, err, "more than 256 logical partitions")
	tab, err = Read(ebrDisk(empty), 200000*512)
	wantErr(t, tab, err, "more than 512 EBRs")
}

func TestDOSEnds(t *testing.T) {
	d := (&overlay{size: 1000 * 512}).add(0, mbrSector(7, ent{0x80, 0x83, 1, 500}, ent{0, 0x8e, 400, 1000}))
	tab, err := Read(d, d.size)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(tab.Warnings, "|")
	if tab.Partitions[1].Size != 600*512 || !strings.Contains(w, "partition 2 runs") || !strings.Contains(w, "partitions 1 and 2 overlap") {
		t.Errorf("got %+v", tab)
	}
	d = (&overlay{size: 1000 * 512}).add(0, mbrSector(7, ent{0x80, 0x83, 1, 500}, ent{0, 0x83, 1000, 1}))
	tab, err = Read(d, d.size)
	wantErr(t, tab, err, "dos: partition 2: starts at byte 512000, past the disk's end")
}

func TestGPTSynthetic(t *testing.T) {
	disk := func(o gptOpts, es ...gptEnt) (*Table, error) {
		d := gptDisk(o, es...)
		return Read(d, d.size)
	}
	e1 := gptEnt{typ: linuxFS, guid: [16]byte{1}, start: 40, end: 99, name: "root"}
	e2 := gptEnt{typ: [16]byte{9}, guid: [16]byte{2}, start: 100, end: 199}
	tab, err := disk(gptOpts{ss: 512, size: 1 << 20}, e1, gptEnt{}, e2)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 2 || tab.Partitions[0].Number != 1 || tab.Partitions[1].Number != 3 ||
		tab.Partitions[0].TypeName != "Linux filesystem" || tab.Partitions[0].Name != "root" ||
		tab.Partitions[0].GUID != "00000001-0000-0000-0000-000000000000" || tab.Partitions[1].TypeName != "" ||
		tab.Partitions[1].Start != 100*512 || tab.Partitions[1].Size != 100*512 || len(tab.Warnings) != 0 {
		t.Errorf("got %+v", tab)
	}
	// Entry sizes of 128 × 2^n are read; others are not.
	if tab, err := disk(gptOpts{ss: 4096, size: 8 << 20, entrySize: 512, count: 16}, e1, e2); err != nil || len(tab.Partitions) != 2 || tab.SectorSize != 4096 {
		t.Errorf("entry size 512: %+v, %v", tab, err)
	}
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20, entrySize: 136}, e1)
	wantErr(t, tab, err, "partition entry size 136")
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20, entrySize: 8192}, e1)
	wantErr(t, tab, err, "partition entry size 8192")
	// A huge entry count is refused before anything is read.
	d := gptDisk(gptOpts{ss: 512, size: 1 << 40, noBackup: true}, e1)
	h := make([]byte, 512)
	d.ReadAt(h, 512)
	binary.LittleEndian.PutUint32(h[80:], 1<<30)
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	d.add(512, h)
	tab, err = Read(d, d.size)
	wantErr(t, tab, err, "1073741824 partition entries of 128 bytes are more than vmaconv reads")
	// Partitions past the end, backwards, clipped.
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20}, e1, gptEnt{typ: linuxFS, start: 5000, end: 6000})
	wantErr(t, tab, err, "gpt: partition 2: starts at LBA 5000, past the disk's end (LBA 2047)")
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20}, gptEnt{typ: linuxFS, start: 50, end: 49})
	wantErr(t, tab, err, "gpt: partition 1: ends at LBA 49, before its start")
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20}, gptEnt{typ: linuxFS, start: 1000, end: 1 << 62})
	if err != nil || tab.Partitions[0].Size != (2048-1000)*512 || !strings.Contains(strings.Join(tab.Warnings, "|"), "clipped") {
		t.Errorf("clipped: %+v, %v", tab, err)
	}
	// Overlaps.
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20}, e1, gptEnt{typ: linuxFS, start: 90, end: 120})
	if err != nil || len(tab.Warnings) != 1 || tab.Warnings[0] != "partitions 1 and 2 overlap" {
		t.Errorf("overlap: %+v, %v", tab, err)
	}
	// No backup.
	tab, err = disk(gptOpts{ss: 512, size: 1 << 20, noBackup: true}, e1)
	if err != nil || len(tab.Warnings) != 1 || !strings.Contains(tab.Warnings[0], "backup") {
		t.Errorf("no backup: %+v, %v", tab, err)
	}
	// A disk grown since its GPT was written, with the primary's entries
	// damaged: the backup is where the primary header says.
	d = gptDisk(gptOpts{ss: 512, size: 1 << 20}, e1)
	d.size = 2 << 20
	d.add(2*512+60, []byte{0xFF})
	tab, err = Read(d, d.size)
	if err != nil || len(tab.Partitions) != 1 || len(tab.Warnings) != 1 || !strings.Contains(tab.Warnings[0], "backup GPT at LBA 2047 is used") {
		t.Errorf("grown disk: %+v, %v", tab, err)
	}
	// A protective MBR alone.
	d = (&overlay{size: 1 << 20}).add(0, mbrSector(0, ent{0, 0xEE, 1, 2047}))
	tab, err = Read(d, d.size)
	wantErr(t, tab, err, "protective MBR but no GPT header")
}

type errReader struct{}

func (errReader) ReadAt(p []byte, off int64) (int, error) { return 0, errors.New("device gone") }

type shortReader struct{ io.ReaderAt }

func (s shortReader) ReadAt(p []byte, off int64) (int, error) {
	if off > 0 {
		return 0, io.EOF
	}
	return s.ReaderAt.ReadAt(p, off)
}

func TestReadErrors(t *testing.T) {
	tab, err := Read(errReader{}, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "device gone") || !strings.Contains(err.Error(), "MBR") {
		t.Errorf("got %v, %v", tab, err)
	}
	d := gptDisk(gptOpts{ss: 512, size: 1 << 20}, gptEnt{typ: linuxFS, start: 40, end: 99})
	tab, err = Read(shortReader{d}, d.size)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short read: %v, %v", tab, err)
	}
}

func TestTypeNameTables(t *testing.T) {
	for g, n := range gptTypeNames {
		if g != strings.ToUpper(g) || len(g) != 36 || n == "" {
			t.Errorf("GPT type %q %q", g, n)
		}
	}
	for g, n := range map[string]string{
		"E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Microsoft Storage Spaces",
		"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Windows LDM metadata",
		"AF9B60A0-1431-4F62-BC68-3311714A69AD": "Windows LDM data",
		"CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
		"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
		"6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
		"516E7CBA-6ECF-11D6-8FF8-00022D09712B": "FreeBSD ZFS",
		"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
	} {
		if gptTypeNames[g] != n {
			t.Errorf("GPT %s: %q, want %q", g, gptTypeNames[g], n)
		}
	}
	for b, n := range map[byte]string{0x42: "SFS / Windows dynamic disk", 0x85: "Linux extended", 0x0f: "W95 Ext'd (LBA)", 0x83: "Linux", 0x8e: "Linux LVM", 0xfd: "Linux raid autodetect"} {
		if mbrTypeNames[b] != n {
			t.Errorf("MBR %#x: %q, want %q", b, mbrTypeNames[b], n)
		}
	}
}

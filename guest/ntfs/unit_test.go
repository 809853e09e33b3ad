package ntfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"unicode/utf16"

	"github.com/vmaconv/vmaconv/guest"
)

func utf16Bytes(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// reparse builds a reparse point's data: a symbolic link (flags != nil)
// or a junction.
func reparse(tag uint32, subst, print string, flags *uint32) []byte {
	sb, pb := utf16Bytes(subst), utf16Bytes(print)
	var hdr []byte
	hdr = binary.LittleEndian.AppendUint16(hdr, 0)
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(len(sb)))
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(len(sb)))
	hdr = binary.LittleEndian.AppendUint16(hdr, uint16(len(pb)))
	if flags != nil {
		hdr = binary.LittleEndian.AppendUint32(hdr, *flags)
	}
	data := append(append(hdr, sb...), pb...)
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, tag)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(data)))
	b = binary.LittleEndian.AppendUint16(b, 0)
	return append(b, data...)
}

func TestReparseTarget(t *testing.T) {
	rel, abs := uint32(1), uint32(0)
	for _, c := range []struct {
		b    []byte
		want string
		ok   bool
	}{
		{reparse(tagSymlink, `dir\file`, `dir\file`, &rel), "dir/file", true},
		{reparse(tagSymlink, `\??\C:\Windows\notepad.exe`, `C:\Windows\notepad.exe`, &abs), "C:/Windows/notepad.exe", true},
		{reparse(tagSymlink, `\??\C:\x`, ``, &abs), "C:/x", true},
		{reparse(tagMountPoint, `\??\C:\Users`, `C:\Users`, nil), "C:/Users", true},
		{reparse(0x80000017, `x`, `y`, nil), "", false}, // WOF: not a link
	} {
		got, ok, err := reparseTarget(c.b)
		if err != nil || ok != c.ok || got != c.want {
			t.Errorf("reparseTarget = %q, %v, %v; want %q, %v", got, ok, err, c.want, c.ok)
		}
	}
	b := reparse(tagSymlink, `dir\file`, `dir\file`, &rel)
	if _, _, err := reparseTarget(b[:len(b)-3]); err == nil {
		t.Errorf("reparseTarget of a cut buffer: no error")
	}
}

func TestLZNT1(t *testing.T) {
	// "abcabcabcabc" + 'X': literals a, b, c, then a back reference 3
	// bytes back of 9 bytes, then a literal.
	chunk := []byte{0x08, 'a', 'b', 'c', 0, 0, 'X'}
	// At position 3 the offset has 4 bits, the length 12: (3-1)<<12 | (9-3).
	binary.LittleEndian.PutUint16(chunk[4:], 2<<12|6)
	in := binary.LittleEndian.AppendUint16(nil, 0xB000|uint16(len(chunk)-1))
	in = append(in, chunk...)
	// A second, stored chunk.
	in = binary.LittleEndian.AppendUint16(in, 0x3000|3)
	in = append(in, "DEFG"...)
	out := make([]byte, 8192+10)
	if err := lznt1(out, in); err != nil {
		t.Fatal(err)
	}
	if got := string(out[:13]); got != "abcabcabcabcX" {
		t.Errorf("chunk 1: %q", got)
	}
	if got := string(out[4096 : 4096+4]); got != "DEFG" {
		t.Errorf("chunk 2: %q", got)
	}
	// A reference before the start of the chunk.
	binary.LittleEndian.PutUint16(in[2+4:], 5<<12|6)
	if err := lznt1(out, in); err == nil {
		t.Errorf("a reference before the chunk: no error")
	}
}

func TestVisible(t *testing.T) {
	ents := []indexEntry{
		{ref: 5, ns: nsWin32, name: "."},
		{ref: 0, ns: 3, name: "$MFT"},
		{ref: 11, ns: 3, name: "$Extend"},
		{ref: 40, ns: nsWin32, name: "Long File Name.txt"},
		{ref: 40, ns: nsDOS, name: "LONGFI~1.TXT"},
		{ref: 41, ns: 3, name: "SHORT.TXT"},
		{ref: 42, ns: nsPOSIX, name: "hard link a"},
		{ref: 42, ns: nsPOSIX, name: "hard link b"},
		{ref: 43, ns: nsDOS, name: "ONLYDOS"},
	}
	var got []string
	for _, e := range visible(ents, rootRecord) {
		got = append(got, e.name)
	}
	want := []string{"Long File Name.txt", "SHORT.TXT", "hard link a", "hard link b", "ONLYDOS"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("visible = %q, want %q", got, want)
	}
	got = nil
	for _, e := range visible(ents, 99) {
		got = append(got, e.name)
	}
	if len(got) != 7 {
		t.Errorf("in a subdirectory, visible = %q", got)
	}
}

func TestProbeOther(t *testing.T) {
	base, err := fuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	if got := Probe(bytes.NewReader(base), int64(len(base))); got != "ntfs" {
		t.Errorf("Probe = %q", got)
	}
	for _, c := range []struct {
		off int
		b   byte
	}{{3, 'X'}, {11, 0x03}, {13, 3}, {0x40, 0}, {510, 0}} {
		img := bytes.Clone(base[:4096])
		img[c.off] = c.b
		if got := Probe(bytes.NewReader(img), int64(len(base))); got != "" {
			t.Errorf("byte %#x = %#x: Probe = %q", c.off, c.b, got)
		}
		if _, err := Open(bytes.NewReader(img), int64(len(base))); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("byte %#x = %#x: Open: %v", c.off, c.b, err)
		}
	}
	if got := Probe(bytes.NewReader(make([]byte, 100)), 100); got != "" {
		t.Errorf("Probe of 100 bytes = %q", got)
	}
}

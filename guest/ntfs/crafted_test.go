package ntfs

import (
	"bytes"
	"encoding/binary"
	"io"
	"io/fs"
	"os"
	"testing"
	"unicode/utf16"
)

// The tools cannot make hard links or symbolic links without mounting,
// so this test edits the MFT of the test image: it gives the record of
// "small" a second name "exec" (a hard link, with the root's index entry
// for "exec" pointed at it) and the record of "f00001" a symbolic link
// reparse point.

// protect undoes fixup: it saves each sector's last two bytes in the
// update sequence array and writes the update sequence number there.
func protect(b []byte) {
	off := int(binary.LittleEndian.Uint16(b[4:]))
	cnt := int(binary.LittleEndian.Uint16(b[6:]))
	for i := 1; i < cnt; i++ {
		p := i*512 - 2
		copy(b[off+2*i:off+2*i+2], b[p:p+2])
		copy(b[p:p+2], b[off:off+2])
	}
}

// recordAt returns the device offset of MFT record num.
func recordAt(t *testing.T, v *volume, num uint64) int64 {
	off := int64(num) * v.recordSize
	s := v.mft
	r := s.runs[s.find(off/v.clusterSize)]
	return r.lcn*v.clusterSize + off - r.vcn*v.clusterSize
}

// editRecord applies edit to the fixed-up MFT record num of img.
func editRecord(t *testing.T, v *volume, img []byte, num uint64, edit func(b []byte) []byte) {
	t.Helper()
	at := recordAt(t, v, num)
	b := bytes.Clone(img[at : at+v.recordSize])
	if err := fixup(b, "edit"); err != nil {
		t.Fatal(err)
	}
	b = edit(b)
	protect(b)
	copy(img[at:], b)
}

// insertAttr inserts attribute a into record b before the first attribute
// of a larger type.
func insertAttr(t *testing.T, b, a []byte) []byte {
	t.Helper()
	typ := binary.LittleEndian.Uint32(a)
	used := int(binary.LittleEndian.Uint32(b[0x18:]))
	off := int(binary.LittleEndian.Uint16(b[0x14:]))
	for {
		at := binary.LittleEndian.Uint32(b[off:])
		if at == atEnd || at > typ {
			break
		}
		off += int(binary.LittleEndian.Uint32(b[off+4:]))
	}
	if used+len(a) > len(b) {
		t.Fatal("no room in the record")
	}
	copy(b[off+len(a):], b[off:used])
	copy(b[off:], a)
	binary.LittleEndian.PutUint32(b[0x18:], uint32(used+len(a)))
	// A new attribute id.
	id := binary.LittleEndian.Uint16(b[0x28:])
	binary.LittleEndian.PutUint16(b[off+0xE:], id)
	binary.LittleEndian.PutUint16(b[0x28:], id+1)
	return b
}

// residentAttr builds a resident attribute.
func residentAttr(typ uint32, value []byte) []byte {
	ln := (0x18 + len(value) + 7) &^ 7
	a := make([]byte, ln)
	binary.LittleEndian.PutUint32(a, typ)
	binary.LittleEndian.PutUint32(a[4:], uint32(ln))
	binary.LittleEndian.PutUint16(a[0xA:], 0x18)
	binary.LittleEndian.PutUint32(a[0x10:], uint32(len(value)))
	binary.LittleEndian.PutUint16(a[0x14:], 0x18)
	copy(a[0x18:], value)
	return a
}

func TestCrafted(t *testing.T) {
	t.Parallel()
	src := testImage(t)
	img, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	v := fsys.(*volume)
	root, _ := fsys.Root()
	nodes, err := root.ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	ino := map[string]uint64{}
	for _, n := range nodes {
		ino[n.Info().Name] = n.Info().Ino
	}
	small, exec, link := ino["small"], ino["exec"], ino["f00001"]
	rs, err := v.record(small)
	if err != nil {
		t.Fatal(err)
	}
	// The hard link: a second $FILE_NAME in small's record.
	fn := bytes.Clone(rs.first(atFileName, "").value[:0x42])
	name := utf16.Encode([]rune("exec"))
	fn[0x40], fn[0x41] = byte(len(name)), nsPOSIX
	for _, u := range name {
		fn = binary.LittleEndian.AppendUint16(fn, u)
	}
	editRecord(t, v, img, small, func(b []byte) []byte {
		a := residentAttr(atFileName, fn)
		a[0x16] = 1 // indexed
		return insertAttr(t, b, a)
	})
	// The root's index entry for "exec" now names small's record.
	key := []byte{byte(len(name)), nsPOSIX}
	for _, u := range name {
		key = binary.LittleEndian.AppendUint16(key, u)
	}
	found := 0
	for i := 0; ; {
		k := bytes.Index(img[i:], key)
		if k < 0 {
			break
		}
		e := i + k - 16 - 0x40
		i += k + 1
		if e < 0 || binary.LittleEndian.Uint64(img[e:])&(1<<48-1) != exec || e%512 > 512-8 {
			continue
		}
		binary.LittleEndian.PutUint64(img[e:], small|uint64(rs.seq)<<48)
		found++
	}
	if found != 1 {
		t.Fatalf("%d index entries for exec", found)
	}
	// The symbolic link.
	rel := uint32(1)
	editRecord(t, v, img, link, func(b []byte) []byte {
		return insertAttr(t, b, residentAttr(atReparse, reparse(tagSymlink, `dir\file`, `dir\file`, &rel)))
	})

	fsys, err = Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	root, _ = fsys.Root()
	if nodes, err = root.ReadDir(); err != nil {
		t.Fatal(err)
	}
	byName := map[string]*node{}
	for _, n := range nodes {
		byName[n.Info().Name] = n.(*node)
	}
	a, b := byName["small"].Info(), byName["exec"].Info()
	if a.Ino != small || b.Ino != small || a.Nlink != 2 || b.Nlink != 2 || b.Size != a.Size {
		t.Errorf("hard links: small %+v, exec %+v", a, b)
	}
	fa, _ := byName["small"].Open()
	fb, err := byName["exec"].Open()
	if err != nil {
		t.Fatal(err)
	}
	ba, bb := make([]byte, a.Size), make([]byte, b.Size)
	fa.ReadAt(ba, 0)
	if m, err := fb.ReadAt(bb, 0); m != len(bb) || (err != nil && err != io.EOF) || !bytes.Equal(ba, bb) {
		t.Errorf("exec reads %d bytes, %v, equal %v", m, err, bytes.Equal(ba, bb))
	}
	// ntfs-3g reads the edited image alike.
	edited := t.TempDir() + "/edited.img"
	if err := os.WriteFile(edited, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := runTool(t, "ntfscat", edited, "/exec"); got != string(ba) {
		t.Errorf("ntfscat /exec: %d bytes, not small's %d", len(got), len(ba))
	}
	l := byName["f00001"]
	if i := l.Info(); i.Mode != fs.ModeSymlink|0o777 || i.Size != int64(len("dir/file")) {
		t.Errorf("symbolic link: %+v", i)
	}
	if got, err := l.Readlink(); got != "dir/file" || err != nil {
		t.Errorf("Readlink = %q, %v", got, err)
	}
	if _, err := l.Open(); err == nil {
		t.Errorf("Open of a symbolic link: no error")
	}
}

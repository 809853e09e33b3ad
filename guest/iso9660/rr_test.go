package iso9660

import (
	"github.com/vmaconv/vmaconv/guest"
	"testing"
	"time"
)

// rec builds a directory record named id with system use entries su.
func rec(id string, su ...[]byte) []byte {
	b := make([]byte, 33, 255)
	b[32] = byte(len(id))
	b = append(b, id...)
	if len(id)%2 == 0 {
		b = append(b, 0)
	}
	for _, e := range su {
		b = append(b, e...)
	}
	b[0] = byte(len(b))
	return b
}

// entry builds a SUSP entry.
func entry(sig string, data ...byte) []byte {
	return append([]byte{sig[0], sig[1], byte(4 + len(data)), 1}, data...)
}

func TestRockRidgeEntries(t *testing.T) {
	f := &FS{bs: 2048}
	for _, v := range []struct {
		name   string
		su     [][]byte
		nm, sl string
	}{
		{"nm continued", [][]byte{entry("NM", append([]byte{1}, "long-"...)...), entry("NM", append([]byte{0}, "name"...)...)}, "long-name", ""},
		{"nm second ignored", [][]byte{entry("NM", append([]byte{0}, "a"...)...), entry("NM", append([]byte{0}, "b"...)...)}, "a", ""},
		{"sl absolute", [][]byte{entry("SL", 0, 8, 0, 0, 3, 'e', 't', 'c', 0, 6, 'p', 'a', 's', 's', 'w', 'd')}, "", "/etc/passwd"},
		{"sl dots", [][]byte{entry("SL", 0, 4, 0, 2, 0, 0, 1, 'x')}, "", ".././x"},
		{"sl current", [][]byte{entry("SL", 0, 2, 0, 0, 1, 'y')}, "", "./y"},
		{"sl split component", [][]byte{entry("SL", 1, 1, 2, 'a', 'b'), entry("SL", 0, 0, 2, 'c', 'd', 0, 1, 'e')}, "", "abcd/e"},
		{"st stops", [][]byte{entry("ST"), entry("NM", append([]byte{0}, "no"...)...)}, "", ""},
	} {
		t.Run(v.name, func(t *testing.T) {
			a, err := f.rrAttrs(rec("X.;1", v.su...), 0, false)
			if err != nil {
				t.Fatal(err)
			}
			if string(a.name) != v.nm || string(a.link) != v.sl {
				t.Errorf("name %q link %q, want %q %q", a.name, a.link, v.nm, v.sl)
			}
		})
	}
	// TF in long form: modification and access times.
	long := func(s string, zone int8) []byte { return append([]byte(s), byte(zone)) }
	tf := append([]byte{0x80 | 0x02 | 0x04}, long("2024061006132050", 4)...)
	tf = append(tf, long("2023010203040500", 0)...)
	a, err := f.rrAttrs(rec("X.;1", entry("TF", tf...)), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 6, 10, 5, 13, 20, 500_000_000, time.UTC); !a.mtime.Equal(want) {
		t.Errorf("mtime %v, want %v", a.mtime, want)
	}
	if want := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC); !a.atime.Equal(want) {
		t.Errorf("atime %v, want %v", a.atime, want)
	}
	// PX with a serial number, PN.
	px := entry("PX", make([]byte, 40)...)
	put32(px[4:], 0o020640)
	put32(px[12:], 3)
	put32(px[20:], 1000)
	put32(px[28:], 100)
	put32(px[36:], 77)
	pn := entry("PN", make([]byte, 16)...)
	put32(pn[4:], 8)
	put32(pn[12:], 1)
	a, err = f.rrAttrs(rec("X.;1", px, pn), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{info: nodeInfo()}
	n.applyRR(a)
	if i := n.info; i.Mode.String() != "Dcrw-r-----" || i.Nlink != 3 || i.UID != 1000 || i.GID != 100 || i.Ino != 77 || i.Rdev != 8<<8|1 {
		t.Errorf("info %+v", i)
	}
	// A link target over guest.MaxLinkLen.
	var sl [][]byte
	for range 20 {
		c := []byte{0}
		for range 30 {
			c = append(c, 0, 8)
			c = append(c, "abcdefgh"...)
		}
		sl = append(sl, entry("SL", c...))
	}
	r := make([]byte, 0)
	for _, e := range sl {
		r = append(r, e...)
	}
	if _, err := f.rrAttrs(append(rec("X.;1"), r...), 0, false); err == nil {
		// The record is longer than 255 bytes here, which rrAttrs does
		// not mind: it bounds the target, not the record.
		t.Error("a 5400-byte link target: no error")
	}
}

func TestNames(t *testing.T) {
	for _, v := range []struct {
		in    string
		plain bool
		want  string
	}{
		{"FOO.TXT;1", true, "FOO.TXT"},
		{"NOEXT.;1", true, "NOEXT"},
		{"DIR", true, "DIR"},
		{"a;b", false, "a;b"},
		{"a;b;1", false, "a;b"},
		{"name.", false, "name."},
	} {
		if got := isoName(v.in, v.plain); got != v.want {
			t.Errorf("isoName(%q, %v) = %q, want %q", v.in, v.plain, got, v.want)
		}
	}
	if got := decodeJoliet([]byte{0x00, 'a', 0xd8, 0x3d, 0xde, 0x00, 0x65, 0xe5}); got != "a😀日" {
		t.Errorf("decodeJoliet = %q", got)
	}
}

func nodeInfo() guest.Info { return guest.Info{Mode: 0o444, Nlink: 1} }

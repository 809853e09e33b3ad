package cache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSelectArchives: entries are selected by the archive's recorded path
// (the archive gone, or named by a relative path) or by its identity (the
// archive named by another path: a link); archives without an entry are told; none named selects
// every entry.
func TestSelectArchives(t *testing.T) {
	f := newFixture(t, content(21, 5000))
	c := f.open(-1)
	other := filepath.Join(filepath.Dir(f.arc), "b.vma.zst")
	os.WriteFile(other, content(22, 5000), 0o600)
	f.get(c, f.arc).Close()
	f.get(c, other).Close()
	infos, err := c.List()
	if err != nil || len(infos) != 2 {
		t.Fatalf("List: %v, %v", infos, err)
	}
	link := filepath.Join(filepath.Dir(f.arc), "c.vma.zst")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.arc); err != nil { // its entry is found by its recorded path
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(f.arc))
	sel, err := SelectArchives([]string{"a.vma.zst", link, "gone.vma"})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if !sel.Match(in) {
			t.Errorf("entry of %s not selected", in.Archive.Path)
		}
	}
	if got := sel.Unmatched(); len(got) != 1 || got[0] != "gone.vma" {
		t.Errorf("Unmatched: %q, want [gone.vma]", got)
	}
	sel, _ = SelectArchives([]string{"gone.vma"})
	if sel.Match(infos[0]) || sel.Match(infos[1]) {
		t.Error("an entry of another archive was selected")
	}
	if sel, _ = SelectArchives(nil); !sel.Match(infos[0]) || len(sel.Unmatched()) != 0 {
		t.Error("with no archive named, an entry was not selected")
	}
}

// TestListing: the JSON of cache list, with its keys.
func TestListing(t *testing.T) {
	when := time.Date(2024, 6, 10, 6, 13, 20, 0, time.UTC)
	l := NewListing("/c", []Info{
		{Name: "k.cache", Size: 10, LastUse: when, InUse: true, Archive: Identity{Path: "/a.vma.zst", Size: 5}},
		{Name: "0123456789abcdef-0123456789abcdef.vma", Size: 3, LastUse: when, Legacy: true},
	}, 13, 100)
	b, err := json.Marshal(l)
	want := `{"dir":"/c","size":13,"default-limit":100,"entries":[` +
		`{"name":"k.cache","size":10,"last-use":"2024-06-10T06:13:20Z","in-use":true,"archive":"/a.vma.zst","archive-size":5},` +
		`{"name":"0123456789abcdef-0123456789abcdef.vma","size":3,"last-use":"2024-06-10T06:13:20Z","in-use":false,"legacy":true}]}`
	if err != nil || string(b) != want {
		t.Errorf("listing:\n%s\nwant\n%s", b, want)
	}
	if b, _ := json.Marshal(NewListing("/c", nil, 0, 1)); !strings.Contains(string(b), `"entries":[]`) {
		t.Errorf("empty listing: %s", b)
	}
}

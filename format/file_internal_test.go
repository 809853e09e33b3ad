package format

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOutputFileSync: an output is synced, and its directory after the
// rename, before Commit returns, unless the Dest says NoSync (-t unsafe);
// the content and the name are the same either way.
func TestOutputFileSync(t *testing.T) {
	var calls int
	fsync = func(f *os.File) error { calls++; return f.Sync() }
	t.Cleanup(func() { fsync = (*os.File).Sync })
	for _, noSync := range []bool{false, true} {
		calls = 0
		path := filepath.Join(t.TempDir(), "out")
		o, err := CreateOutput(Dest{Path: path, NoSync: noSync})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		if err := o.Commit(); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
			t.Errorf("NoSync %v: output %q, %v", noSync, b, err)
		}
		if want := map[bool]int{false: 2, true: 0}[noSync]; calls != want {
			t.Errorf("NoSync %v: %d syncs, want %d (the file, then its directory)", noSync, calls, want)
		}
	}
}

package outfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

// TestFileSync: an output is synced, and its directory after the
// rename, before Commit returns, unless the Dest says NoSync (-t unsafe);
// the content and the name are the same either way.
func TestFileSync(t *testing.T) {
	var calls int
	fsync = func(f *os.File) error { calls++; return f.Sync() }
	t.Cleanup(func() { fsync = (*os.File).Sync })
	for _, noSync := range []bool{false, true} {
		calls = 0
		path := filepath.Join(t.TempDir(), "out")
		o, err := Create(format.Dest{Path: path, NoSync: noSync})
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

// TestFileFailures: a write that fails midway (the disk fills), a
// failing sync and a failing rename each fail with one error naming the
// output, leave no temporary file, and leave an existing output as it was.
func TestFileFailures(t *testing.T) {
	enospc := syscall.ENOSPC
	cases := []struct {
		name  string
		setup func()
		want  string
	}{
		{"disk full midway", func() {
			written := 0
			writeAt = func(f *os.File, p []byte, off int64) (int, error) {
				if written+len(p) > 300000 {
					n := 300000 - written
					written += n
					f.WriteAt(p[:n], off)
					return n, enospc
				}
				written += len(p)
				return f.WriteAt(p, off)
			}
		}, "writing out: no space left on device"},
		{"sync fails", func() { fsync = func(*os.File) error { return syscall.EIO } }, "writing out: input/output error"},
		{"rename fails", func() {
			rename = func(string, string, bool) error { return &os.LinkError{Op: "rename", Err: syscall.EXDEV} }
		}, "renaming into out:"},
	}
	for _, tc := range cases {
		for _, over := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/overwrite=%v", tc.name, over), func(t *testing.T) {
				saved := [4]any{writeAt, write, fsync, rename}
				t.Cleanup(func() {
					writeAt, write, fsync, rename = saved[0].(func(*os.File, []byte, int64) (int, error)), saved[1].(func(*os.File, []byte) (int, error)), saved[2].(func(*os.File) error), saved[3].(func(string, string, bool) error)
				})
				dir := t.TempDir()
				path := filepath.Join(dir, "out")
				if over {
					os.WriteFile(path, []byte("old"), 0o600)
				}
				tc.setup()
				o, err := Create(format.Dest{Path: path, Name: "out", Overwrite: over})
				if err != nil {
					t.Fatal(err)
				}
				data := bytes.Repeat([]byte{7}, 64<<10)
				var werr error
				for off := int64(0); off < 1<<20 && werr == nil; off += int64(len(data)) {
					_, werr = o.WriteAt(data, off)
				}
				if werr == nil {
					werr = o.Commit()
				} else {
					o.Abort()
				}
				if werr == nil || !strings.Contains(werr.Error(), tc.want) || strings.Contains(werr.Error(), ".vmaconv-") {
					t.Errorf("got %v, want an error with %q naming the output, not the temporary file", werr, tc.want)
				}
				es, _ := os.ReadDir(dir)
				var names []string
				for _, e := range es {
					names = append(names, e.Name())
				}
				want := "[]"
				if over {
					want = "[out]"
				}
				if fmt.Sprint(names) != want {
					t.Errorf("left in the directory: %v, want %s", names, want)
				}
				if b, err := os.ReadFile(path); over && string(b) != "old" {
					t.Errorf("the existing output became %q (%v)", b, err)
				}
			})
		}
	}
}

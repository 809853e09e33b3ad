package input_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// vzdumped returns an archive of a disk of 12 MiB compressed as vzdump
// compresses it (zstd, one frame, no seek table; jobs of 1 MiB so the
// small archive has several), and the disk.
func vzdumped(t *testing.T) ([]byte, []byte) {
	t.Helper()
	disk := testutil.GenDisk(11, 12<<20, "text")
	copy(disk[3<<20:], testutil.GenDisk(12, 2<<20, "data"))
	plain := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: disk}}, nil, "seq", 0)
	zstd := testutil.RequireTool(t, "zstd")
	path := filepath.Join(t.TempDir(), "vm.vma")
	if err := os.WriteFile(path, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	z, err := exec.Command(zstd, "-q", "-c", "-T2", "-B1MiB", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return z, disk
}

// TestIndexRestarts: the index of a .vma.zst without a seek table holds
// its restart points and its opening reads; with it the archive, a file
// or an object, is read at random: opening it reads the index and the
// archive's first and last 4 KiB only, and the disk reads the same as
// from the plain archive. A damaged index fails with one line naming it;
// another archive's is ignored with a note.
func TestIndexRestarts(t *testing.T) {
	z, disk := vzdumped(t)
	dir := t.TempDir()
	local := filepath.Join(dir, "vm.vma.zst")
	if err := os.WriteFile(local, z, 0o644); err != nil {
		t.Fatal(err)
	}
	x, err := input.BuildIndex(t.Context(), reg, local, input.Options{IndexEvery: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if x.Restarts == nil || len(x.Restarts.Points) < 4 || len(x.Preread) < 4 || len(x.Reads) != 0 {
		t.Fatalf("index: %+v", x)
	}
	ix, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := input.WriteIndex(t.Context(), local, x, input.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(local + input.IndexSuffix); !bytes.Equal(b, ix) {
		t.Fatal("the index written differs from its encoding")
	}
	t.Logf("%d points, an index of %d bytes for %d", len(x.Restarts.Points), len(ix), len(z))

	// A file: no cache entry is made.
	o := input.Options{RandomAccess: true, Cache: input.CacheOptions{Dir: t.TempDir()}}
	in, notes, err := open(t, format.Ref{Path: local}, o)
	if err != nil || len(notes) != 0 {
		t.Fatalf("local: %v %q", err, notes)
	}
	if got := sums(t, in); got[0] != sha(disk) {
		t.Fatal("local: disk differs")
	}
	if _, notes, _ := open(t, format.Ref{Path: local}, input.Options{RandomAccess: true, NoIndex: true, Cache: o.Cache}); len(notes) != 1 || !strings.Contains(notes[0], "decompressed once") {
		t.Fatalf("local without the index: %q", notes)
	}

	for _, st := range newStores(t, map[string][]byte{"vm.vma.zst": z, "other.vma.zst": append(bytes.Clone(z[:len(z)-1]), z[len(z)-1]^1)}) {
		t.Run(st.name, func(t *testing.T) {
			put := func(name string, b []byte) {
				if st.s3 != nil {
					st.s3.Put(t, "golden", "dump/"+name, b)
				} else {
					st.http.Put("/dump/"+name, b)
				}
			}
			url := st.base + "vm.vma.zst"
			if st.s3 != nil { // built from the object itself
				sent := st.counts().Sent.Load()
				y, err := input.BuildIndex(t.Context(), reg, url, input.Options{Remote: st.o, IndexEvery: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
				// Read once: the builder's readers share a cache of it,
				// and the archive's headers are read from the stream as
				// the builder decodes it.
				if n := st.counts().Sent.Load() - sent; n > int64(len(z))*11/10 {
					t.Fatalf("indexing transferred %d bytes of a %d-byte archive", n, len(z))
				}
				b, _ := y.MarshalBinary()
				y.Close()
				if y.ETag == "" || len(y.Restarts.Points) != len(x.Restarts.Points) {
					t.Fatalf("the object's index: %+v", y)
				}
				put("vm.vma.zst"+input.IndexSuffix, b)
			} else {
				put("vm.vma.zst"+input.IndexSuffix, ix)
			}
			counts := st.counts()
			sent := counts.Sent.Load()
			in, notes, err := open(t, format.Ref{Path: url}, input.Options{Remote: st.o, RandomAccess: true})
			if err != nil || len(notes) != 0 {
				t.Fatalf("%v %q", err, notes)
			}
			// The index's table and prereads, and the archive's edges.
			if n := counts.Sent.Load() - sent; n > int64(len(ix)) {
				t.Fatalf("opening transferred %d bytes; the index has %d, the archive %d", n, len(ix), len(z))
			}
			if got := sums(t, in); got[0] != sha(disk) {
				t.Fatal("disk differs")
			}

			// A damaged blob: the read that needs it fails, naming it.
			bad := bytes.Clone(ix)
			bad[len(bad)-100] ^= 1
			put("vm.vma.zst"+input.IndexSuffix, bad)
			in, _, err = open(t, format.Ref{Path: url}, input.Options{Remote: st.o, RandomAccess: true})
			if err == nil {
				err = readAll(in)
			}
			if err == nil || !strings.Contains(err.Error(), "damaged") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("a damaged blob: %v", err)
			}
			// Another archive's index: ignored, and the archive is one that
			// can only be read front to back (a stream, without RandomAccess,
			// with the note).
			put("other.vma.zst"+input.IndexSuffix, ix)
			_, _, err = open(t, format.Ref{Path: st.base + "other.vma.zst"}, input.Options{Remote: st.o, RandomAccess: true})
			if err == nil || !strings.Contains(err.Error(), "vmaconv index") {
				t.Fatalf("another archive's index: %v", err)
			}
		})
	}
}

// readAll reads every disk of in at random, returning the first error.
func readAll(in *input.Input) error {
	buf := make([]byte, 1<<20)
	for i := range in.Devices() {
		src := in.Source(i)
		for off := int64(0); off < src.Size(); off += int64(len(buf)) {
			if _, err := src.ReadAt(buf[:min(int64(len(buf)), src.Size()-off)], off); err != nil {
				return err
			}
		}
	}
	return nil
}

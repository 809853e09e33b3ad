package input_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/remote/remotetest"
)

// indexed is an archive of several extents, mostly of zero clusters
// (cheap), and its disk.
func indexed(t *testing.T) ([]byte, []byte) {
	disk := testutil.GenDisk(7, 24<<20, "zero")
	copy(disk[5<<20:], testutil.GenDisk(8, 1<<20, "data"))
	return testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: disk}}, nil, "seq", 0), disk
}

// TestIndex: vmaconv index's library half. An index built for a remote
// archive (plain, and seekable .vma.zst) is written beside it and used:
// the open fetches the extent headers in parallel, and the disk reads the
// same. An index for another version of the archive, a damaged one, and
// one whose reads are wrong are ignored with a note or do no harm.
func TestIndex(t *testing.T) {
	plain, disk := indexed(t)
	seekable := compressed(t, plain)
	for _, st := range newStores(t, map[string][]byte{"vm.vma": plain, "vm.vma.zst": seekable, "vm.vma.gz": archive(t, "gzip"), "other.vma": archive(t, "")}) {
		t.Run(st.name, func(t *testing.T) {
			for _, name := range []string{"vm.vma", "vm.vma.zst"} {
				url := st.base + name
				x, err := input.BuildIndex(t.Context(), reg, url, input.Options{Remote: st.o})
				if err != nil {
					t.Fatal(err)
				}
				if len(x.Reads) < 3 {
					t.Fatalf("%s: %d reads in the index", name, len(x.Reads))
				}
				b, err := x.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if st.s3 != nil {
					if _, err := input.WriteIndex(t.Context(), url, x, input.Options{Remote: st.o}); err != nil {
						t.Fatal(err)
					}
					got, _ := st.s3.Get(t, "golden", "dump/"+name+input.IndexSuffix)
					if !bytes.Equal(got, b) {
						t.Fatal("the index uploaded differs")
					}
				} else {
					st.http.Put("/dump/"+name+input.IndexSuffix, b)
				}
				counts := st.counts()
				inject(st, func(r *http.Request) *remotetest.Fault {
					if r.Method == http.MethodGet {
						return &remotetest.Fault{Delay: 2 * time.Millisecond}
					}
					return nil
				})
				counts.MaxGets.Store(0)
				in, notes, err := open(t, format.Ref{Path: url, Device: "scsi0"}, input.Options{Remote: st.o, RandomAccess: true})
				inject(st, nil)
				if err != nil || len(notes) != 0 {
					t.Fatalf("%s: %v %q", name, err, notes)
				}
				// (A seekable .vma.zst reads few frames to open: only the
				// plain archive's extent headers are sure to overlap.)
				if n := counts.MaxGets.Load(); n < 2 && name == "vm.vma" {
					t.Fatalf("%s: opened with %d GET at a time: the index was not used", name, n)
				}
				if got := sums(t, in); got[0] != sha(disk) {
					t.Fatalf("%s: disk differs", name)
				}
				// Without it: one GET at a time.
				counts.MaxGets.Store(0)
				if _, _, err := open(t, format.Ref{Path: url}, input.Options{Remote: st.o, RandomAccess: true, NoIndex: true}); err != nil {
					t.Fatal(err)
				}
				if n := counts.MaxGets.Load(); n != 1 {
					t.Fatalf("%s without its index: %d GETs at a time", name, n)
				}
			}
			// The plain archive's index beside another archive of the
			// same name: ignored, with a note.
			x, err := input.BuildIndex(t.Context(), reg, st.base+"vm.vma", input.Options{Remote: st.o})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := x.MarshalBinary()
			put := func(name string, b []byte) {
				if st.s3 != nil {
					st.s3.Put(t, "golden", "dump/"+name, b)
				} else {
					st.http.Put("/dump/"+name, b)
				}
			}
			put("other.vma.vmaidx", b)
			_, notes, err := open(t, format.Ref{Path: st.base + "other.vma"}, input.Options{Remote: st.o})
			if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "other.vma.vmaidx: made for an archive of") {
				t.Fatalf("another archive's index: %v %q", err, notes)
			}
			b[len(b)/2] ^= 1
			put("vm.vma.vmaidx", b)
			in, notes, err := open(t, format.Ref{Path: st.base + "vm.vma"}, input.Options{Remote: st.o})
			if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "damaged") {
				t.Fatalf("a damaged index: %v %q", err, notes)
			}
			if got := sums(t, in); got[0] != sha(disk) {
				t.Fatal("disk differs")
			}
			// Reads that are not the archive's: the data is still the
			// archive's.
			x.Reads = slices.Repeat([]input.ReadSpan{{Off: 4096, Len: 512}, {Off: 0, Len: 100}}, 100)
			b, _ = x.MarshalBinary()
			put("vm.vma.vmaidx", b)
			in, notes, err = open(t, format.Ref{Path: st.base + "vm.vma"}, input.Options{Remote: st.o})
			if err != nil || len(notes) != 0 {
				t.Fatalf("wrong reads: %v %q", err, notes)
			}
			if got := sums(t, in); got[0] != sha(disk) {
				t.Fatal("disk differs with wrong reads")
			}
			_, err = input.BuildIndex(t.Context(), reg, st.base+"vm.vma.gz", input.Options{Remote: st.o})
			if err == nil || !strings.Contains(err.Error(), "--seekable") {
				t.Fatalf("gzip: %v", err)
			}
		})
	}
}

func (st remoteStore) counts() *remotetest.Counts {
	if st.s3 != nil {
		return &st.s3.Counts
	}
	return &st.http.Counts
}

func inject(st remoteStore, f func(*http.Request) *remotetest.Fault) {
	if st.s3 != nil {
		st.s3.Inject(f)
	} else {
		st.http.Inject(f)
	}
}

// TestParseIndex: every field of an index is checked; what
// MarshalBinary writes parses back.
func TestParseIndex(t *testing.T) {
	x := &input.Index{Size: 1 << 20, ETag: "e", Head: strings.Repeat("a", 64), Tail: strings.Repeat("b", 64),
		Reads: []input.ReadSpan{{Off: 0, Len: 512}, {Off: 1000, Len: 10}, {Off: 10, Len: 20}}}
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	y, err := input.ParseIndex(b)
	if err != nil || !slices.Equal(y.Reads, x.Reads) || y.Size != x.Size || y.ETag != x.ETag {
		t.Fatalf("round trip: %+v, %v", y, err)
	}
	for _, bad := range []*input.Index{
		{Size: 100, Head: x.Head, Tail: x.Tail, Reads: []input.ReadSpan{{Off: 90, Len: 20}}},
		{Size: 100, Head: x.Head, Tail: x.Tail, Reads: []input.ReadSpan{{Off: -1, Len: 2}}},
		{Size: 100, Head: x.Head, Tail: x.Tail, Reads: []input.ReadSpan{{Off: 0, Len: 0}}},
		{Size: 100, Head: "x", Tail: x.Tail},
		{Size: -1, Head: x.Head, Tail: x.Tail},
	} {
		b, _ := bad.MarshalBinary()
		if _, err := input.ParseIndex(b); err == nil {
			t.Errorf("%+v parsed", bad)
		}
	}
	if _, err := input.ParseIndex(b[:len(b)-1]); err == nil {
		t.Error("a cut index parsed")
	}
}

// FuzzParseIndex: no input panics, hangs or allocates beyond its bound.
func FuzzParseIndex(f *testing.F) {
	x := &input.Index{Size: 1 << 20, Head: strings.Repeat("a", 64), Tail: strings.Repeat("b", 64),
		Reads: []input.ReadSpan{{Off: 0, Len: 512}, {Off: 70000, Len: 512}}}
	b, _ := x.MarshalBinary()
	f.Add(b)
	f.Add([]byte("vmaconv index 2\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := input.ParseIndex(b)
		if err != nil {
			return
		}
		for _, r := range x.Reads {
			if r.Off < 0 || r.Len <= 0 || r.Off+r.Len > x.Size {
				t.Fatalf("read %+v outside %d bytes", r, x.Size)
			}
		}
		if errors.Is(err, nil) && len(x.Head) != 64 {
			t.Fatal("head not checked")
		}
	})
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

// compressed returns raw in the zstd seekable format.
func compressed(t *testing.T, raw []byte) []byte {
	var buf bytes.Buffer
	w, err := compress.NewSeekableWriter(&buf, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

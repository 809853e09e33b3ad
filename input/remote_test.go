package input_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/remote"
	"github.com/vmaconv/vmaconv/remote/remotetest"
)

var fastRetry = remote.Retry{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond}

// remoteStores serves files on an S3 server and an HTTP server and
// returns, per store, the base URL and the options that reach it.
type remoteStore struct {
	name string
	base string
	o    remote.Options
	s3   *remotetest.S3
	http *remotetest.HTTP
}

func newStores(t *testing.T, files map[string][]byte) []remoteStore {
	s3 := remotetest.NewS3(t)
	s3.Bucket(t, "golden")
	h := remotetest.NewHTTP(t)
	for name, b := range files {
		s3.Put(t, "golden", "dump/"+name, b)
		h.Put("/dump/"+name, b)
	}
	return []remoteStore{
		{"s3", "s3://golden/dump/", remote.Options{Env: s3.Getenv, Retry: fastRetry}, s3, nil},
		{"http", h.URL + "/dump/", remote.Options{Retry: fastRetry}, nil, h},
	}
}

// TestRemoteGolden: every golden archive read from S3 and from HTTP gives
// the manifest's hashes for every device and config: read at random where
// it can be (a plain archive), as a stream otherwise, and as a stream when
// asked.
func TestRemoteGolden(t *testing.T) {
	dir, manifest := testutil.LoadManifest(t)
	files := map[string][]byte{}
	for name := range manifest {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	for _, st := range newStores(t, files) {
		for name, m := range manifest {
			for _, stream := range []bool{false, true} {
				if stream && !strings.HasSuffix(name, ".vma") {
					continue // a stream either way
				}
				in, _, err := open(t, format.ParseRef(st.base+name), input.Options{Remote: st.o, Stream: stream})
				if err != nil {
					t.Fatalf("%s %s: %v", st.name, name, err)
				}
				compressed := !strings.HasSuffix(name, ".vma")
				if random := in.Image() != nil; random == (stream || compressed) {
					t.Fatalf("%s %s (stream %v): read at random %v", st.name, name, stream, random)
				}
				got := sums(t, in)
				if len(got) != len(m.Devices) {
					t.Fatalf("%s %s: %d devices", st.name, name, len(got))
				}
				for i, d := range m.Devices {
					if in.Devices()[i].Name != d.Name || hex.EncodeToString(got[i][:]) != d.SHA256 {
						t.Errorf("%s %s: device %s: sha256 %x, want %s", st.name, name, d.Name, got[i], d.SHA256)
					}
				}
				for i, c := range m.Configs {
					sum := sha256.Sum256(in.Configs()[i].Data)
					if in.Configs()[i].Name != c.Name || hex.EncodeToString(sum[:]) != c.SHA256 {
						t.Errorf("%s %s: config %s differs", st.name, name, c.Name)
					}
				}
				in.Close()
			}
		}
	}
}

// TestRemoteOpen: one device of an archive from a URL (ARCHIVE:DEVICE,
// the device by its short name too); a seekable .vma.zst read at random;
// other compressed archives refused at random with the way out; images
// (raw, qcow2) read at random; a missing object and a foreign image are
// one line; the URL's secrets never show.
func TestRemoteOpen(t *testing.T) {
	files := map[string][]byte{
		"vm.vma":         archive(t, ""),
		"vm.vma.zst":     archive(t, "seekable"),
		"vm.vma.gz":      archive(t, "gzip"),
		"disk.raw":       disks[1].Data,
		"odd:v2":         archive(t, ""),
		"disk.qed.inner": append([]byte("QED\x00"), make([]byte, 1020)...),
	}
	w := want()
	for _, st := range newStores(t, files) {
		t.Run(st.name, func(t *testing.T) {
			in, _, err := open(t, format.ParseRef(st.base+"vm.vma:scsi0"), input.Options{Remote: st.o})
			if err != nil {
				t.Fatal(err)
			}
			if i, err := in.One(); err != nil || in.Devices()[i].Name != "drive-scsi0" {
				t.Fatalf("device: %d, %v", i, err)
			}
			if got := sums(t, in); got[1] != w[1] {
				t.Fatal("scsi0 differs")
			}
			in, _, err = open(t, format.ParseRef(st.base+"vm.vma.zst"), input.Options{Remote: st.o, RandomAccess: true})
			if err != nil || in.Image() == nil || in.Compression() != "zstd" {
				t.Fatalf("seekable: %v", err)
			}
			if got := sums(t, in); !slices.Equal(got, w) {
				t.Fatal("seekable: differs")
			}
			_, _, err = open(t, format.ParseRef(st.base+"vm.vma.gz"), input.Options{Remote: st.o, RandomAccess: true})
			if !errors.Is(err, input.ErrSequential) || !strings.Contains(err.Error(), "--seekable") {
				t.Fatalf("gzip at random: %v", err)
			}
			in, notes, err := open(t, format.ParseRef(st.base+"disk.raw"), input.Options{Remote: st.o, RandomAccess: true})
			if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "reading it as raw") {
				t.Fatalf("raw: %v %q", err, notes)
			}
			if got := sums(t, in); got[0] != w[1] {
				t.Fatal("raw differs")
			}
			// A key ending in :WORD: taken whole once the split one is missing.
			in, _, err = open(t, format.ParseRef(st.base+"odd:v2"), input.Options{Remote: st.o})
			if err != nil || len(in.Devices()) != 2 {
				t.Fatalf("odd:v2: %v", err)
			}
			_, _, err = open(t, format.ParseRef(st.base+"missing.vma"), input.Options{Remote: st.o})
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "missing.vma") {
				t.Fatalf("missing: %v", err)
			}
			var fe *input.ForeignError
			if _, _, err = open(t, format.ParseRef(st.base+"disk.qed.inner"), input.Options{Remote: st.o}); !errors.As(err, &fe) {
				t.Fatalf("qed: %v", err)
			}
			info, err := input.Describe(t.Context(), reg, st.base+"vm.vma.zst", input.Options{Remote: st.o})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			info.WriteText(&buf)
			if !strings.Contains(buf.String(), "drive-scsi0") {
				t.Fatalf("info:\n%s", buf.String())
			}
		})
	}
}

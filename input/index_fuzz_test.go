package input

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// restartIndexFixture is a .vma.zst without a seek table and its v2
// index: restart points (with histories where the zstd command wrote jobs)
// and prereads.
type restartIndexFixture struct {
	z, ix []byte
}

var (
	restartIndexOnce sync.Once
	restartIndex     restartIndexFixture
	restartIndexErr  error
)

func theRestartIndex(tb testing.TB) restartIndexFixture {
	restartIndexOnce.Do(func() {
		restartIndexErr = func() error {
			disk := testutil.GenDisk(21, 6<<20, "text")
			copy(disk[1<<20:], testutil.GenDisk(22, 256<<10, "data"))
			plain := testutil.WriteArchive(tb, []testutil.Disk{{Name: "drive-scsi0", Data: disk}}, nil, "seq", 0)
			dir, err := os.MkdirTemp("", "vmaconv-fuzz-*")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			path := filepath.Join(dir, "vm.vma")
			if err := os.WriteFile(path, plain, 0o644); err != nil {
				return err
			}
			var z []byte
			if zstdPath, err := exec.LookPath("zstd"); err == nil {
				// As vzdump, with jobs of 1 MiB: points with a small history.
				if z, err = exec.Command(zstdPath, "-q", "-c", "-T2", "-B1MiB", path).Output(); err != nil {
					return err
				}
			} else {
				// Frames of 1 MiB: points without a history.
				enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
				if err != nil {
					return err
				}
				for at := 0; at < len(plain); at += 1 << 20 {
					z = enc.EncodeAll(plain[at:min(at+1<<20, len(plain))], z)
				}
			}
			if err := os.WriteFile(path+".zst", z, 0o644); err != nil {
				return err
			}
			x, err := BuildIndex(context.Background(), all.Registry(), path+".zst", Options{IndexEvery: 1 << 20})
			if err != nil {
				return err
			}
			defer x.Close()
			if x.Restarts == nil || len(x.Restarts.Points) < 2 || len(x.Preread) == 0 {
				return fmt.Errorf("an index of %+v", x)
			}
			ix, err := x.MarshalBinary()
			restartIndex = restartIndexFixture{z: z, ix: ix}
			return err
		}()
	})
	if restartIndexErr != nil {
		tb.Fatal(restartIndexErr)
	}
	return restartIndex
}

// fixIndexSum rewrites the table's sha256 of an index so that a changed
// table reaches the checks of its fields rather than the checksum's.
func fixIndexSum(b []byte) []byte {
	if !bytes.HasPrefix(b, []byte(indexMagic)) {
		return b
	}
	nl := bytes.IndexByte(b[len(indexMagic):], '\n')
	if nl < 0 {
		return b
	}
	var h struct{ Table int64 }
	if json.Unmarshal(b[len(indexMagic):len(indexMagic)+nl], &h) != nil || h.Table < 0 {
		return b
	}
	at := int64(len(indexMagic)+nl+1) + h.Table
	if at > int64(len(b)-sha256.Size) {
		return b
	}
	b = bytes.Clone(b)
	sum := sha256.Sum256(b[:at])
	copy(b[at:], sum[:])
	return b
}

// FuzzReadIndex: a v2 index, its table changed (its checksum made to
// match) or not: ReadIndex refuses it or returns one whose every field is
// within bounds; its blobs then read as their sizes say or fail; its
// points and prereads read the archive, or fail, never panic, hang or
// allocate beyond their bounds.
func FuzzReadIndex(f *testing.F) {
	fx := theRestartIndex(f)
	f.Add(fx.ix, false)
	f.Add(fx.ix, true)
	f.Add([]byte(indexMagic+`{"size":0,"head-sha256":"","tail-sha256":"","reads":0,"table":0,"blobs":0}`+"\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			b = fixIndexSum(b)
		}
		x, err := ReadIndex(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		blobs := int64(len(b)) - x.base
		for _, r := range x.Reads {
			if r.Off < 0 || r.Len <= 0 || r.Len > maxIndexRead || r.Off+r.Len > x.Size {
				t.Fatalf("read %+v outside %d bytes", r, x.Size)
			}
		}
		checkBlob := func(what string, r blobRef) {
			if r.off < 0 || r.length < 0 || r.off+r.length > blobs || r.raw < 0 || r.raw > compress.MaxRestartWindow {
				t.Fatalf("%s: blob %+v outside the %d bytes of blobs", what, r, blobs)
			}
		}
		if x.Restarts == nil {
			if len(x.Preread) != 0 || len(x.groups) != 0 || len(x.dicts) != 0 {
				t.Fatal("prereads or histories without restart points")
			}
			return
		}
		if err := x.Restarts.Validate(x.Size); err != nil {
			t.Fatalf("points ReadIndex took do not validate: %v", err)
		}
		if len(x.dicts) != len(x.Restarts.Points) {
			t.Fatalf("%d histories for %d points", len(x.dicts), len(x.Restarts.Points))
		}
		for i, p := range x.Restarts.Points {
			checkBlob(fmt.Sprintf("point %d", i), x.dicts[i])
			if x.dicts[i].raw != p.Dict {
				t.Fatalf("point %d: a history of %d bytes, its blob %d", i, p.Dict, x.dicts[i].raw)
			}
		}
		next := 0
		for i, g := range x.groups {
			checkBlob(fmt.Sprintf("group %d", i), g.blob)
			if g.first != next || g.n <= 0 {
				t.Fatalf("group %d: reads %d+%d after %d", i, g.first, g.n, next)
			}
			next += g.n
			total := int64(0)
			for _, r := range x.Preread[g.first : g.first+g.n] {
				if r.Off < 0 || r.Len <= 0 || r.Off+r.Len > x.Restarts.Size {
					t.Fatalf("preread %+v outside %d bytes", r, x.Restarts.Size)
				}
				total += r.Len
			}
			if total != g.blob.raw {
				t.Fatalf("group %d: %d bytes of reads, %d in its blob", i, total, g.blob.raw)
			}
		}
		if next != len(x.Preread) {
			t.Fatalf("groups hold %d of %d prereads", next, len(x.Preread))
		}
		tm := time.AfterFunc(60*time.Second, func() { panic("FuzzReadIndex: still reading after 60s") })
		defer tm.Stop()
		// The blobs: as long as they say, or an error.
		for i := range min(len(x.dicts), 4) {
			if d, err := x.dict(i); err == nil && int64(len(d)) != x.Restarts.Points[i].Dict {
				t.Fatalf("point %d: a history of %d bytes read, %d said", i, len(d), x.Restarts.Points[i].Dict)
			}
		}
		// The archive through the points and prereads, if it is the one.
		if x.Size != int64(len(fx.z)) {
			return
		}
		rr := compress.NewRestartReader(bytes.NewReader(fx.z), x.Restarts, x.dict)
		defer rr.Close()
		pre := newPreread(rr, x)
		for _, i := range []int{0, len(x.Preread) / 2, len(x.Preread) - 1} {
			if i < 0 || i >= len(x.Preread) {
				continue
			}
			r := x.Preread[i]
			buf := make([]byte, r.Len)
			if n, err := pre.ReadAt(buf, r.Off); n < 0 || n > len(buf) || err == nil && n != len(buf) {
				t.Fatalf("preread %+v: %d, %v", r, n, err)
			}
		}
		pre.done()
		buf := make([]byte, 4096)
		for _, i := range []int{0, len(x.Restarts.Points) - 1} {
			if n, err := pre.ReadAt(buf, x.Restarts.Points[i].U); n < 0 || n > len(buf) || err == nil && n != len(buf) {
				t.Fatalf("point %d: %d, %v", i, n, err)
			}
		}
	})
}

package xfs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// A fuzz input is a sparse image of fuzzSize bytes: records of a 4-byte
// sector number and 512 bytes of that sector; sectors without a record
// read as zeros. Seeds hold only the non-zero sectors a walk of a small
// real image reads.
const (
	fuzzSize   = 300 << 20
	fuzzSector = 512
	fuzzRecord = 4 + fuzzSector
)

type sparseImage map[int64][]byte

func decodeFuzz(data []byte) sparseImage {
	img := sparseImage{}
	for ; len(data) >= fuzzRecord; data = data[fuzzRecord:] {
		s := int64(be.Uint32(data)) % (fuzzSize / fuzzSector)
		img[s] = data[4:fuzzRecord]
	}
	return img
}

func (img sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > fuzzSize {
		return 0, fmt.Errorf("read of %d bytes at %d out of range", len(p), off)
	}
	for n := 0; n < len(p); {
		s, o := (off+int64(n))/fuzzSector, int((off+int64(n))%fuzzSector)
		m := min(len(p)-n, fuzzSector-o)
		if b, ok := img[s]; ok {
			copy(p[n:n+m], b[o:])
		} else {
			clear(p[n : n+m])
		}
		n += m
	}
	return len(p), nil
}

// recorder notes the sectors read through it.
type recorder struct {
	f    *os.File
	mu   sync.Mutex
	seen map[int64]bool
}

func (r *recorder) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	for s := off / fuzzSector; s*fuzzSector < off+int64(len(p)); s++ {
		r.seen[s] = true
	}
	r.mu.Unlock()
	return r.f.ReadAt(p, off)
}

// fuzzSeed builds a small image with mkfs.xfs from protofile body lines
// and returns the encoded non-zero sectors that a walk reads.
func fuzzSeed(t testing.TB, name, body string, opts ...string) []byte {
	dir := t.TempDir()
	src := filepath.Join(dir, "data")
	if err := os.WriteFile(src, bytes.Repeat([]byte("0123456789abcdef"), 200), 0o644); err != nil {
		t.Fatal(err)
	}
	proto := filepath.Join(dir, "proto")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	body = strings.ReplaceAll(strings.ReplaceAll(body, "DATA", src), "EMPTY", empty)
	if err := os.WriteFile(proto, []byte("x\n0 0\nd--755 0 0\n"+body+"$\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, fuzzSize); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-f", "-p", proto}, opts...)
	if out, err := exec.Command("mkfs.xfs", append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: mkfs.xfs: %v: %s", name, err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &recorder{f: f, seen: map[int64]bool{}}
	fsys, err := Open(r, fuzzSize)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := guesttest.Walk(fsys, 1<<30); err != nil {
		t.Fatalf("%s: Walk: %v", name, err)
	}
	var sectors []int64
	for s := range r.seen {
		sectors = append(sectors, s)
	}
	sort.Slice(sectors, func(i, j int) bool { return sectors[i] < sectors[j] })
	var out []byte
	buf := make([]byte, fuzzSector)
	for _, s := range sectors {
		if _, err := f.ReadAt(buf, s*fuzzSector); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, make([]byte, fuzzSector)) {
			out = be.AppendUint32(out, uint32(s))
			out = append(out, buf...)
		}
	}
	// The seed reads back as the image did.
	fsys, err = Open(decodeFuzz(out), fuzzSize)
	if err != nil {
		t.Fatalf("%s: seed: %v", name, err)
	}
	if err := guesttest.Walk(fsys, 1<<30); err != nil {
		t.Fatalf("%s: seed: Walk: %v", name, err)
	}
	return out
}

// entries returns protofile lines for n empty files in a directory, with
// names of 200 more bytes if long.
func entries(dir string, n int, long bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, " %s d--755 1 2\n", dir)
	for i := range n {
		pad := ""
		if long {
			pad = strings.Repeat("n", 200)
		}
		fmt.Fprintf(&b, "  %sname-%04d ---644 3 4 EMPTY\n", pad, i)
	}
	b.WriteString(" $\n")
	return b.String()
}

// fuzzSeeds are the seed images: a basic tree (files, links inline and
// remote, devices, shortform and block directories), leaf and node
// directories, and the basic tree on version 4.
var fuzzSeeds = []struct {
	name, body string
	opts       []string
}{
	{"basic", " f ---644 1000 100 DATA\n l l--777 0 0 target\n" +
		" long l--777 0 0 " + strings.Repeat("x/", 300) + "\n c c--600 0 0 4 5\n p p--600 0 0\n" +
		" sf d--755 0 0\n  a ---600 0 0 DATA\n $\n" + entries("block", 30, false), []string{"-b", "size=1024"}},
	{"leaf", entries("leaf", 30, true), []string{"-b", "size=1024"}},
	{"node", entries("node", 520, false), []string{"-b", "size=1024", "-m", "crc=0", "-i", "size=256"}},
	{"v4", " f ---644 1000 100 DATA\n l l--777 0 0 target\n" +
		" long l--777 0 0 " + strings.Repeat("x/", 300) + "\n" + entries("block", 30, false),
		[]string{"-b", "size=1024", "-m", "crc=0", "-i", "size=256"}},
}

// cachedSeed returns fuzzSeed's result, kept in the temporary directory:
// every fuzzing worker process calls FuzzOpen, and building the seeds
// takes a second.
func cachedSeed(t testing.TB, name, body string, opts ...string) []byte {
	key := fmt.Sprintf("%x", sha256.Sum256([]byte(name+"\x00"+body+"\x00"+strings.Join(opts, " "))))
	p := filepath.Join(os.TempDir(), "vmaconv-xfs-fuzz-"+key[:16])
	if b, err := os.ReadFile(p); err == nil {
		return b
	}
	b := fuzzSeed(t, name, body, opts...)
	tmp := fmt.Sprintf("%s.%d", p, os.Getpid())
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, p)
	}
	return b
}

func FuzzOpen(f *testing.F) {
	if _, err := exec.LookPath("mkfs.xfs"); err == nil {
		for _, s := range fuzzSeeds {
			f.Add(cachedSeed(f, s.name, s.body, s.opts...))
		}
	} else if os.Getenv("CI") == "true" {
		f.Fatal("mkfs.xfs not found: install the Debian package xfsprogs")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img := decodeFuzz(data)
		Probe(img, fuzzSize)
		fsys, err := Open(img, fuzzSize)
		if err != nil {
			return
		}
		_ = guesttest.Walk(fsys, 1<<20)
	})
}

// TestMutations sets every byte of the fuzz seeds to a few values in turn
// (every stride-th byte of the large ones) and walks the result: a systematic complement to FuzzOpen, run when
// XFS_MUTATE=1 (it takes minutes).
func TestMutations(t *testing.T) {
	if os.Getenv("XFS_MUTATE") != "1" {
		t.Skip("XFS_MUTATE=1 runs it")
	}
	for _, s := range fuzzSeeds {
		seed := fuzzSeed(t, s.name, s.body, s.opts...)
		stride := max(1, len(seed)/40000)
		for i := 0; i < len(seed); i += stride {
			if i%fuzzRecord < 4 {
				continue
			}
			for _, v := range []byte{0, 0xff, seed[i] + 1, seed[i] ^ 0x80} {
				b := bytes.Clone(seed)
				b[i] = v
				done := make(chan struct{})
				go func() {
					defer close(done)
					defer func() {
						if r := recover(); r != nil {
							name := fmt.Sprintf("mutation-%s-%d-%02x", s.name, i, v)
							corpus := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
							os.MkdirAll("testdata/fuzz/FuzzOpen", 0o755)
							os.WriteFile(filepath.Join("testdata/fuzz/FuzzOpen", name), []byte(corpus), 0o644)
							t.Errorf("%s: byte %d = %#x: panic: %v", s.name, i, v, r)
						}
					}()
					img := decodeFuzz(b)
					if fsys, err := Open(img, fuzzSize); err == nil {
						_ = guesttest.Walk(fsys, 1<<20)
					}
				}()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: byte %d = %#x: walk takes more than 10 s", s.name, i, v)
				}
			}
		}
	}
}

// TestDirDataBlockBounds: a used entry that starts 8 bytes before the
// end of a block (found by fuzzing; it used to read past the block).
func TestDirDataBlockBounds(t *testing.T) {
	for _, version := range []int{4, 5} {
		f := &FS{sb: superblock{version: version, ftype: true}}
		ip := &inode{ino: 99}
		b := make([]byte, 4096)
		hdr := 16
		copy(b, "XD2D")
		if version == 5 {
			hdr = 64
			copy(b, "XDD3")
			be.PutUint64(b[40:], ip.ino)
		}
		// Unused space up to 8 bytes before the end, then an entry's
		// inode number.
		be.PutUint16(b[hdr:], 0xffff)
		be.PutUint16(b[hdr+2:], uint16(len(b)-8-hdr))
		be.PutUint64(b[len(b)-8:], 1234)
		err := f.dirDataBlock(ip, b, 0, func([]byte, uint64) error { return nil })
		if !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("v%d: %v", version, err)
		}
	}
}

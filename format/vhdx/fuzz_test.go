package vhdx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// A fuzz input is a file in pieces: records of a 4 KiB page number (32
// bits), a length (16 bits, at most 4096) and that many bytes, placed at
// the page; the rest of the file reads as zeros. A VHDX file is mostly
// zeros (a 1 MiB header section of 320 KiB of structures, a log, 1 MiB
// regions holding a few entries, blocks that are holes), so its pages
// that are not zero make a small input whose mutations hit its
// structures, and a file of terabytes costs nothing.
func encodePages(file []byte) []byte {
	var b []byte
	for off := 0; off < len(file); off += 4096 {
		p := file[off:min(len(file), off+4096)]
		if testutil.AllZero(p) && off+len(p) < len(file) {
			continue
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(off/4096))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// pages is a file decoded from records: a sparse io.ReaderAt.
type pages struct {
	p    map[int64][]byte
	size int64
}

func decodePages(b []byte) *pages {
	ps := &pages{p: map[int64][]byte{}}
	for len(b) >= 6 {
		n := min(int(binary.LittleEndian.Uint16(b[4:])), 4096, len(b)-6)
		page := int64(binary.LittleEndian.Uint32(b))
		ps.p[page] = b[6 : 6+n]
		ps.size = max(ps.size, page*4096+int64(n))
		b = b[6+n:]
	}
	return ps
}

func (ps *pages) ReadAt(p []byte, off int64) (int, error) {
	if off >= ps.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), ps.size-off))
	clear(p[:n])
	for pos := off &^ 4095; pos < off+int64(n); pos += 4096 {
		if src, ok := ps.p[pos/4096]; ok {
			a := max(pos, off)
			b := min(pos+int64(len(src)), off+int64(n))
			if a < b {
				copy(p[a-off:b-off], src[a-pos:b-pos])
			}
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fuzzSeeds returns qemu-img-made images (dynamic, fixed, of 1 MiB and
// 8 MiB blocks, with zero blocks recorded both ways) of a 3 MiB disk
// with a little data, and one with a log to replay.
func fuzzSeeds(f *testing.F) [][]byte {
	dir, err := os.MkdirTemp("", "vmaconv-vhdx-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data := make([]byte, 3<<20+1536)
	copy(data[100<<10:], testutil.GenDisk(13, 20000, "data"))
	copy(data[2<<20+512:], testutil.GenDisk(14, 9000, "mixed"))
	raw := filepath.Join(dir, "d.raw")
	os.WriteFile(raw, data, 0o644)
	var seeds [][]byte
	for i, o := range []string{"block_size=1M", "log_size=1M", "subformat=fixed,block_size=1M", "block_size=2M,block_state_zero=off,log_size=2M"} {
		out := filepath.Join(dir, fmt.Sprint(i, ".vhdx"))
		testutil.Run(f, "qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", o, raw, out)
		b, err := os.ReadFile(out)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	// The first, with a log entry to replay.
	m := append(image(nil), seeds[0]...)
	l := m.layout(f)
	g := msguid(3, 4, 5, 6)
	host := binary.LittleEndian.Uint64(m[l.bat.off:]) >> offsetShift << offsetShift
	copy(m[l.head.logOffset:], logEntry(2, g, uint64(len(m)), uint64(len(m)), []logWrite{
		{off: host, data: bytes.Repeat([]byte{0x42}, 4096)}, {off: host + 8192, zeroLen: 8192}}))
	m.dirty(f, g)
	return append(seeds, m)
}

// FuzzOpen opens arbitrary files (see encodePages) as VHDX images and
// reads them: errors are fine; panics, hangs and allocations by a
// header's word are not; ranges the zero map calls zero read as zeros;
// and where qemu-img is installed, an image that both read (of 512-byte
// sectors: qemu-img sizes others wrong) gives the same bytes.
//
//	go test -run '^$' -fuzz FuzzOpen -fuzzminimizetime 2s ./format/vhdx/
func FuzzOpen(f *testing.F) {
	qemuImg, _ := exec.LookPath("qemu-img")
	if qemuImg != "" || os.Getenv("CI") == "true" {
		for _, s := range memo(f, "fuzz seeds", func() ([][]byte, error) { return fuzzSeeds(f), nil }) {
			f.Add(encodePages(s))
		}
	}
	f.Add(encodePages(append(append([]byte(nil), Magic[:]...), make([]byte, 4096)...)))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := decodePages(b)
		src, err := OpenAt(r, r.size, format.OpenOptions{})
		if err != nil {
			return
		}
		defer src.Close()
		size := min(src.Size(), 4<<20)
		got := make([]byte, size)
		for off := int64(0); off < size; {
			e, err := src.Region(off, size-off)
			if err != nil {
				return
			}
			if e.Start != off || e.Length <= 0 {
				t.Fatalf("Region(%d) = %+v", off, e)
			}
			n := min(e.Length, size-off)
			if _, err := src.ReadAt(got[off:off+n], off); err != nil && err != io.EOF {
				return
			}
			if e.Zero && !testutil.AllZero(got[off:off+n]) {
				t.Fatalf("the map calls %d bytes at %d zero; they read as data", n, off)
			}
			off += n
		}
		if s := src.Size(); s > 0 {
			src.ReadAt(make([]byte, 1), s-1)
		}
		if qemuImg == "" || r.size > 64<<20 || src.Size() > 64<<20 || src.l.logical != 512 || !firstRun(fmt.Sprintf("fuzz/%x", sha256.Sum256(b))) {
			return
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "x.vhdx")
		fh, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		for page, p := range r.p {
			fh.WriteAt(p, page*4096)
		}
		fh.Truncate(r.size)
		fh.Close()
		ref := path + ".raw"
		// QEMU goes round some logs forever (see logReader.search): a
		// deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if exec.CommandContext(ctx, qemuImg, "convert", "-f", "vhdx", "-O", "raw", path, ref).Run() != nil {
			return // qemu refuses what we read: where, the hostile tests say
		}
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(want)) < size || !bytes.Equal(got, want[:size]) {
			t.Fatalf("the first %d bytes differ from qemu-img's", size)
		}
	})
}

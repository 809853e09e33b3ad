package vhdx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// logWrite is a write of a test log entry: 4 KiB of data at off, or
// zeroLen bytes of zeros.
type logWrite struct {
	off     uint64
	data    []byte
	zeroLen uint64
}

// logEntry encodes a log entry ([MS-VHDX] 2.3.1): its header, its
// descriptors (over as many 4 KiB sectors as they take), its data
// sectors, with its checksum.
func logEntry(seq uint64, g guid, flushed, last uint64, ws []logWrite) []byte {
	dsec := descSectors(uint32(len(ws)))
	ndata := 0
	for _, w := range ws {
		if w.data != nil {
			ndata++
		}
	}
	b := make([]byte, (dsec+int64(ndata))*logSector)
	copy(b, "loge")
	le32(b[8:], uint32(len(b)))
	le64(b[16:], seq)
	le32(b[24:], uint32(len(ws)))
	copy(b[32:], g[:])
	le64(b[48:], flushed)
	le64(b[56:], last)
	k := int64(0)
	for i, w := range ws {
		e := b[64+32*i:]
		if w.data == nil {
			copy(e, "zero")
			le64(e[8:], w.zeroLen)
		} else {
			copy(e, "desc")
			copy(e[4:8], w.data[4092:])
			copy(e[8:16], w.data[:8])
			s := b[(dsec+k)*logSector:]
			copy(s, "data")
			le32(s[4:], uint32(seq>>32))
			copy(s[8:4092], w.data[8:4092])
			le32(s[4092:], uint32(seq))
			k++
		}
		le64(e[16:], w.off)
		le64(e[24:], seq)
	}
	le32(b[4:], checksum(b, 4))
	return b
}

// dirty gives m's current header the log GUID g.
func (m image) dirty(t testing.TB, g guid) {
	l := m.layout(t)
	copy(m[l.headAt+48:], g[:])
	m.fixHeader(l.headAt)
}

// TestLogReplay: an image whose log holds entries to replay (which
// qemu-img refuses to open read-only) reads as qemu-img reads it once
// qemu-img check -r all has replayed the log: the active sequence (two
// entries, the first with data and zeros, the second rewriting the BAT
// to move blocks), not a stale entry with a lower sequence number, nor
// one with a bad checksum.
func TestLogReplay(t *testing.T) {
	path := fixtures(t)["few-1m"]
	m := compact(t, loadImage(t, path))
	l := m.layout(t)
	bat := m[l.bat.off : l.bat.off+4096]
	var present []int
	for b := range int(l.blocks) {
		if binary.LittleEndian.Uint64(bat[8*b:])&stateMask == blockFullyPresent {
			present = append(present, b)
		}
	}
	if len(present) < 3 {
		t.Fatalf("the fixture has blocks %v present: the test needs 3", present)
	}
	host := func(b int) uint64 { return binary.LittleEndian.Uint64(bat[8*b:]) >> offsetShift << offsetShift }
	g := msguid(0x12345678, 0x9abc, 0x4def, 1, 2, 3, 4, 5, 6, 7, 8)
	size := uint64(len(m))
	pattern := bytes.Repeat([]byte{0xab, 0xcd, 0xef, 0x01}, 1024)
	// Zeros over a sector, then data in it: the data wins.
	a := []logWrite{{off: host(present[1]), zeroLen: 16384}}
	for i := range 100 {
		a = append(a, logWrite{off: host(present[1]) + 64<<10 + uint64(i)*4096, zeroLen: 4096})
	}
	a = append(a, logWrite{off: host(present[1]) + 4096, data: pattern})
	// The second entry swaps two blocks and drops a third.
	newBAT := bytes.Clone(bat)
	copy(newBAT[8*present[1]:], bat[8*present[2]:8*present[2]+8])
	copy(newBAT[8*present[2]:], bat[8*present[1]:8*present[1]+8])
	le64(newBAT[8*present[0]:], blockZero)
	entryA := logEntry(5, g, size, size, a)
	entryB := logEntry(6, g, size, size, []logWrite{{off: l.bat.off, data: newBAT}})
	stale := logEntry(3, g, size, size, []logWrite{{off: host(present[1]), data: bytes.Repeat([]byte{0x77}, 4096)}})
	bad := logEntry(7, g, size, size, []logWrite{{off: host(present[1]), data: bytes.Repeat([]byte{0x66}, 4096)}})
	bad[100]++
	logAt := l.head.logOffset
	copy(m[logAt:], entryA)
	copy(m[logAt+uint64(len(entryA)):], entryB)
	copy(m[logAt+256<<10:], stale)
	copy(m[logAt+512<<10:], bad)
	m.dirty(t, g)
	dir := t.TempDir()
	dirtyPath := m.save(t, filepath.Join(dir, "dirty.vhdx"))
	// The oracle: qemu-img refuses the image, and replays the log of a
	// copy.
	want := memo(t, "log replay", func() ([]byte, error) {
		if out, err := exec.Command("qemu-img", "info", dirtyPath).CombinedOutput(); err == nil || !strings.Contains(string(out), "contains a log that needs to be replayed") {
			return nil, fmt.Errorf("qemu-img info does not refuse the image for its log, so the test's log is wrong: %v\n%s", err, out)
		}
		fixed := m.save(t, filepath.Join(shared.dir, "replayed.vhdx"))
		for _, args := range [][]string{{"check", "-r", "all", fixed}, {"convert", "-O", "raw", fixed, fixed + ".oracle"}} {
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("qemu-img %v: %v\n%s", args, err, out)
			}
		}
		return os.ReadFile(fixed + ".oracle")
	})
	if bytes.Equal(want, oracle(t, path)) {
		t.Fatal("the replayed log changed nothing: the test is wrong")
	}
	src, err := openPath(t, dirtyPath, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.l.replayed != 2 {
		t.Errorf("%d entries replayed, want 2", src.l.replayed)
	}
	if got := readAll(t, src); !bytes.Equal(got, want) {
		t.Error("the disk differs from qemu-img's after its replay")
	}
	// The file itself is untouched.
	if after := loadImage(t, dirtyPath); !bytes.Equal(after, m) {
		t.Error("opening the image changed its file")
	}
	f, _ := os.Open(dirtyPath)
	in, err := info(f, int64(len(m)), format.FileStat{Name: dirtyPath, Size: int64(len(m))})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	in.WriteText(&text)
	if js, _ := in.MarshalJSON(); !strings.Contains(string(js), `"dirty-flag":true`) || !strings.Contains(text.String(), "qemu-img check -r all") {
		t.Errorf("info does not tell of the log: %s\n%s", js, text.String())
	}

	// A log GUID with nothing valid in the log: nothing to replay, for
	// qemu-img too.
	c := compact(t, loadImage(t, path))
	c.dirty(t, g)
	p := c.save(t, filepath.Join(dir, "emptylog.vhdx"))
	if firstRun("log/empty") {
		testutil.Run(t, "qemu-img", "info", p)
	}
	if src, err := openPath(t, p, format.OpenOptions{}); err != nil || src.l.replayed != 0 {
		t.Errorf("empty log: %v", err)
	} else {
		src.Close()
	}

	// An entry that says the file was longer: truncated.
	c = compact(t, loadImage(t, path))
	copy(c[logAt:], logEntry(5, g, size+mib, size, []logWrite{{off: host(present[0]), data: pattern}}))
	c.dirty(t, g)
	p = c.save(t, filepath.Join(dir, "truncated.vhdx"))
	if _, err := openPath(t, p, format.OpenOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "FlushedFileOffset 0x") {
		t.Errorf("truncated: %v", err)
	}
	// A descriptor that is not one: refused, as qemu-img refuses it.
	c = compact(t, loadImage(t, path))
	e := logEntry(5, g, size, size, []logWrite{{off: host(present[0]), data: pattern}})
	copy(e[64:], "dexc")
	le32(e[4:], checksum(e, 4))
	copy(c[logAt:], e)
	c.dirty(t, g)
	p = c.save(t, filepath.Join(dir, "baddesc.vhdx"))
	if _, err := openPath(t, p, format.OpenOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `descriptor 0: signature "dexc"`) {
		t.Errorf("bad descriptor: %v", err)
	}
	if firstRun("log/baddesc") && exec.Command("qemu-img", "check", "-r", "all", p).Run() == nil {
		t.Error("qemu-img replays a log with a bad descriptor: the test is wrong")
	}
}

// TestLogDescriptorSectors: an entry whose descriptors take more than
// its first sector (over 126) replays them all. QEMU cannot read such an
// entry (vhdx_log_read_sectors reads every sector into the same 4 KiB)
// and refuses the image: the expected disk is worked out here.
func TestLogDescriptorSectors(t *testing.T) {
	path := fixtures(t)["few-1m"]
	m := compact(t, loadImage(t, path))
	l := m.layout(t)
	want := oracle(t, path)
	e0 := binary.LittleEndian.Uint64(m[l.bat.off:])
	if e0&stateMask != blockFullyPresent {
		t.Fatal("the fixture's block 0 is not present")
	}
	host := e0 >> offsetShift << offsetShift
	g := msguid(7, 7, 7)
	var ws []logWrite
	for i := range 300 {
		off := uint64(i) * 3 * 4096 % (1<<20 - 8192) // within block 0
		if i%3 == 0 {
			data := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, 1366)[:4096]
			ws = append(ws, logWrite{off: host + off, data: data})
			copy(want[off:], data)
		} else {
			ws = append(ws, logWrite{off: host + off, zeroLen: 8192})
			clear(want[off : off+8192])
		}
	}
	copy(m[l.head.logOffset:], logEntry(9, g, uint64(len(m)), uint64(len(m)), ws))
	m.dirty(t, g)
	p := m.save(t, filepath.Join(t.TempDir(), "many.vhdx"))
	src, err := openPath(t, p, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if !bytes.Equal(readAll(t, src), want) {
		t.Error("the disk differs from the writes of the log")
	}
}

// TestLogBound: a log with more writes than maxLogOps is refused with the
// way out, not replayed in unbounded memory.
func TestLogBound(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	path := filepath.Join(dir, "big.vhdx")
	testutil.Run(t, "qemu-img", "create", "-q", "-f", "vhdx", "-o", "log_size=3M", path, "8M")
	m := loadImage(t, path)
	l := m.layout(t)
	g := msguid(1, 2, 3, 4)
	pos := l.head.logOffset
	for i, n := range []int{30000, 30000, 6000} {
		ws := make([]logWrite, n)
		for k := range ws {
			ws[k] = logWrite{off: 64<<20 + uint64(k)*4096, zeroLen: 4096}
		}
		e := logEntry(uint64(10+i), g, uint64(len(m)), uint64(len(m)), ws)
		copy(m[pos:], e)
		pos += uint64(len(e))
	}
	m.dirty(t, g)
	p := m.save(t, path)
	_, err := openPath(t, p, format.OpenOptions{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "more than 65536 writes") || !strings.Contains(err.Error(), "qemu-img check -r all") {
		t.Errorf("%v", err)
	}
}

// TestLogSearchBound: an entry as long as the log that starts where the
// search starts (valid as QEMU checks it; its checksum wrong) ends where
// it starts, the search goes round once and stops, having read the log
// about once; QEMU goes round forever.
func TestLogSearchBound(t *testing.T) {
	const length = 1 << 20
	file := make([]byte, 2<<20)
	g := msguid(9, 9, 9)
	e := file[1<<20:]
	copy(e, "loge")
	le32(e[8:], length)
	le64(e[16:], 1)
	copy(e[32:], g[:])
	lg := &logReader{r: readerAt(file), fileSize: int64(len(file)), off: 1 << 20, length: length, guid: g}
	seq, err := lg.search()
	if err != nil || seq.count != 0 || lg.read > 2*length {
		t.Errorf("search: %+v, %v after reading %d bytes of a %d-byte log", seq, err, lg.read, length)
	}
}

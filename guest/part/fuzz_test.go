package part

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// seedOf keeps the first head and last tail bytes of a disk: the fuzz
// input's overlay reads zeros between them.

type seed struct {
	head, tail []byte
	size       int64
}

func seedFrom(d io.ReaderAt, size int64, head, tail int) seed {
	h, tl := make([]byte, head), make([]byte, tail)
	d.ReadAt(h, 0)
	d.ReadAt(tl, size-int64(tail))
	return seed{h, tl, size}
}

// syntheticSeeds returns small disks built here: GPTs with 512- and
// 4096-byte sectors and a DOS table with a chain of logical partitions.
func syntheticSeeds() []seed {
	e1 := gptEnt{typ: linuxFS, guid: [16]byte{1}, start: 40, end: 99, name: "root"}
	e2 := gptEnt{typ: [16]byte{9}, guid: [16]byte{2}, start: 100, end: 199}
	g := gptDisk(gptOpts{ss: 512, size: 1 << 20}, e1, e2)
	g4 := gptDisk(gptOpts{ss: 4096, size: 4 << 20}, e1, e2)
	d := (&overlay{size: 1 << 20}).
		add(0, mbrSector(0x11223344, ent{0x80, 0x83, 1, 1}, ent{0, 0x05, 2, 100}, ent{0, 0x0C, 200, 10})).
		add(2*512, mbrSector(0, ent{0, 0x83, 1, 1}, ent{0, 0x05, 2, 2})).
		add(4*512, mbrSector(0, ent{0, 0x82, 1, 1}, ent{0, 0x05, 4, 20})).
		add(6*512, mbrSector(0, ent{0, 0x8e, 1, 1}, ent{}, ent{0, 0x83, 1, 1}))
	return []seed{
		seedFrom(g, g.size, 3*512, 2*512),
		seedFrom(g4, g4.size, 3*4096, 2*4096),
		seedFrom(d, d.size, 7*512, 0),
	}
}

func FuzzRead(f *testing.F) {
	for _, sd := range syntheticSeeds() {
		f.Add(sd.head, sd.tail, sd.size)
	}
	// sfdisk's disks, where sfdisk is installed.
	if _, err := findTool("sfdisk"); err == nil {
		for _, c := range []struct {
			name       string
			head, tail int
		}{{"small-dos", 4 << 10, 0}, {"small-gpt", 3 * 512, 2 * 512}, {"empty-dos", 512, 0}} {
			img := getImageF(f, c.name)
			if img == nil {
				continue
			}
			fh, err := os.Open(img.path)
			if err != nil {
				f.Fatal(err)
			}
			sd := seedFrom(fh, img.size, c.head, c.tail)
			f.Add(sd.head, sd.tail, sd.size)
			fh.Close()
		}
	}
	f.Fuzz(func(t *testing.T, head, tail []byte, size int64) { checkRead(t.Fatalf, head, tail, size) })
}

// checkRead reads a disk of size bytes holding head at its start and tail
// at its end, and checks what Read returns.
func checkRead(fatalf func(string, ...any), head, tail []byte, size int64) {
	size &= 1<<44 - 1
	d := &overlay{size: size}
	d.add(0, head)
	if int64(len(tail)) <= size {
		d.add(size-int64(len(tail)), tail)
	}
	tab, err := Read(d, size)
	if err != nil {
		if tab != nil {
			fatalf("table and error: %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			fatalf("error of more than one line: %q", err)
		}
		return
	}
	if tab == nil {
		return
	}
	if tab.Kind != "gpt" && tab.Kind != "dos" || (tab.SectorSize != 512 && tab.SectorSize != 4096) {
		fatalf("table %q with %d-byte sectors", tab.Kind, tab.SectorSize)
	}
	for i, p := range tab.Partitions {
		if p.Number < 1 || p.Start < 0 || p.Size <= 0 || p.Start+p.Size > size || p.Start+p.Size < p.Start {
			fatalf("partition %+v on a disk of %d bytes", p, size)
		}
		if i > 0 && p.Number <= tab.Partitions[i-1].Number {
			fatalf("partition %d after %d", p.Number, tab.Partitions[i-1].Number)
		}
	}
	if len(tab.Warnings) > 64 {
		fatalf("%d warnings", len(tab.Warnings))
	}
	for _, w := range tab.Warnings {
		if strings.Contains(w, "\n") {
			fatalf("warning of more than one line: %q", w)
		}
	}
}

// fixGPT recomputes the CRCs of a GPT header at ss in head (and of its
// array, where head holds it), so that mutations reach past them.
func fixGPT(head []byte, ss int) {
	if len(head) < 2*ss || string(head[ss:ss+8]) != "EFI PART" {
		return
	}
	h := head[ss : 2*ss]
	lba, count, esize := binary.LittleEndian.Uint64(h[72:]), binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint32(h[84:])
	if end := lba*uint64(ss) + uint64(count)*uint64(esize); lba < 1<<20 && end <= uint64(len(head)) {
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(head[lba*uint64(ss):end]))
	}
	if n := binary.LittleEndian.Uint32(h[12:]); n >= 20 && n <= uint32(ss) {
		binary.LittleEndian.PutUint32(h[16:], 0)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:n]))
	}
}

// TestMutations reads thousands of damaged copies of the seeds (with their
// GPT CRCs fixed up half of the time): a quick fuzz run in every test run.
func TestMutations(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for si, sd := range syntheticSeeds() {
		for i := 0; i < n; i++ {
			head, tail, size := bytes.Clone(sd.head), bytes.Clone(sd.tail), sd.size
			for k := rng.IntN(4) + 1; k > 0; k-- {
				buf := head
				if len(tail) > 0 && rng.IntN(4) == 0 {
					buf = tail
				}
				// Mostly the table's fields: the MBR entries and the
				// GPT headers and first entries.
				var off int
				switch r := rng.IntN(4); {
				case r == 0 && len(buf) >= 512:
					off = 446 + rng.IntN(64)
				case r == 1 && len(buf) >= 1024:
					off = 512 + rng.IntN(92+128)
				case r == 2 && len(buf) >= 4096+92:
					off = 4096 + rng.IntN(92)
				default:
					off = rng.IntN(len(buf))
				}
				switch rng.IntN(3) {
				case 0:
					buf[off] = byte(rng.IntN(256))
				case 1:
					buf[off] ^= 1 << rng.IntN(8)
				default:
					buf[off] = []byte{0, 0xFF, 0x05, 0x0F, 0x85, 0xEE, 0x80}[rng.IntN(7)]
				}
			}
			if rng.IntN(8) == 0 {
				size = int64(rng.IntN(int(size)*2 + 1))
			}
			if rng.IntN(2) == 0 {
				fixGPT(head, 512)
				fixGPT(head, 4096)
				fixGPT(tail, 512) // the 512-byte seed's backup header (its array is not in reach)
			}
			checkRead(func(format string, args ...any) {
				t.Fatalf("seed %d mutation %d (head %x tail %x size %d): "+format,
					append([]any{si, i, head, tail, size}, args...)...)
			}, head, tail, size)
		}
	}
}

package testutil

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// GenDisk returns deterministic content of the given size in one of four
// styles: "zero", "data" (random, no zero 4 KiB block), "mixed" (zero
// blocks, zero clusters, blocks with a single non-zero byte, and random
// data) or "text" (mixed, but with compressible text instead of random
// data).
func GenDisk(seed uint64, size int64, style string) []byte {
	b := make([]byte, size)
	src := rand.NewPCG(seed, uint64(size))
	rng := rand.New(src)
	fill := func(p []byte) { fillRandom(src, p) }
	switch style {
	case "zero":
	case "data":
		fill(b)
	case "mixed", "text":
		if style == "text" {
			fill = func(p []byte) {
				words := []string{"proxmox ", "backup ", "cluster ", "qemu ", "disk ", "vma\n", "zero ", "block "}
				for i := 0; i < len(p); {
					i += copy(p[i:], words[rng.IntN(len(words))])
				}
			}
		}
		for off := int64(0); off < size; off += vma.BlockSize {
			blk := b[off:min(off+vma.BlockSize, size)]
			switch k := rng.IntN(10); {
			case (off/vma.ClusterSize)%5 == 2: // whole zero clusters
			case k < 4: // zero block
			case k < 6: // one non-zero byte somewhere
				blk[rng.IntN(len(blk))] = 0x5a
			default:
				fill(blk)
			}
		}
	default:
		panic("GenDisk: unknown style " + style)
	}
	return b
}

// fillRandom sets each byte of p to byte(rand.New(src).Uint32()) | 1,
// drawing from src as that would, one draw per byte, with the same bytes:
// GenDisk's "data" bytes since it was written, pinned by sha256 sums in
// tests and the shipped example. It runs PCG's step (documented, and
// fixed by math/rand/v2) with the state in registers and stores a word at
// a time, not a method call through an interface and a checked store per
// byte: GenDisk spent 13 s on 64 MiB under -race.
func fillRandom(src *rand.PCG, p []byte) {
	st, _ := src.MarshalBinary() // "pcg:", then the state: hi, lo
	hi, lo := binary.BigEndian.Uint64(st[4:]), binary.BigEndian.Uint64(st[12:])
	var c byte
	i := 0
	for ; i+8 <= len(p); i += 8 {
		var w uint64
		for k := range 8 {
			hi, lo, c = pcgByte(hi, lo)
			w |= uint64(c) << (8 * k)
		}
		binary.LittleEndian.PutUint64(p[i:], w)
	}
	for ; i < len(p); i++ {
		hi, lo, p[i] = pcgByte(hi, lo)
	}
	src.Seed(hi, lo)
}

// pcgByte advances a rand.PCG state (hi, lo) and returns the new state and
// byte(Uint64()>>32) | 1 of its output.
func pcgByte(hi, lo uint64) (uint64, uint64, byte) {
	const (
		mulHi    = 2549297995355413924
		mulLo    = 4865540595714422341
		incHi    = 6364136223846793005
		incLo    = 1442695040888963407
		cheapMul = 0xda942042e4dd58b5
	)
	// state = state*mul + inc (128 bits), then the DXSM output.
	h, l := bits.Mul64(lo, mulLo)
	h += hi*mulLo + lo*mulHi
	l, c := bits.Add64(l, incLo, 0)
	h, _ = bits.Add64(h, incHi, c)
	hi, lo = h, l
	h ^= h >> 32
	h *= cheapMul
	h ^= h >> 48
	h *= l | 1
	return hi, lo, byte(h>>32) | 1
}

// TB is the part of testing.TB the generators use, so that callers other
// than tests (testscript commands) can provide it.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Disk is a device to put in a generated archive.
type Disk struct {
	Name string
	Data []byte
}

// TestUUID and TestCTime make generated archives reproducible.
var (
	TestUUID  = uuid.UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	TestCTime = time.Unix(1718000000, 0)
)

// ArchiveOptions are the archive sink's options (format/vma's uuid and
// ctime) that give an archive the UUID id and the creation time ctime.
func ArchiveOptions(id uuid.UUID, ctime time.Time) format.Values {
	v, err := format.ParseOptions(vma.Format, fmt.Sprintf("uuid=%s,ctime=%d", id, ctime.Unix()))
	if err != nil {
		panic(err) // a valid UUID and time always parse
	}
	return v
}

// WriteArchive writes disks and configs into an archive with TestUUID and
// TestCTime. order decides the cluster order: "seq" (device after device),
// "interleave" (round robin), "runs" (devices taking turns in runs of 1 to
// 4 clusters, each ascending, as Proxmox's backup interleaves them; from
// seed), "local" (device after device, clusters shuffled within windows
// of 16, as copy-before-write pushes clusters early; from seed) or
// "shuffle" (random, from seed).
func WriteArchive(t TB, disks []Disk, configs []format.Config, order string, seed uint64) []byte {
	t.Helper()
	// Room for the whole archive, so that out does not grow: under -race,
	// copying tens of MiB at once stalls the garbage collector for seconds.
	size := int64(1 << 20) // the header
	for _, d := range disks {
		for off := 0; off < len(d.Data); off += vma.BlockSize { // zero blocks are not stored
			if !zero.IsZero(d.Data[off:min(off+vma.BlockSize, len(d.Data))]) {
				size += vma.BlockSize
			}
		}
		size += (int64(len(d.Data))/(vma.SlotsPerExtent*vma.ClusterSize) + 1) * vma.ExtentHeaderSize
	}
	for _, c := range configs {
		size += int64(len(c.Data))
	}
	var out bytes.Buffer
	out.Grow(int(size))
	w := vma.NewWriter(&out, vma.WithUUID(TestUUID), vma.WithCTime(TestCTime))
	for _, c := range configs {
		if err := w.AddConfig(c.Name, c.Data); err != nil {
			t.Fatal(err)
		}
	}
	type job struct {
		id  int
		idx int64
	}
	var lists [][]job
	for _, d := range disks {
		id, err := w.AddDevice(d.Name, int64(len(d.Data)))
		if err != nil {
			t.Fatal(err)
		}
		var l []job
		for c := int64(0); c*vma.ClusterSize < int64(len(d.Data)); c++ {
			l = append(l, job{id, c})
		}
		lists = append(lists, l)
	}
	var jobs []job
	switch order {
	case "seq", "shuffle":
		for _, l := range lists {
			jobs = append(jobs, l...)
		}
		if order == "shuffle" {
			rand.New(rand.NewPCG(seed, 7)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
		}
	case "interleave":
		for i := 0; ; i++ {
			n := 0
			for _, l := range lists {
				if i < len(l) {
					jobs = append(jobs, l[i])
					n++
				}
			}
			if n == 0 {
				break
			}
		}
	case "local":
		rng := rand.New(rand.NewPCG(seed, 11))
		for _, l := range lists {
			for i := 0; i < len(l); i += 16 {
				w := l[i:min(i+16, len(l))]
				rng.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
			}
			jobs = append(jobs, l...)
		}
	case "runs":
		rng := rand.New(rand.NewPCG(seed, 9))
		next := make([]int, len(lists))
		for left := len(lists); left > 0; {
			i := rng.IntN(len(lists))
			if next[i] == len(lists[i]) {
				continue
			}
			for n := 1 + rng.IntN(4); n > 0 && next[i] < len(lists[i]); n-- {
				jobs = append(jobs, lists[i][next[i]])
				next[i]++
			}
			if next[i] == len(lists[i]) {
				left--
			}
		}
	default:
		t.Fatalf("WriteArchive: unknown order %q", order)
	}
	for _, j := range jobs {
		d := disks[j.id-1].Data
		start := j.idx * vma.ClusterSize
		if err := w.WriteCluster(j.id, j.idx, d[start:min(start+vma.ClusterSize, int64(len(d)))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// PatchName replaces the first NUL-terminated name blob old in an archive's
// header with new (of the same length) and fixes the header MD5. It builds
// archives with names the writer refuses, such as "../x".
func PatchName(t TB, raw []byte, old, new string) []byte {
	t.Helper()
	if len(old) != len(new) {
		t.Fatalf("PatchName: %q and %q differ in length", old, new)
	}
	hs := int(binary.BigEndian.Uint32(raw[56:]))
	i := bytes.Index(raw[12288:hs], append([]byte(old), 0))
	if i < 0 {
		t.Fatalf("PatchName: %q not in the header", old)
	}
	out := bytes.Clone(raw)
	copy(out[12288+i:], new)
	FixHeaderMD5(out[:hs])
	return out
}

// AllZero reports whether b holds only zero bytes.
func AllZero(b []byte) bool { return zero.IsZero(b) }

// Slot builds a blockinfo entry.
func Slot(mask uint16, dev byte, cluster uint32) uint64 {
	return uint64(mask)<<48 | uint64(dev)<<32 | uint64(cluster)
}

// Extent builds a valid extent of the archive with the given UUID (correct
// MD5 and block count) holding slots, its data blocks filled with 0xab.
func Extent(id uuid.UUID, slots ...uint64) []byte {
	blocks := 0
	for _, s := range slots {
		if byte(s>>32) != 0 {
			for m := uint16(s >> 48); m != 0; m &= m - 1 {
				blocks++
			}
		}
	}
	e := make([]byte, 512+blocks*4096)
	copy(e, "VMAE")
	binary.BigEndian.PutUint16(e[6:], uint16(blocks))
	copy(e[8:], id[:])
	for i, s := range slots {
		binary.BigEndian.PutUint64(e[40+8*i:], s)
	}
	for i := 512; i < len(e); i++ {
		e[i] = 0xab
	}
	FixExtentMD5(e)
	return e
}

// FixExtentMD5 recomputes the MD5 of a 512-byte extent header.
func FixExtentMD5(e []byte) {
	clear(e[24:40])
	s := md5.Sum(e[:512])
	copy(e[24:], s[:])
}

// FixHeaderMD5 recomputes the MD5 of a complete archive header.
func FixHeaderMD5(h []byte) {
	clear(h[32:48])
	s := md5.Sum(h)
	copy(h[32:], s[:])
}

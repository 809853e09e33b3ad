package vhdx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

// compact moves the blocks of a qemu-img-made image (which leaves 4 MiB
// after its metadata region) to just after the metadata, so that the
// image costs less to copy and save.
func compact(t *testing.T, m image) image {
	l := m.layout(t)
	end := int64(0)
	for i := range l.entries {
		at := l.bat.off + 8*uint64(i)
		e := binary.LittleEndian.Uint64(m[at:])
		if e&stateMask != blockFullyPresent {
			continue
		}
		from := int64(e >> offsetShift << offsetShift)
		to := from - 4<<20
		if to < int64(l.meta.off+l.meta.length) {
			t.Fatal("compact: the image is not laid out as qemu-img lays it out")
		}
		copy(m[to:to+l.blockSize], m[from:])
		le64(m[at:], uint64(to)|blockFullyPresent)
		end = max(end, to+l.blockSize)
	}
	return m[:end]
}

// TestHostile: damaged or hostile structures are refused when the image
// is opened, with one line naming the structure, the field and its
// offset, in bounded time and memory. Where qemu-img reads such an image
// too (it checks less: a block in the header section or over another,
// a metadata item outside its region, a physical sector size the
// specification does not allow), the test says so; elsewhere it checks
// that qemu-img refuses it as well.
func TestHostile(t *testing.T) {
	good := compact(t, loadImage(t, fixtures(t)["few-1m"]))
	l := good.layout(t)
	cur, other := l.headAt, int64(header1Offset+header2Offset-l.headAt)
	meta := int64(l.meta.off)
	metaEntry := func(i int) int64 { return meta + 32 + 32*int64(i) }
	regionEntry := func(at int64, i int) int64 { return at + 16 + 32*int64(i) }
	setRegions := func(m image, f func(m image, at int64)) {
		for _, at := range []int64{region1Offset, region2Offset} {
			f(m, at)
		}
		m.fixRegions()
	}
	setHeader := func(m image, f func(h []byte)) {
		f(m[cur:])
		m.fixHeader(cur)
	}
	batEntry := func(i int) int64 { return int64(l.bat.off) + 8*int64(i) }
	block0 := binary.LittleEndian.Uint64(good[batEntry(0):])
	le16 := binary.LittleEndian.PutUint16
	u64 := binary.LittleEndian.Uint64
	dir := t.TempDir()
	tests := []struct {
		name  string
		patch func(m image) image
		kind  error
		match string
		qemu  bool // qemu-img reads it (checks less)
	}{
		{"both-headers", func(m image) image { m[header1Offset+100]++; m[header2Offset+100]++; return m }, ErrCorrupt,
			"no valid header: header 1 at 0x10000: checksum ", false},
		{"same-sequence", func(m image) image {
			le64(m[other+8:], u64(m[cur+8:]))
			m.fixHeader(other)
			return m
		}, ErrCorrupt, "have the same sequence number", false},
		{"version", func(m image) image {
			m[other+100]++
			setHeader(m, func(h []byte) { le16(h[66:], 2) })
			return m
		}, ErrCorrupt, "version 2, want 1", false},
		{"log-offset", func(m image) image { setHeader(m, func(h []byte) { le64(h[72:], 0x100001) }); return m }, ErrCorrupt,
			"LogOffset 0x100001: want a multiple of 1 MiB", false},
		{"log-version", func(m image) image { setHeader(m, func(h []byte) { le16(h[64:], 1) }); return m }, ErrCorrupt,
			"LogVersion 1, want 0", false},
		{"log-length", func(m image) image {
			setHeader(m, func(h []byte) { h[48] = 1; le32(h[68:], 3<<19) })
			return m
		}, ErrCorrupt, "LogLength 1572864: want a multiple of 1 MiB", false},
		{"region-tables", func(m image) image { m[region1Offset+100]++; m[region2Offset+100]++; return m }, ErrCorrupt,
			"region table at 0x30000: checksum 0x", false},
		{"region-overlap", func(m image) image {
			setRegions(m, func(m image, at int64) { le64(m[regionEntry(at, 1)+16:], l.bat.off+4096) })
			return m
		}, ErrCorrupt, "the metadata region overlaps the BAT (at 0x200000, 1048576 bytes)", false},
		{"region-on-log", func(m image) image {
			setRegions(m, func(m image, at int64) { le64(m[regionEntry(at, 0)+16:], 0x180000) })
			return m
		}, ErrCorrupt, "the BAT overlaps the log (at 0x100000, 1048576 bytes)", false},
		{"region-required", func(m image) image {
			setRegions(m, func(m image, at int64) {
				le32(m[at+8:], 3)
				e := m[regionEntry(at, 2):]
				copy(e, "an unknown guid!")
				le64(e[16:], 100<<20)
				le32(e[24:], 1<<20)
				le32(e[28:], 1)
			})
			return m
		}, ErrUnsupported, "entry 2 ({", false},
		{"region-count", func(m image) image { setRegions(m, func(m image, at int64) { le32(m[at+8:], 3000) }); return m }, ErrCorrupt,
			"EntryCount 3000: at most 2047", false},
		{"region-no-bat", func(m image) image { setRegions(m, func(m image, at int64) { m[regionEntry(at, 0)]++ }); return m }, ErrCorrupt,
			"region table at 0x30000: no BAT region", false},
		{"metadata-signature", func(m image) image { m[meta]++; return m }, ErrCorrupt,
			"metadata table at 0x300000: signature \"netadata\"", false},
		{"metadata-missing", func(m image) image { le16(m[meta+10:], 4); return m }, ErrCorrupt,
			"no physical sector size item", false},
		{"metadata-duplicate", func(m image) image { copy(m[metaEntry(4):], logicalSectorGUID[:]); return m }, ErrCorrupt,
			"metadata entry 4 at 0x3000a0: a second logical sector size item", false},
		{"metadata-required", func(m image) image {
			le16(m[meta+10:], 6)
			copy(m[metaEntry(5):], "an unknown item!")
			le32(m[metaEntry(5)+24:], 4)
			return m
		}, ErrUnsupported, "item {", false},
		{"metadata-count", func(m image) image { le16(m[meta+10:], 0xffff); return m }, ErrCorrupt,
			"EntryCount 65535: at most 2047", false},
		{"block-size", func(m image) image { le32(m[m.metaItem(t, fileParamsGUID):], 3<<20); return m }, ErrCorrupt,
			"BlockSize 3145728: want a power of two from 1 MiB to 256 MiB", false},
		{"block-size-huge", func(m image) image { le32(m[m.metaItem(t, fileParamsGUID):], 512<<20); return m }, ErrCorrupt,
			"BlockSize 536870912", false},
		{"logical-sector", func(m image) image { le32(m[m.metaItem(t, logicalSectorGUID):], 1024); return m }, ErrCorrupt,
			"logical sector size at 0x310020: 1024: want 512 or 4096", false},
		{"physical-sector", func(m image) image { le32(m[m.metaItem(t, physicalSectorGUID):], 1000); return m }, ErrCorrupt,
			"physical sector size at 0x310024: 1000: want 512 or 4096", true},
		{"size-huge", func(m image) image { le64(m[m.metaItem(t, virtualSizeGUID):], 1<<62); return m }, ErrCorrupt,
			"virtual disk size at 0x310008: 4611686018427387904 bytes: more than 64 TiB", false},
		{"size-past-bat", func(m image) image { le64(m[m.metaItem(t, virtualSizeGUID):], 60<<40); return m }, ErrCorrupt,
			"the BAT at 0x200000: 1048576 bytes hold 131072 entries; the disk (65970697666560 bytes in 1048576-byte blocks) needs 62929919", false},
		{"item-outside", func(m image) image { le32(m[metaEntry(1)+16:], 2<<20); return m }, ErrCorrupt,
			"virtual disk size item at offset 0x200000, 8 bytes: want 8 bytes within the 1048576-byte metadata region", false},
		{"parent-without-locator", func(m image) image { m[m.metaItem(t, fileParamsGUID)+4] |= 2; return m }, ErrCorrupt,
			"HasParent is set, and there is no parent locator", false},
		{"bat-past-eof", func(m image) image { le64(m[batEntry(1):], 100<<20|blockFullyPresent); return m }, ErrCorrupt,
			"BAT entry 1 (at 0x200008), payload block 1 at 0x6400000, 1048576 bytes: past the end of the file", false},
		{"bat-header-section", func(m image) image { le64(m[batEntry(1):], blockFullyPresent); return m }, ErrCorrupt,
			"BAT entry 1 (at 0x200008), payload block 1 at 0x0: inside the header section", true},
		{"bat-on-metadata", func(m image) image { le64(m[batEntry(1):], l.meta.off|blockFullyPresent); return m }, ErrCorrupt,
			"payload block 1 at 0x300000: overlaps the metadata region (at 0x300000, 1048576 bytes)", false},
		{"bat-overlap", func(m image) image { le64(m[batEntry(2):], block0); return m }, ErrCorrupt,
			"BAT entry 2 (at 0x200010), payload block 2 at 0x400000: overlaps another block", true},
		{"bat-reserved", func(m image) image { le64(m[batEntry(1):], 4); return m }, ErrCorrupt,
			"BAT entry 1 (at 0x200008), block 1: reserved state 4", false},
		{"bat-partial", func(m image) image { le64(m[batEntry(1):], block0&^7|blockPartiallyPresent); return m }, ErrCorrupt,
			"block 1: PAYLOAD_BLOCK_PARTIALLY_PRESENT in an image without a parent", false},
		{"truncated", func(m image) image { return m[:block0>>offsetShift<<offsetShift+4096] }, ErrCorrupt,
			"past the end of the file", false},
		{"short", func(m image) image { return m[:30] }, ErrCorrupt, "no valid header", false},
		{"not-vhdx", func(m image) image { m[7] = 'X'; return m }, format.ErrUnknownFormat, "not a VHDX file (signature \"vhdxfilX\")", false},
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	// Each case patches buf, a copy of good; what it changed is copied
	// back from good after it (a whole copy costs much under -race).
	buf := append(image(nil), good...)
	restore := func() { // the patches change structures, not the data
		const chunk = 64 << 10
		for off := 0; off < int(l.meta.off+l.meta.length); off += chunk {
			end := min(off+chunk, len(good))
			if !bytes.Equal(buf[off:end], good[off:end]) {
				copy(buf[off:end], good[off:end])
			}
		}
	}
	for _, tc := range tests {
		m := tc.patch(buf)
		path := m.save(t, filepath.Join(dir, tc.name+".vhdx"))
		restore()
		src, err := openPath(t, path, format.OpenOptions{})
		if err == nil {
			src.Close()
			t.Errorf("%s: opened", tc.name)
			continue
		}
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.match) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want %v mentioning %q, on one line", tc.name, err, tc.kind, tc.match)
		}
		if tc.name == "not-vhdx" || !firstRun("hostile/"+tc.name) {
			continue
		}
		// qemu-img info opens the image (and checks its BAT); some states
		// fail only when read.
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out, qerr := exec.Command("qemu-img", "info", "-f", "vhdx", path).CombinedOutput()
			if qerr == nil && !tc.qemu {
				out, qerr = exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", path, path+".raw").CombinedOutput()
			}
			if read := qerr == nil; read != tc.qemu {
				t.Errorf("%s: qemu-img reads it: %v, the test expects %v\n%s", tc.name, read, tc.qemu, out)
			}
		})
	}
	wg.Wait()
}

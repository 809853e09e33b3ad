package vpc_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vpc"
)

// TestHostile: every field a reader would trust is checked, with one
// line naming it and its offset: checksums, cookies, the block size, the
// BAT's size and place, blocks past the end of the file or over each
// other or over the metadata, sizes over 2040 GiB, disk types. Where
// qemu-img reads the image all the same (it checks neither the header's
// checksum nor overlaps, and takes unknown disk types for dynamic), this
// reader is stricter, and the test says so.
func TestHostile(t *testing.T) {
	needFixtures(t)
	dyn, err := os.ReadFile(fixtures.cases["dynamic"])
	if err != nil {
		t.Fatal(err)
	}
	dyn = shrink(dyn) // qemu-img's metadata, blocks of 4 KiB: 0, 512 and 1024 in the file
	fixed, err := os.ReadFile(fixtures.cases["fixed-small"])
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	// The image's layout: qemu-img's metadata, 1284 entries of blocks of
	// 4 KiB (and a bitmap of 512 bytes) after it.
	const hdr, bat = 0x200, 0x600
	if be.Uint64(dyn[16:]) != hdr || be.Uint64(dyn[hdr+16:]) != bat || be.Uint32(dyn[hdr+28:]) != 1284 || be.Uint32(dyn[bat:]) != 0x1c00/512 || len(dyn) != 0x5400 {
		t.Fatalf("unexpected layout: header at %#x, BAT at %#x, first block %#x, %#x bytes", be.Uint64(dyn[16:]), be.Uint64(dyn[hdr+16:]), be.Uint32(dyn[bat:]), len(dyn))
	}
	dir := filepath.Join(fixtures.dir, "hostile") // the same files on every pass: qemu-img is asked once
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	header := func(f func(h []byte)) func([]byte) []byte {
		return func(b []byte) []byte { f(b[hdr : hdr+1024]); fixSum(b[hdr:hdr+1024], 36); return b }
	}
	footers := func(f func(foot []byte)) func([]byte) []byte {
		return func(b []byte) []byte { fixFooters(b, f); return b }
	}
	entry := func(i int, e func(b []byte) uint32) func([]byte) []byte {
		return func(b []byte) []byte { be.PutUint32(b[bat+4*i:], e(b)); return b }
	}
	first := func(b []byte) uint32 { return be.Uint32(b[bat:]) }
	for _, tc := range []struct {
		name   string
		from   []byte
		change func([]byte) []byte
		kind   error
		match  string
		qemu   bool // qemu-img refuses it too
	}{
		{"footer-checksum", dyn, func(b []byte) []byte { b[100]++; return b }, vpc.ErrCorrupt, "footer at 0x0: checksum", true},
		{"header-checksum", dyn, func(b []byte) []byte { b[hdr+800]++; return b }, vpc.ErrCorrupt, "dynamic disk header at 0x200: checksum", false},
		{"header-cookie", dyn, header(func(h []byte) { h[7] = 'X' }), vpc.ErrCorrupt, `dynamic disk header at 0x200: cookie "cxsparsX"`, true},
		{"block-size-3m", dyn, header(func(h []byte) { be.PutUint32(h[32:], 3<<20) }), vpc.ErrCorrupt, "block size 3145728 (header at 0x220): not a power of two", true},
		{"block-size-0", dyn, header(func(h []byte) { be.PutUint32(h[32:], 0) }), vpc.ErrCorrupt, "block size 0 (header at 0x220)", true},
		{"block-size-2k", dyn, header(func(h []byte) { be.PutUint32(h[32:], 2048) }), vpc.ErrUnsupported, "block size 2048 (header at 0x220): blocks under 4 KiB", true},
		{"entries-few", dyn, header(func(h []byte) { be.PutUint32(h[28:], 1) }), vpc.ErrCorrupt, "max table entries 1 (header at 0x21c): 1 blocks of 4096 bytes do not cover", true},
		{"entries-huge", dyn, header(func(h []byte) { be.PutUint32(h[28:], 0xffffffff) }), vpc.ErrCorrupt, "max table entries 4294967295 (header at 0x21c): a BAT over 512 MiB", true},
		{"entries-past-eof", dyn, header(func(h []byte) { be.PutUint32(h[28:], 16<<20) }), vpc.ErrCorrupt, "BAT at 0x600 (table offset, header at 0x210) of 16777216 entries runs past the end of the file", true},
		{"table-offset", dyn, header(func(h []byte) { be.PutUint64(h[16:], 1<<40) }), vpc.ErrCorrupt, "BAT at 0x10000000000", true},
		{"table-offset-wraps", dyn, header(func(h []byte) { be.PutUint64(h[16:], ^uint64(0)-3) }), vpc.ErrCorrupt, "BAT at 0xfffffffffffffffc", true},
		{"entry-past-eof", dyn, entry(512, func([]byte) uint32 { return 1 << 20 }), vpc.ErrCorrupt, "BAT entry 512 (at 0xe00): block at 0x20000000 runs past the end of the file", true},
		{"entry-max", dyn, entry(1024, func([]byte) uint32 { return 0xfffffffe }), vpc.ErrCorrupt, "BAT entry 1024 (at 0x1600): block at 0x1fffffffc00 runs past the end", true},
		{"truncated", dyn, func(b []byte) []byte { return b[:0x3000] }, vpc.ErrCorrupt, "BAT entry 512 (at 0xe00): block at 0x2e00 runs past the end of the file (0x3000 bytes)", true},
		{"entries-equal", dyn, entry(512, first), vpc.ErrCorrupt, "BAT entries 0 and 512 (at 0x600 and 0xe00): blocks at 0x1c00 and 0x1c00 overlap", false},
		{"entries-overlap", dyn, entry(1024, func(b []byte) uint32 { return first(b) + 8 }), vpc.ErrCorrupt, "BAT entries 0 and 1024 (at 0x600 and 0x1600): blocks at 0x1c00 and 0x2c00 overlap (a block takes 0x1200 bytes)", false},
		{"entry-over-header", dyn, entry(0, func([]byte) uint32 { return 1 }), vpc.ErrCorrupt, "BAT entry 0 (at 0x600): block at 0x200 overlaps the dynamic disk header (0x200 to 0x600)", false},
		{"entry-over-footer", dyn, entry(0, func([]byte) uint32 { return 0 }), vpc.ErrCorrupt, "BAT entry 0 (at 0x600): block at 0x0 overlaps the footer's copy", false},
		{"entry-over-bat", dyn, entry(0, func([]byte) uint32 { return 3 }), vpc.ErrCorrupt, "BAT entry 0 (at 0x600): block at 0x600 overlaps the BAT (0x600 to 0x1a10)", false},
		{"data-offset", dyn, footers(func(f []byte) { be.PutUint64(f[16:], 1<<62) }), vpc.ErrCorrupt, "data offset 0x4000000000000000 (footer at 0x10): the dynamic disk header runs past the end", true},
		{"type-fixed-at-0", dyn, footers(func(f []byte) { be.PutUint32(f[60:], vpc.TypeFixed) }), vpc.ErrCorrupt, "disk type 2 (fixed) in the footer at 0", false},
		{"type-7", dyn, footers(func(f []byte) { be.PutUint32(f[60:], 7) }), vpc.ErrCorrupt, "disk type 7 in the footer at 0x3c", false},
		{"too-large", dyn, footers(func(f []byte) { copy(f[28:], "qem2"); be.PutUint64(f[48:], vpc.MaxSize+512) }), vpc.ErrCorrupt, "virtual size 2190433321472 bytes (current size at 0x30, creator \"qem2\" 5.3): a VHD holds at most 2040 GiB", true},
		{"short", dyn, func(b []byte) []byte { return b[:100] }, format.ErrUnknownFormat, "not a VHD: 100 bytes", true},
		{"fixed-checksum", fixed, func(b []byte) []byte { b[len(b)-10]++; return b }, vpc.ErrCorrupt, "checksum", true},
		{"fixed-too-large", fixed, footers(func(f []byte) { copy(f[28:], "win "); be.PutUint64(f[48:], uint64(len(fixed))) }), vpc.ErrCorrupt, "its data ends before its footer", false},
		{"dynamic-at-end", fixed, footers(func(f []byte) { be.PutUint32(f[60:], vpc.TypeDynamic) }), vpc.ErrCorrupt, "disk type 3 in the footer at", true},
		{"no-footer", fixed, func(b []byte) []byte { return b[:len(b)-512] }, format.ErrUnknownFormat, `not a VHD: no footer ("conectix") at the start or the end`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".vhd")
			if err := os.WriteFile(p, tc.change(bytes.Clone(tc.from)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, qerr := once("qemu-img", "info", "-f", "vpc", p)
			if (qerr != nil) != tc.qemu {
				t.Errorf("qemu-img info: %v (refuses: %v, the test says %v)\n%s", qerr, qerr != nil, tc.qemu, out)
			}
			src, err := open(t, p, format.OpenOptions{Forced: true})
			if err == nil {
				src.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.match) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v; want %v mentioning %q, in one line", err, tc.kind, tc.match)
			}
			if !strings.HasPrefix(err.Error(), p+": ") {
				t.Errorf("%v: does not name the file", err)
			}
		})
	}
}

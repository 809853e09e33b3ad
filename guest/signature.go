package guest

import (
	"encoding/binary"
	"io"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// A signature names contents vmaconv recognises but does not read: it
// shows their type in a listing and says they are not readable.
type signature struct {
	name string
	why  string
	at   func(r io.ReaderAt, size int64) bool
}

// magicAt reports whether r holds magic at off.
func magicAt(r io.ReaderAt, size, off int64, magic string) bool {
	if off < 0 || off+int64(len(magic)) > size {
		return false
	}
	b := make([]byte, len(magic))
	if n, _ := r.ReadAt(b, off); n != len(b) {
		return false
	}
	return string(b) == magic
}

// mdAt reports whether an MD RAID superblock starts at off.
func mdAt(r io.ReaderAt, size, off int64) bool {
	var b [4]byte
	if off < 0 || off+4 > size {
		return false
	}
	if n, _ := r.ReadAt(b[:], off); n != 4 {
		return false
	}
	return binary.LittleEndian.Uint32(b[:]) == 0xa92b4efc || binary.BigEndian.Uint32(b[:]) == 0xa92b4efc
}

// zfsAt reports whether a ZFS uberblock array follows the first vdev
// label (uberblocks at 128 KiB, 1 KiB apart, magic 0x00bab10c).
func zfsAt(r io.ReaderAt, size int64) bool {
	var b [8]byte
	for i := int64(0); i < 8; i++ {
		off := 128<<10 + i<<10
		if off+8 > size {
			return false
		}
		if n, _ := r.ReadAt(b[:], off); n != 8 {
			return false
		}
		if binary.LittleEndian.Uint64(b[:]) == 0x00bab10c || binary.BigEndian.Uint64(b[:]) == 0x00bab10c {
			return true
		}
	}
	return false
}

// signatures are checked in order, after the file systems vmaconv reads.
var signatures = []signature{
	{"luks", "encrypted (LUKS)", func(r io.ReaderAt, size int64) bool {
		return magicAt(r, size, 0, "LUKS\xba\xbe") || magicAt(r, size, 0, "SKUL\xba\xbe")
	}},
	{"btrfs", "Btrfs is not readable", func(r io.ReaderAt, size int64) bool { return magicAt(r, size, 0x10040, "_BHRfS_M") }},
	{"zfs", "ZFS is not readable", zfsAt},
	{"linux_raid_member", "an MD RAID member is not readable", func(r io.ReaderAt, size int64) bool {
		// Superblock 1.1 at 0, 1.2 at 4 KiB, 1.0 8 KiB from the end,
		// 0.90 in the last 64 KiB-aligned 64 KiB.
		return mdAt(r, size, 0) || mdAt(r, size, 4096) ||
			size >= 8192 && mdAt(r, size, (size-8192)&^4095) ||
			size >= 128<<10 && mdAt(r, size, (size&^(64<<10-1))-64<<10)
	}},
	{"swap", "Linux swap holds no files", func(r io.ReaderAt, size int64) bool {
		return magicAt(r, size, 4096-10, "SWAPSPACE2") || magicAt(r, size, 4096-10, "SWAP-SPACE")
	}},
	{"exfat", "exFAT is not readable", func(r io.ReaderAt, size int64) bool { return magicAt(r, size, 3, "EXFAT   ") }},
	{"refs", "ReFS is not readable", func(r io.ReaderAt, size int64) bool { return magicAt(r, size, 3, "ReFS\x00\x00\x00\x00") }},
	{"bitlocker", "encrypted (BitLocker)", func(r io.ReaderAt, size int64) bool { return magicAt(r, size, 3, "-FVE-FS-") }},
	{"bcache", "a bcache device is not readable", func(r io.ReaderAt, size int64) bool {
		return magicAt(r, size, 4096+24, "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81")
	}},
	{"vmfs", "VMFS is not readable", func(r io.ReaderAt, size int64) bool {
		return magicAt(r, size, 0x100000, "\x5e\xf1\xab\x2f") || magicAt(r, size, 0x200000, "\x0d\xd0\x01\xc0")
	}},
}

// partitionSignatures name partition types whose contents vmaconv does
// not read, whatever they hold (by GPT type GUID or MBR type).
var partitionSignatures = map[string][2]string{
	"0x42":                                 {"ldm", "a Windows dynamic disk (LDM) is not readable"},
	"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": {"ldm", "a Windows dynamic disk (LDM metadata) is not readable"},
	"AF9B60A0-1431-4F62-BC68-3311714A69AD": {"ldm", "a Windows dynamic disk (LDM data) is not readable"},
	"E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": {"storage_spaces", "Microsoft Storage Spaces are not readable"},
}

// allZero reports whether the first 64 KiB of r (at most size bytes) are
// all zero: a volume that holds nothing yet.
func allZero(r io.ReaderAt, size int64) bool {
	b := make([]byte, min(size, 64<<10))
	n, _ := r.ReadAt(b, 0)
	return n == len(b) && zero.IsZero(b)
}

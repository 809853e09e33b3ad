// Package ntfs reads NTFS file systems (NTFS 3.x, as Windows NT 4 to 11
// and ntfs-3g write them) for guest.FS, read-only.
//
// It reads the boot sector, the $MFT (bootstrapped from its first record,
// with attribute lists), MFT records with their update sequence fixups,
// resident and non-resident attributes, run lists (sparse runs are holes,
// reported through guest.Sparse), LZNT1-compressed streams, directory
// indexes ($I30: the index root and the index allocation B-tree, walked in
// order), hard links, alternate data streams and reparse points.
//
// What a node shows:
//
//   - Ino is the MFT record number, shared by a file's hard links. An
//     alternate data stream is a regular file listed next to its file as
//     "name:stream"; its Ino is 1<<63 | record<<16 | k, k the stream's
//     1-based position among the file's named $DATA streams.
//   - Nlink counts the record's Win32 and POSIX names (a DOS 8.3 name that
//     pairs a Win32 name is not a link). A directory lists one name per
//     file: the DOS name is skipped where the same record has a Win32 or
//     POSIX name in that directory.
//   - Mode: directories 0755|fs.ModeDir, files 0644, 0444 with the
//     read-only attribute; symbolic links and junctions (reparse tags
//     IO_REPARSE_TAG_SYMLINK and IO_REPARSE_TAG_MOUNT_POINT) are
//     fs.ModeSymlink|0777; other reparse points show as the file or
//     directory NTFS stores. UID and GID are 0.
//   - Readlink returns the link's print name (else its substitute name
//     without the "\??\" prefix) with every `\` turned to `/`: "dir\file"
//     reads "dir/file", a junction to C:\Users reads "C:/Users".
//   - ModTime, ATime and CTime are $STANDARD_INFORMATION's modification,
//     access and MFT-change times.
//   - The root hides the system files of MFT records 0 to 15 ($MFT,
//     $MFTMirr, $LogFile, $Volume, $AttrDef, $Bitmap, $Boot, $BadClus,
//     $Secure, $UpCase, $Extend), as Windows and ntfs-3g do.
//
// Not supported: encrypted files (EFS: Open fails), $EA extended
// attributes, security descriptors (no owners or ACLs), non-resident
// reparse points (the node shows as the file or directory), the $LogFile
// (a volume not cleanly unmounted reads as its MFT stands).
//
// The reader is written from the on-disk format, not over
// www.velocidex.com/golang/go-ntfs: that parser walks a directory's
// $INDEX_ALLOCATION over its whole claimed size in fixed 4 KiB steps
// (allocated or not, so freed blocks' stale entries show, and a hostile
// size loops without bound), expands attribute lists without a bound,
// names a listed file by its MFT entry's last Win32 or POSIX name rather
// than by the index entry (a hard link shows under its other name) and
// decompresses a whole compression unit on every read.
//
// Hostile images cost bounded work and memory: run lists, attribute lists,
// extension records, index blocks, the B-tree depth and the entries of
// one directory are all capped; a damaged structure is an error wrapping
// guest.ErrCorrupt, and a panic in a parser is turned into one as a last
// line of defence.
package ntfs

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/vmaconv/vmaconv/guest"
)

func init() {
	guest.Register(guest.Filesystem{Name: "ntfs", Probe: Probe, Open: Open})
}

// boot holds what the boot sector says.
type boot struct {
	sectorSize  int64
	clusterSize int64
	clusters    int64 // clusters in the volume
	mftLCN      int64
	recordSize  int64
}

func parseBoot(b []byte, size int64) (boot, error) {
	var bt boot
	if len(b) < 512 {
		return bt, fmt.Errorf("ntfs: boot sector: short read: %w", guest.ErrCorrupt)
	}
	if string(b[3:11]) != "NTFS    " {
		return bt, fmt.Errorf("ntfs: boot sector: no NTFS signature: %w", guest.ErrCorrupt)
	}
	bps := int64(binary.LittleEndian.Uint16(b[11:]))
	if bps < 256 || bps > 4096 || bits.OnesCount64(uint64(bps)) != 1 {
		return bt, fmt.Errorf("ntfs: boot sector: %d bytes per sector: %w", bps, guest.ErrCorrupt)
	}
	spc := int64(b[13])
	switch {
	case spc == 0:
		return bt, fmt.Errorf("ntfs: boot sector: 0 sectors per cluster: %w", guest.ErrCorrupt)
	case spc > 0x80:
		// Windows 10 writes large cluster sizes as a negative shift.
		if 256-spc > 12 {
			return bt, fmt.Errorf("ntfs: boot sector: sectors per cluster 2^%d: %w", 256-spc, guest.ErrCorrupt)
		}
		spc = 1 << (256 - spc)
	case bits.OnesCount64(uint64(spc)) != 1:
		return bt, fmt.Errorf("ntfs: boot sector: %d sectors per cluster: %w", spc, guest.ErrCorrupt)
	}
	bt.sectorSize = bps
	bt.clusterSize = bps * spc
	if bt.clusterSize > 2<<20 {
		return bt, fmt.Errorf("ntfs: boot sector: cluster size %d > 2 MiB: %w", bt.clusterSize, guest.ErrCorrupt)
	}
	sectors := binary.LittleEndian.Uint64(b[0x28:])
	if sectors == 0 || sectors > 1<<52 {
		return bt, fmt.Errorf("ntfs: boot sector: %d sectors: %w", sectors, guest.ErrCorrupt)
	}
	bt.clusters = int64(sectors) / spc
	if bt.clusters == 0 {
		return bt, fmt.Errorf("ntfs: boot sector: no whole cluster: %w", guest.ErrCorrupt)
	}
	bt.mftLCN = int64(binary.LittleEndian.Uint64(b[0x30:]))
	if bt.mftLCN <= 0 || bt.mftLCN >= bt.clusters {
		return bt, fmt.Errorf("ntfs: boot sector: $MFT at cluster %d of %d: %w", bt.mftLCN, bt.clusters, guest.ErrCorrupt)
	}
	rs := int8(b[0x40])
	switch {
	case rs > 0:
		bt.recordSize = int64(rs) * bt.clusterSize
	case rs < 0 && rs >= -31:
		bt.recordSize = 1 << uint(-rs)
	}
	if bt.recordSize < 256 || bt.recordSize > 64<<10 || bits.OnesCount64(uint64(bt.recordSize)) != 1 {
		return bt, fmt.Errorf("ntfs: boot sector: MFT record size %d (byte %#x): %w", bt.recordSize, b[0x40], guest.ErrCorrupt)
	}
	if size > 0 && bt.mftLCN*bt.clusterSize+bt.recordSize > size {
		return bt, fmt.Errorf("ntfs: boot sector: $MFT at byte %d past the end (%d): %w", bt.mftLCN*bt.clusterSize, size, guest.ErrCorrupt)
	}
	return bt, nil
}

// Probe returns "ntfs" if r starts with an NTFS boot sector: the "NTFS    "
// OEM id, a sane sector and cluster size and the 0x55AA signature.
func Probe(r io.ReaderAt, size int64) (kind string) {
	defer func() {
		if recover() != nil {
			kind = ""
		}
	}()
	b := make([]byte, 512)
	if n, _ := r.ReadAt(b, 0); n < len(b) {
		return ""
	}
	if b[510] != 0x55 || b[511] != 0xAA {
		return ""
	}
	if _, err := parseBoot(b, size); err != nil {
		return ""
	}
	return "ntfs"
}

// Open opens the NTFS file system at the start of r (size bytes): it
// reads the boot sector and bootstraps the $MFT from its first record.
func Open(r io.ReaderAt, size int64) (f guest.FS, err error) {
	defer recoverErr("open", &err)
	b := make([]byte, 512)
	if n, err := r.ReadAt(b, 0); n < len(b) {
		return nil, fmt.Errorf("ntfs: boot sector: %v: %w", err, guest.ErrCorrupt)
	}
	bt, err := parseBoot(b, size)
	if err != nil {
		return nil, err
	}
	if size > 0 && bt.clusters*bt.clusterSize > size {
		// A volume larger than its device: clip, reads past the end
		// fail as corrupt.
		bt.clusters = size / bt.clusterSize
	}
	v := &volume{dev: r, size: size, boot: bt}
	v.cache.init(recordCacheSize)
	if err := v.bootstrap(); err != nil {
		return nil, err
	}
	return v, nil
}

// recoverErr turns a panic into an error wrapping guest.ErrCorrupt.
func recoverErr(what string, err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("ntfs: %s: internal error on damaged data (%v): %w", what, p, guest.ErrCorrupt)
	}
}

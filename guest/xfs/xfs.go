// Package xfs reads XFS file systems (version 5, with metadata checksums,
// and version 4) read-only, at random: directories in every format
// (shortform, block, leaf, node, with extent or B+tree data forks),
// regular files through their extent maps (extent list or B+tree, read
// lazily; unwritten extents read as zeros and are holes), and symbolic
// links (inline and remote). It registers itself with package guest as
// "xfs".
//
// Only the data device is read: files on a realtime device are refused.
// The log is not replayed, so a file system that was not unmounted cleanly
// shows its last checkpointed state. Checksums are not verified; every
// structure is bounds-checked instead.
package xfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/vmaconv/vmaconv/guest"
)

func init() {
	guest.Register(guest.Filesystem{Name: "xfs", Probe: Probe, Open: func(r io.ReaderAt, size int64) (guest.FS, error) {
		f, err := Open(r, size)
		if err != nil {
			return nil, err // not a typed nil
		}
		return f, nil
	}})
}

var be = binary.BigEndian

// Superblock feature bits (xfs_format.h).
const (
	versionNumMask = 0x000f
	versionDirV2   = 0x2000
	versionMore    = 0x8000

	features2Lazy    = 0x0002
	features2Attr2   = 0x0008
	features2Parent  = 0x0010
	features2Projid  = 0x0080
	features2CRC     = 0x0100 // never on version 4: refused as unknown
	features2Ftype   = 0x0200
	features2Known   = features2Lazy | features2Attr2 | features2Parent | features2Projid | features2Ftype
	incompatFtype    = 0x0001
	incompatSpinodes = 0x0002
	incompatMetaUUID = 0x0004
	incompatBigtime  = 0x0008
	incompatRepair   = 0x0010
	incompatNrext64  = 0x0020
	incompatExchange = 0x0040
	incompatParent   = 0x0080
	incompatMetadir  = 0x0100
	incompatZoned    = 0x0200
	incompatKnown    = incompatFtype | incompatSpinodes | incompatMetaUUID | incompatBigtime | incompatNrext64 | incompatExchange | incompatParent
)

// Limits on what this reader accepts.
const (
	maxBlockSize = 65536
	cacheBytes   = 4 << 20 // metadata block cache
)

// superblock holds the fields of the primary superblock that the reader
// uses, checked by parseSuperblock.
type superblock struct {
	blockSize  uint32
	dblocks    uint64
	rootIno    uint64
	agBlocks   uint32
	agCount    uint32
	version    int // 4 or 5
	sectSize   uint16
	inodeSize  uint16
	blockLog   uint8
	inodeLog   uint8
	inopbLog   uint8
	agBlkLog   uint8
	dirBlkLog  uint8
	ftype      bool
	uuid       [16]byte
	metaUUID   [16]byte
	nrext64    bool
	dirBlkSize uint32
}

// FS is an XFS file system opened read-only. It is safe for concurrent
// use.
type FS struct {
	r    io.ReaderAt
	size int64
	sb   superblock

	mu     sync.Mutex
	cache  map[int64][]byte // metadata blocks by byte offset
	cached int
}

// Probe returns "xfs" if r starts with an XFS superblock, else "".
func Probe(r io.ReaderAt, size int64) string {
	var b [512]byte
	if size < int64(len(b)) {
		return ""
	}
	if _, err := r.ReadAt(b[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	if string(b[0:4]) != "XFSB" {
		return ""
	}
	v := be.Uint16(b[100:]) & versionNumMask
	if v != 4 && v != 5 {
		return ""
	}
	bs := be.Uint32(b[4:])
	if bs < 512 || bs > maxBlockSize || bs&(bs-1) != 0 {
		return ""
	}
	return "xfs"
}

// Open opens the XFS file system at the start of r, size bytes long. It
// checks the superblock and refuses features it cannot read.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	b := make([]byte, 512)
	if size < 512 {
		return nil, fmt.Errorf("xfs: device of %d bytes is too small for a superblock: %w", size, guest.ErrCorrupt)
	}
	if err := readFull(r, b, 0); err != nil {
		return nil, fmt.Errorf("xfs: reading the superblock: %w", err)
	}
	sb, err := parseSuperblock(b)
	if err != nil {
		return nil, err
	}
	// A device shorter than the file system (a truncated image) is read
	// as far as it goes: reads past its end fail one by one.
	f := &FS{r: r, size: size, sb: sb, cache: map[int64][]byte{}}
	if _, err := f.inode(sb.rootIno); err != nil {
		return nil, fmt.Errorf("xfs: root directory: %w", unprefix(err))
	}
	return f, nil
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("xfs: "+format+": %w", append(a, guest.ErrCorrupt)...)
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

func log2(v uint64) uint8 { return uint8(bits.Len64(v) - 1) }

func parseSuperblock(b []byte) (superblock, error) {
	var sb superblock
	if string(b[0:4]) != "XFSB" {
		return sb, corrupt("superblock: bad magic %q, want \"XFSB\"", b[0:4])
	}
	sb.blockSize = be.Uint32(b[4:])
	sb.dblocks = be.Uint64(b[8:])
	sb.rootIno = be.Uint64(b[56:])
	sb.agBlocks = be.Uint32(b[84:])
	sb.agCount = be.Uint32(b[88:])
	versionnum := be.Uint16(b[100:])
	sb.sectSize = be.Uint16(b[102:])
	sb.inodeSize = be.Uint16(b[104:])
	inopblock := be.Uint16(b[106:])
	sb.blockLog = b[120]
	sectLog := b[121]
	sb.inodeLog = b[122]
	sb.inopbLog = b[123]
	sb.agBlkLog = b[124]
	inprogress := b[126]
	sb.dirBlkLog = b[192]
	features2 := be.Uint32(b[200:]) | be.Uint32(b[204:])
	incompat := be.Uint32(b[216:])
	copy(sb.uuid[:], b[32:48])
	copy(sb.metaUUID[:], b[32:48])

	bs := uint64(sb.blockSize)
	if bs < 512 || bs > maxBlockSize || !isPow2(bs) || log2(bs) != sb.blockLog {
		return sb, corrupt("superblock: block size %d (log %d) is not a power of two from 512 to 65536", bs, sb.blockLog)
	}
	ss := uint64(sb.sectSize)
	if ss < 512 || ss > 32768 || !isPow2(ss) || log2(ss) != sectLog || ss > bs {
		return sb, corrupt("superblock: sector size %d (log %d) is not a power of two from 512 to the block size", ss, sectLog)
	}
	is := uint64(sb.inodeSize)
	if is < 256 || is > 2048 || !isPow2(is) || log2(is) != sb.inodeLog || is > bs {
		return sb, corrupt("superblock: inode size %d (log %d) is not a power of two from 256 to 2048", is, sb.inodeLog)
	}
	if uint64(inopblock) != bs/is || sb.inopbLog != sb.blockLog-sb.inodeLog {
		return sb, corrupt("superblock: %d inodes per block (log %d), want %d", inopblock, sb.inopbLog, bs/is)
	}
	if sb.agBlocks < 64 || sb.agBlkLog != uint8(bits.Len32(sb.agBlocks-1)) {
		return sb, corrupt("superblock: %d blocks per allocation group (log %d)", sb.agBlocks, sb.agBlkLog)
	}
	if int(sb.agBlkLog)+int(sb.inopbLog) > 56 || int(sb.agBlkLog)+int(sb.blockLog) > 48 {
		return sb, corrupt("superblock: allocation groups of 2^%d blocks of %d bytes are too large", sb.agBlkLog, bs)
	}
	if sb.agCount == 0 || sb.dblocks == 0 ||
		sb.dblocks > uint64(sb.agCount)*uint64(sb.agBlocks) ||
		sb.dblocks <= uint64(sb.agCount-1)*uint64(sb.agBlocks) {
		return sb, corrupt("superblock: %d blocks do not fill %d allocation groups of %d blocks", sb.dblocks, sb.agCount, sb.agBlocks)
	}
	if sb.dblocks > (1<<63-1)>>sb.blockLog {
		return sb, corrupt("superblock: %d blocks of %d bytes overflow", sb.dblocks, bs)
	}
	if int(sb.blockLog)+int(sb.dirBlkLog) > 16 {
		return sb, corrupt("superblock: directory blocks of 2^%d file system blocks are larger than 64 KiB", sb.dirBlkLog)
	}
	sb.dirBlkSize = sb.blockSize << sb.dirBlkLog
	if inprogress != 0 {
		return sb, corrupt("superblock: mkfs.xfs did not finish")
	}
	switch versionnum & versionNumMask {
	case 4:
		sb.version = 4
		if versionnum&versionDirV2 == 0 {
			return sb, fmt.Errorf("xfs: version 1 directories are not supported: %w", guest.ErrCorrupt)
		}
		if versionnum&versionMore == 0 {
			features2 = 0
		}
		if u := features2 &^ features2Known; u != 0 {
			return sb, fmt.Errorf("xfs: unsupported version 4 features2 0x%x: %w", u, guest.ErrCorrupt)
		}
		sb.ftype = features2&features2Ftype != 0
	case 5:
		sb.version = 5
		if is < 512 {
			return sb, corrupt("superblock: version 5 with %d-byte inodes", is)
		}
		if incompat&incompatRepair != 0 {
			return sb, fmt.Errorf("xfs: the file system is marked as needing xfs_repair: %w", guest.ErrCorrupt)
		}
		if incompat&incompatMetadir != 0 {
			return sb, fmt.Errorf("xfs: unsupported incompatible feature metadir (0x%x): %w", incompatMetadir, guest.ErrCorrupt)
		}
		if incompat&incompatZoned != 0 {
			return sb, fmt.Errorf("xfs: unsupported incompatible feature zoned (0x%x): %w", incompatZoned, guest.ErrCorrupt)
		}
		if u := incompat &^ incompatKnown; u != 0 {
			return sb, fmt.Errorf("xfs: unsupported incompatible features 0x%x: %w", u, guest.ErrCorrupt)
		}
		sb.ftype = incompat&incompatFtype != 0
		sb.nrext64 = incompat&incompatNrext64 != 0
		if incompat&incompatMetaUUID != 0 {
			copy(sb.metaUUID[:], b[248:264])
		}
	default:
		return sb, corrupt("superblock: version %d, want 4 or 5", versionnum&versionNumMask)
	}
	if _, _, err := sb.inoPos(sb.rootIno); err != nil {
		return sb, fmt.Errorf("xfs: superblock: root %w", unprefix(err))
	}
	return sb, nil
}

// inoPos returns the byte offset of inode ino on the device and its fs
// block's offset.
func (sb *superblock) inoPos(ino uint64) (pos, blockPos int64, err error) {
	agno := ino >> (sb.agBlkLog + sb.inopbLog)
	agbno := (ino >> sb.inopbLog) & (1<<sb.agBlkLog - 1)
	idx := ino & (1<<sb.inopbLog - 1)
	if ino == 0 || agno >= uint64(sb.agCount) || agbno >= uint64(sb.agBlocks) {
		return 0, 0, corrupt("inode %d: number outside the file system", ino)
	}
	blk := agno*uint64(sb.agBlocks) + agbno
	if blk >= sb.dblocks {
		return 0, 0, corrupt("inode %d: number outside the file system", ino)
	}
	blockPos = int64(blk << sb.blockLog)
	return blockPos + int64(idx<<sb.inodeLog), blockPos, nil
}

// fsbPos checks that count blocks from fs block number fsb lie inside one
// allocation group and returns the byte offset of fsb.
func (sb *superblock) fsbPos(fsb, count uint64) (int64, bool) {
	agno := fsb >> sb.agBlkLog
	agbno := fsb & (1<<sb.agBlkLog - 1)
	if agno >= uint64(sb.agCount) || count > uint64(sb.agBlocks) || agbno > uint64(sb.agBlocks)-count {
		return 0, false
	}
	blk := agno*uint64(sb.agBlocks) + agbno
	if blk+count > sb.dblocks {
		return 0, false
	}
	return int64(blk << sb.blockLog), true
}

// readFull reads len(p) bytes at off, failing on a short read.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%d bytes at offset %d past the end of the device: %w", len(p), off, guest.ErrCorrupt)
	}
	return err
}

// read reads len(p) bytes of the device at off.
func (f *FS) read(p []byte, off int64) error {
	if off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return fmt.Errorf("xfs: %d bytes at offset %d past the end of the %d-byte device: %w", len(p), off, f.size, guest.ErrCorrupt)
	}
	if err := readFull(f.r, p, off); err != nil {
		return fmt.Errorf("xfs: %w", err)
	}
	return nil
}

// block returns the metadata block of fs block size at byte offset pos,
// from the cache. The caller must not modify it.
func (f *FS) block(pos int64) ([]byte, error) {
	f.mu.Lock()
	b, ok := f.cache[pos]
	f.mu.Unlock()
	if ok {
		return b, nil
	}
	b = make([]byte, f.sb.blockSize)
	if err := f.read(b, pos); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cached+len(b) > cacheBytes {
		for k := range f.cache { // evict about a quarter, at random
			delete(f.cache, k)
			f.cached -= int(f.sb.blockSize)
			if f.cached <= cacheBytes*3/4 {
				break
			}
		}
	}
	if _, ok := f.cache[pos]; !ok {
		f.cache[pos] = b
		f.cached += len(b)
	}
	return b, nil
}

// fsBlock returns metadata block fsb through the cache.
func (f *FS) fsBlock(fsb uint64) ([]byte, error) {
	pos, ok := f.sb.fsbPos(fsb, 1)
	if !ok {
		return nil, corrupt("block %d outside the file system", fsb)
	}
	return f.block(pos)
}

// Root returns the root directory.
func (f *FS) Root() (guest.Node, error) {
	ip, err := f.inode(f.sb.rootIno)
	if err != nil {
		return nil, err
	}
	n := f.newNode(ip, "")
	if !n.info.Mode.IsDir() {
		return nil, corrupt("root inode %d is not a directory", f.sb.rootIno)
	}
	return n, nil
}

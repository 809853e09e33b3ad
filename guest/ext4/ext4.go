// Package ext4 reads ext2, ext3 and ext4 file systems for package guest,
// read-only and without a journal replay: extent trees (with unwritten
// extents read as zeros), ext2/ext3 indirect block maps, linear and
// htree-indexed directories, inline data, fast and slow symbolic links,
// 32- and 64-bit group descriptors with or without meta_bg, and
// nanosecond timestamps. Checksums are not verified.
//
// Importing the package registers the "ext4" family with guest.Register;
// its Probe reports "ext2", "ext3" or "ext4".
package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/vmaconv/vmaconv/guest"
)

func init() {
	guest.Register(guest.Filesystem{Name: "ext4", Probe: Probe, Open: Open})
}

const (
	superOffset = 1024
	superSize   = 1024
	magic       = 0xEF53

	compatHasJournal   = 0x4
	compatSparseSuper2 = 0x200

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirdata     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargedir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	rocompatSparseSuper = 0x1
	rocompatLargeFile   = 0x2
	rocompatBtreeDir    = 0x4

	// incompatSupported are the incompatible features this reader reads.
	incompatSupported = incompatFiletype | incompatRecover | incompatMetaBG | incompatExtents |
		incompat64bit | incompatMMP | incompatFlexBG | incompatEAInode | incompatCsumSeed |
		incompatLargedir | incompatInlineData | incompatCasefold
	// incompatExt3 and rocompatExt3 are the features an ext3 (or ext2)
	// file system may have; any other makes it an ext4.
	incompatExt3 = incompatFiletype | incompatRecover | incompatJournalDev | incompatMetaBG
	rocompatExt3 = rocompatSparseSuper | rocompatLargeFile | rocompatBtreeDir
)

var incompatNames = []struct {
	bit  uint32
	name string
}{
	{incompatCompression, "compression"}, {incompatJournalDev, "journal_dev (an external journal, not a file system)"},
	{incompatDirdata, "dirdata"}, {incompatEncrypt, "encrypt"},
}

// super is the part of the superblock the reader uses.
type super struct {
	inodesCount      uint32
	blocksCount      uint64
	firstDataBlock   uint32
	logBlockSize     uint32
	blocksPerGroup   uint32
	inodesPerGroup   uint32
	revLevel         uint32
	inodeSize        uint32
	compat           uint32
	incompat         uint32
	rocompat         uint32
	descSize         uint32
	firstMetaBG      uint32
	backupBGs        [2]uint32
	blockSize        int64
	groups           uint64
	descsPerBlock    uint64
	filetypeInDirent bool
}

func readSuper(r io.ReaderAt, size int64) (*super, error) {
	if size < superOffset+superSize {
		return nil, fmt.Errorf("ext4: device of %d bytes too small for a superblock: %w", size, guest.ErrCorrupt)
	}
	b := make([]byte, superSize)
	if n, err := r.ReadAt(b, superOffset); n != superSize {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("ext4: reading the superblock: %w", err)
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[0x38:]); m != magic {
		return nil, fmt.Errorf("ext4: bad superblock magic %#04x (want %#04x): %w", m, magic, guest.ErrCorrupt)
	}
	s := &super{
		inodesCount:    le.Uint32(b[0x0:]),
		blocksCount:    uint64(le.Uint32(b[0x4:])),
		firstDataBlock: le.Uint32(b[0x14:]),
		logBlockSize:   le.Uint32(b[0x18:]),
		blocksPerGroup: le.Uint32(b[0x20:]),
		inodesPerGroup: le.Uint32(b[0x28:]),
		revLevel:       le.Uint32(b[0x4C:]),
		inodeSize:      128,
		compat:         le.Uint32(b[0x5C:]),
		incompat:       le.Uint32(b[0x60:]),
		rocompat:       le.Uint32(b[0x64:]),
		descSize:       32,
		firstMetaBG:    le.Uint32(b[0x104:]),
		backupBGs:      [2]uint32{le.Uint32(b[0x24C:]), le.Uint32(b[0x250:])},
	}
	if s.revLevel > 0 {
		s.inodeSize = uint32(le.Uint16(b[0x58:]))
	} else {
		// Revision 0 has no feature fields.
		s.compat, s.incompat, s.rocompat = 0, 0, 0
	}
	s.filetypeInDirent = s.incompat&incompatFiletype != 0
	if s.logBlockSize > 6 {
		return nil, fmt.Errorf("ext4: superblock: block size 1 KiB << %d > 64 KiB: %w", s.logBlockSize, guest.ErrCorrupt)
	}
	s.blockSize = 1024 << s.logBlockSize
	if s.incompat&incompat64bit != 0 {
		s.blocksCount |= uint64(le.Uint32(b[0x150:])) << 32
		s.descSize = uint32(le.Uint16(b[0xFE:]))
		if s.descSize < 64 || s.descSize > 1024 || s.descSize&(s.descSize-1) != 0 || int64(s.descSize) > s.blockSize {
			return nil, fmt.Errorf("ext4: superblock: 64-bit group descriptor size %d: %w", s.descSize, guest.ErrCorrupt)
		}
	}
	s.descsPerBlock = uint64(s.blockSize) / uint64(s.descSize)
	if s.inodeSize < 128 || s.inodeSize&(s.inodeSize-1) != 0 || int64(s.inodeSize) > s.blockSize {
		return nil, fmt.Errorf("ext4: superblock: inode size %d: %w", s.inodeSize, guest.ErrCorrupt)
	}
	bits := uint32(8 * s.blockSize)
	if s.blocksPerGroup == 0 || s.blocksPerGroup > bits {
		return nil, fmt.Errorf("ext4: superblock: %d blocks per group: %w", s.blocksPerGroup, guest.ErrCorrupt)
	}
	if s.inodesPerGroup == 0 || s.inodesPerGroup > bits {
		return nil, fmt.Errorf("ext4: superblock: %d inodes per group: %w", s.inodesPerGroup, guest.ErrCorrupt)
	}
	if s.blocksCount > (1<<63-1)/uint64(s.blockSize) || s.blocksCount <= uint64(s.firstDataBlock) {
		return nil, fmt.Errorf("ext4: superblock: %d blocks (first data block %d): %w", s.blocksCount, s.firstDataBlock, guest.ErrCorrupt)
	}
	s.groups = (s.blocksCount - uint64(s.firstDataBlock) + uint64(s.blocksPerGroup) - 1) / uint64(s.blocksPerGroup)
	if s.inodesCount < 11 || (uint64(s.inodesCount)+uint64(s.inodesPerGroup)-1)/uint64(s.inodesPerGroup) > s.groups {
		return nil, fmt.Errorf("ext4: superblock: %d inodes in %d groups of %d: %w", s.inodesCount, s.groups, s.inodesPerGroup, guest.ErrCorrupt)
	}
	return s, nil
}

// name is the type a user knows the file system as.
func (s *super) name() string {
	if s.incompat&^incompatExt3 != 0 || s.rocompat&^rocompatExt3 != 0 {
		return "ext4"
	}
	if s.compat&compatHasJournal != 0 || s.incompat&incompatJournalDev != 0 {
		return "ext3"
	}
	return "ext2"
}

// Probe returns "ext2", "ext3" or "ext4" if r starts with a sane ext
// superblock, else "".
func Probe(r io.ReaderAt, size int64) string {
	s, err := readSuper(r, size)
	if err != nil {
		return ""
	}
	return s.name()
}

// fsys is an opened file system.
type fsys struct {
	r  io.ReaderAt
	s  *super
	bs int64
	// devBlocks is the number of whole blocks on the device and in the
	// file system, whichever is fewer: every block read lies below it.
	devBlocks uint64

	mu     sync.Mutex
	tables map[uint64]uint64 // group → inode table block, a bounded cache
	// dirErrs holds the directories whose ReadDir failed (bounded).
	dirErrs map[uint64]error
}

const maxTableCache = 4096

// Open opens the ext2/3/4 file system at the start of r (size bytes).
// It fails with an error wrapping guest.ErrCorrupt on a damaged superblock
// and names the feature it cannot read on an unsupported one. A journal
// that needs recovery is not replayed: the file system reads as the guest
// left it on disk.
func Open(r io.ReaderAt, size int64) (guest.FS, error) {
	s, err := readSuper(r, size)
	if err != nil {
		return nil, err
	}
	if bad := s.incompat &^ incompatSupported; bad != 0 {
		var names []string
		for _, f := range incompatNames {
			if bad&f.bit != 0 {
				names = append(names, f.name)
				bad &^= f.bit
			}
		}
		if bad != 0 {
			names = append(names, fmt.Sprintf("unknown %#x", bad))
		}
		return nil, fmt.Errorf("ext4: unsupported incompatible feature %s", strings.Join(names, ", "))
	}
	f := &fsys{r: r, s: s, bs: s.blockSize, tables: map[uint64]uint64{}, dirErrs: map[uint64]error{}}
	f.devBlocks = uint64(size / s.blockSize)
	if s.blocksCount < f.devBlocks {
		f.devBlocks = s.blocksCount
	}
	return f, nil
}

// Root returns the root directory (inode 2).
func (f *fsys) Root() (guest.Node, error) {
	in, err := f.inode(rootIno, nil)
	if err != nil {
		return nil, err
	}
	if in.mode&0xF000 != modeDir {
		return nil, fmt.Errorf("ext4: root inode 2 is not a directory (mode %#o): %w", in.mode, guest.ErrCorrupt)
	}
	return &node{fs: f, in: in}, nil
}

// read reads len(p) bytes at byte offset off of the device, which must
// lie below devBlocks; what names the read in errors.
func (f *fsys) read(p []byte, off int64, what func() string) error {
	if off < 0 || uint64(off)+uint64(len(p)) > f.devBlocks*uint64(f.bs) {
		return fmt.Errorf("ext4: %s: bytes %d+%d past the end of the file system or device (%d blocks of %d): %w",
			what(), off, len(p), f.devBlocks, f.bs, guest.ErrCorrupt)
	}
	n, err := f.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("ext4: %s: reading %d bytes at %d: %w", what(), len(p), off, err)
}

// checkBlocks checks that blocks [b, b+n) lie on the device.
func (f *fsys) checkBlocks(b, n uint64, what func() string) error {
	if b+n < b || b+n > f.devBlocks {
		return fmt.Errorf("ext4: %s: blocks %d+%d past the end of the file system or device (%d blocks): %w",
			what(), b, n, f.devBlocks, guest.ErrCorrupt)
	}
	return nil
}

// hasSuper reports whether group g holds a superblock backup (and so a
// group descriptor copy before its meta_bg descriptors).
func (s *super) hasSuper(g uint64) bool {
	if g == 0 {
		return true
	}
	if s.compat&compatSparseSuper2 != 0 {
		return g == uint64(s.backupBGs[0]) || g == uint64(s.backupBGs[1])
	}
	if s.rocompat&rocompatSparseSuper == 0 || g == 1 {
		return true
	}
	if g&1 == 0 {
		return false
	}
	for _, p := range []uint64{3, 5, 7} {
		x := g
		for x%p == 0 {
			x /= p
		}
		if x == 1 {
			return true
		}
	}
	return false
}

// inodeTable returns the first block of group g's inode table.
func (f *fsys) inodeTable(g uint64) (uint64, error) {
	f.mu.Lock()
	t, ok := f.tables[g]
	f.mu.Unlock()
	if ok {
		return t, nil
	}
	s := f.s
	m := g / s.descsPerBlock
	var blk uint64
	if s.incompat&incompatMetaBG == 0 || m < uint64(s.firstMetaBG) {
		blk = uint64(s.firstDataBlock) + 1 + m
	} else {
		first := m * s.descsPerBlock
		blk = uint64(s.firstDataBlock) + first*uint64(s.blocksPerGroup)
		if s.hasSuper(first) {
			blk++
		}
	}
	what := func() string { return fmt.Sprintf("group %d descriptor", g) }
	if err := f.checkBlocks(blk, 1, what); err != nil {
		return 0, err
	}
	d := make([]byte, s.descSize)
	if err := f.read(d, int64(blk)*f.bs+int64(g%s.descsPerBlock)*int64(s.descSize), what); err != nil {
		return 0, err
	}
	t = uint64(binary.LittleEndian.Uint32(d[8:]))
	if s.descSize >= 64 {
		t |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	tableBlocks := (uint64(s.inodesPerGroup)*uint64(s.inodeSize) + uint64(f.bs) - 1) / uint64(f.bs)
	if t == 0 {
		return 0, fmt.Errorf("ext4: group %d: inode table at block 0: %w", g, guest.ErrCorrupt)
	}
	if err := f.checkBlocks(t, tableBlocks, func() string { return fmt.Sprintf("group %d inode table", g) }); err != nil {
		return 0, err
	}
	f.mu.Lock()
	if len(f.tables) >= maxTableCache {
		clear(f.tables)
	}
	f.tables[g] = t
	f.mu.Unlock()
	return t, nil
}

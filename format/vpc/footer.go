package vpc

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
)

// Disk types (the footer's Disk Type field).
const (
	TypeFixed        = 2
	TypeDynamic      = 3
	TypeDifferencing = 4
)

// Sizes and limits of the format, as the specification and QEMU's
// block/vpc.c set them.
const (
	footerSize = 512
	headerSize = 1024 // the dynamic disk header
	sector     = 512

	// maxGeometry is the largest disk a CHS geometry describes, 65535
	// cylinders × 16 heads × 255 sectors: a footer with this geometry
	// sizes its disk by its current size (VHD_MAX_GEOMETRY).
	maxGeometry = 65535 * 16 * 255
	// MaxSize is the largest disk QEMU reads or writes, 2040 GiB
	// (VHD_MAX_SECTORS).
	MaxSize = 0xff000000 * sector

	// BlockSize is the size of the blocks of the dynamic disks written
	// here: 2 MiB, as qemu-img, Hyper-V and Virtual PC write them.
	BlockSize = 2 << 20

	unallocated = 0xffffffff // a BAT entry of a block not in the file
	noOffset    = ^uint64(0) // data offset of a fixed disk's footer

	// vhdEpoch is the origin of the footer's time stamp.
	vhdEpoch = 946684800 // 2000-01-01T00:00:00Z
)

var (
	footerCookie = []byte("conectix")
	headerCookie = []byte("cxsparse")
)

// footer is the hard disk footer: the last 512 bytes of every VHD, and
// a copy of them at the start of a dynamic or differencing one.
type footer struct {
	features     uint32
	version      uint32
	dataOffset   uint64 // the dynamic disk header; noOffset for a fixed disk
	timestamp    uint32 // seconds since 2000-01-01
	creatorApp   [4]byte
	creatorVer   uint32
	creatorOS    [4]byte
	originalSize uint64
	currentSize  uint64
	cylinders    uint16
	heads        uint8
	sectors      uint8 // per track
	diskType     uint32
	checksum     uint32
	uuid         uuid.UUID
	savedState   uint8
}

// checksum is the VHD checksum of b: the one's complement of the sum of
// its bytes. The checksum field itself must be zero in b.
func checksum(b []byte) uint32 {
	var sum uint32
	for _, c := range b {
		sum += uint32(c)
	}
	return ^sum
}

// parseFooter reads a footer from b (512 bytes) read at off, checking
// its cookie and its checksum, as QEMU does.
func parseFooter(b []byte, off int64) (*footer, error) {
	if len(b) < footerSize || !bytes.Equal(b[:8], footerCookie) {
		return nil, fmt.Errorf("no VHD footer at %#x (cookie %q, want %q)", off, cookiePrefix(b), footerCookie)
	}
	be := binary.BigEndian
	f := &footer{
		features: be.Uint32(b[8:]), version: be.Uint32(b[12:]),
		dataOffset: be.Uint64(b[16:]), timestamp: be.Uint32(b[24:]),
		creatorVer:   be.Uint32(b[32:]),
		originalSize: be.Uint64(b[40:]), currentSize: be.Uint64(b[48:]),
		cylinders: be.Uint16(b[56:]), heads: b[58], sectors: b[59],
		diskType: be.Uint32(b[60:]), checksum: be.Uint32(b[64:]),
		savedState: b[84],
	}
	copy(f.creatorApp[:], b[28:32])
	copy(f.creatorOS[:], b[36:40])
	copy(f.uuid[:], b[68:84])
	var c [footerSize]byte
	copy(c[:], b[:footerSize])
	clear(c[64:68])
	if sum := checksum(c[:]); sum != f.checksum {
		return nil, fmt.Errorf("footer at %#x: checksum %#08x, the footer's bytes sum to %#08x", off, f.checksum, sum)
	}
	return f, nil
}

// cookiePrefix is the first 8 bytes of b, for messages.
func cookiePrefix(b []byte) []byte { return b[:min(len(b), 8)] }

// marshal returns the footer's 512 bytes, with its checksum.
func (f *footer) marshal() []byte {
	b := make([]byte, footerSize)
	be := binary.BigEndian
	copy(b, footerCookie)
	be.PutUint32(b[8:], f.features)
	be.PutUint32(b[12:], f.version)
	be.PutUint64(b[16:], f.dataOffset)
	be.PutUint32(b[24:], f.timestamp)
	copy(b[28:], f.creatorApp[:])
	be.PutUint32(b[32:], f.creatorVer)
	copy(b[36:], f.creatorOS[:])
	be.PutUint64(b[40:], f.originalSize)
	be.PutUint64(b[48:], f.currentSize)
	be.PutUint16(b[56:], f.cylinders)
	b[58], b[59] = f.heads, f.sectors
	be.PutUint32(b[60:], f.diskType)
	copy(b[68:], f.uuid[:])
	b[84] = f.savedState
	f.checksum = checksum(b)
	be.PutUint32(b[64:], f.checksum)
	return b
}

// geometrySectors is the size the CHS geometry describes, in sectors.
func (f *footer) geometrySectors() int64 {
	return int64(f.cylinders) * int64(f.heads) * int64(f.sectors)
}

// sizedByGeometry reports whether QEMU sizes the disk by its CHS geometry
// rather than by its current size: only for images Virtual PC ("vpc ")
// or QEMU without force_size ("qemu") made, which size disks by their
// geometry, and never when the geometry is the largest there is
// (qemu-img's force_size, and disks larger than it). This is QEMU's rule
// since 10.0 (vpc_ignore_current_size); QEMU 9.2 and earlier sized every
// image by its geometry except Hyper-V's ("win "), Disk2vhd's ("d2v "),
// XenServer's ("tap\0"), XenConverter's ("CTXS") and force_size's
// ("qem2"), and so cut short the disks Azure exports ("wa\0\0"), Virtual
// Server ("vs  ") and VirtualBox ("vbox") made, which the newer rule reads
// whole.
func (f *footer) sizedByGeometry() bool {
	app := string(f.creatorApp[:])
	return (app == "vpc " || app == "qemu") && f.geometrySectors() != maxGeometry
}

// diskSize is the virtual size of the disk, as QEMU reads it: whole
// sectors of the CHS geometry or of the current size (sizedByGeometry).
func (f *footer) diskSize() int64 {
	if f.sizedByGeometry() {
		return f.geometrySectors() * sector
	}
	return int64(f.currentSize/sector) * sector // at most 2^64/512 sectors: no overflow
}

// creator is the creator application and its version, for messages and
// info.
func (f *footer) creator() string {
	return fmt.Sprintf("%q %d.%d", f.creatorApp[:], f.creatorVer>>16, f.creatorVer&0xffff)
}

// geometry computes the CHS geometry of a disk of at least total sectors
// (at most maxGeometry) by the specification's algorithm, as QEMU's
// calculate_geometry does (allowing 16 heads of 255 sectors past the ATA
// limit of 127 GB). The geometry may describe fewer sectors than total:
// see roundedSize.
func geometry(total int64) (cyls uint16, heads, spt uint8) {
	total = min(total, maxGeometry)
	var cth int64 // cylinders × heads
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cth = total / int64(spt)
	} else {
		spt = 17
		cth = total / int64(spt)
		h := max((cth+1023)/1024, 4)
		if cth >= h*1024 || h > 16 {
			spt, h = 31, 16
			cth = total / int64(spt)
		}
		if cth >= h*1024 {
			spt, h = 63, 16
			cth = total / int64(spt)
		}
		heads = uint8(h)
	}
	return uint16(cth / int64(heads)), heads, spt
}

// roundedSize returns the virtual size and geometry qemu-img gives a VHD
// asked for size bytes (calculate_rounded_image_size): size rounded up to
// whole sectors and then, unless force is set, up to the first CHS
// geometry that holds it. A disk the largest geometry cannot hold, or one
// of forced size, keeps its size and gets the largest geometry, which
// tells readers to size it by its current size. It fails for a disk
// larger than MaxSize.
func roundedSize(size int64, force bool) (n int64, cyls uint16, heads, spt uint8, err error) {
	if size < 0 || size > MaxSize {
		return 0, 0, 0, 0, fmt.Errorf("disk size %d bytes: a VHD holds at most 2040 GiB (%d bytes)", size, int64(MaxSize))
	}
	size = (size + sector - 1) &^ (sector - 1)
	if force {
		cyls, heads, spt = 65535, 16, 255
	} else {
		total := min(maxGeometry, size/sector)
		// The first geometry, from total sectors up, that holds them.
		for i := int64(0); total > int64(cyls)*int64(heads)*int64(spt); i++ {
			cyls, heads, spt = geometry(total + i)
		}
	}
	if g := int64(cyls) * int64(heads) * int64(spt); g != maxGeometry {
		return g * sector, cyls, heads, spt, nil
	}
	return size, cyls, heads, spt, nil
}

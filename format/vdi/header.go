package vdi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
)

// Errors.
var (
	// ErrCorrupt means the image's header or block map is inconsistent.
	ErrCorrupt = errors.New("vdi: corrupt image")
	// ErrUnsupported means a valid-looking image of a kind this driver
	// (and QEMU) does not read: another version, block size or sector
	// size, or a differencing image.
	ErrUnsupported = errors.New("vdi: unsupported image")
)

// Constants of the format, as block/vdi.c and VDICore.h name them.
const (
	headerSize  = 512        // the header with its pre-header, as QEMU reads it
	version11   = 0x00010001 // VDI_VERSION_1_1
	typeDynamic = 1          // VDI_TYPE_DYNAMIC, VirtualBox's VDI_IMAGE_TYPE_NORMAL
	typeStatic  = 2          // VDI_TYPE_STATIC, VirtualBox's VDI_IMAGE_TYPE_FIXED
	sectorSize  = 512
	header1Size = 0x180      // sizeof(VDIHEADER1): the header_size qemu-img writes, the least VirtualBox takes
	unallocated = 0xffffffff // VDI_UNALLOCATED: a block never written
	discarded   = 0xfffffffe // VDI_DISCARDED: a block that reads as zeros
	qemuText    = "<<< QEMU VM Virtual Disk Image >>>\n"
	bmapOffset  = 0x200 // where qemu-img puts the block map
)

// BlockSize is the size of a block, the unit of allocation: 1 MiB, the
// only size QEMU reads (DEFAULT_CLUSTER_SIZE) and VirtualBox's default.
const BlockSize = 1 << 20

// MaxBlocks is the most blocks QEMU takes in an image
// (VDI_BLOCKS_IN_IMAGE_MAX): a block map that a 32-bit int can hold,
// rounded up to whole sectors.
const MaxBlocks = (1<<31 - sectorSize) / 4

// MaxSize is the largest disk QEMU reads or writes as VDI
// (VDI_DISK_SIZE_MAX): MaxBlocks blocks of 1 MiB, just under 512 TiB.
const MaxSize = MaxBlocks * BlockSize

// Byte offsets of the header's fields in the file.
const (
	offSignature  = 0x40
	offVersion    = 0x44
	offHeaderSize = 0x48
	offImageType  = 0x4c
	offBmap       = 0x154
	offData       = 0x158
	offSectorSize = 0x168
	offDiskSize   = 0x170
	offBlockSize  = 0x178
	offBlockExtra = 0x17c
	offBlocks     = 0x180
	offAllocated  = 0x184
	offUUIDImage  = 0x188
	offUUIDSnap   = 0x198
	offUUIDLink   = 0x1a8
	offUUIDParent = 0x1b8
)

// header is a checked VDI header.
type header struct {
	imageType  uint32
	offBmap    int64
	offData    int64
	diskSize   uint64 // as recorded
	blocks     int64
	headerSize uint32
}

// size returns the virtual size as QEMU reads it: the disk size rounded
// up to whole 512-byte sectors.
func (h *header) size() int64 { return int64(h.diskSize+sectorSize-1) &^ (sectorSize - 1) }

// fieldError returns an error of kind about the header field name at
// byte off of the file.
func fieldError(kind error, name string, off int, format string, args ...any) error {
	return fmt.Errorf("%w: %s at %#x: %s", kind, name, off, fmt.Sprintf(format, args...))
}

// readHeader reads the header and checks it as QEMU's vdi_open does, in
// its order and with its limits, then as VirtualBox's vdiValidateHeader
// does where QEMU would read something VirtualBox never writes, and
// checks that the block map fits the file. Nothing is allocated by a size
// the header gives.
func readHeader(ra io.ReaderAt, fileSize int64) (*header, error) {
	var b [headerSize]byte
	n, err := ra.ReadAt(b[:], 0)
	if n < len(b) {
		if n >= offSignature+4 && binary.LittleEndian.Uint32(b[offSignature:]) != Signature {
			return nil, fmt.Errorf("%w: not a VDI image (signature %#08x at %#x)", format.ErrUnknownFormat, binary.LittleEndian.Uint32(b[offSignature:]), offSignature)
		}
		if err == nil || err == io.EOF {
			return nil, fmt.Errorf("%w: header too short: %d of its %d bytes", ErrCorrupt, n, headerSize)
		}
		return nil, fmt.Errorf("vdi: reading the header: %w", err)
	}
	le := binary.LittleEndian
	u32 := func(off int) uint32 { return le.Uint32(b[off:]) }
	h := &header{
		imageType:  u32(offImageType),
		offBmap:    int64(u32(offBmap)),
		offData:    int64(u32(offData)),
		diskSize:   le.Uint64(b[offDiskSize:]),
		blocks:     int64(u32(offBlocks)),
		headerSize: u32(offHeaderSize),
	}
	blockSize := u32(offBlockSize)
	if sig := u32(offSignature); sig != Signature {
		return nil, fmt.Errorf("%w: not a VDI image (signature %#08x at %#x)", format.ErrUnknownFormat, sig, offSignature)
	}
	// QEMU's checks, in its order (QEMU checks the size first, then the
	// signature).
	switch v := u32(offVersion); {
	case h.diskSize > MaxSize:
		return nil, fieldError(ErrUnsupported, "disk_size", offDiskSize, "%#x bytes, more than QEMU's limit of %#x", h.diskSize, uint64(MaxSize))
	case v != version11:
		return nil, fieldError(ErrUnsupported, "version", offVersion, "%d.%d (QEMU reads version 1.1)", v>>16, v&0xffff)
	case h.offBmap%sectorSize != 0:
		return nil, fieldError(ErrUnsupported, "offset_bmap", offBmap, "block map offset %#x is not a multiple of 512", h.offBmap)
	case h.offData%sectorSize != 0:
		return nil, fieldError(ErrUnsupported, "offset_data", offData, "data offset %#x is not a multiple of 512", h.offData)
	case u32(offSectorSize) != sectorSize:
		return nil, fieldError(ErrUnsupported, "sector_size", offSectorSize, "%d (QEMU reads 512-byte sectors only)", u32(offSectorSize))
	case blockSize != BlockSize:
		return nil, fieldError(ErrUnsupported, "block_size", offBlockSize, "%d (QEMU reads 1 MiB blocks only)", blockSize)
	case h.size() > h.blocks*BlockSize:
		return nil, fieldError(ErrCorrupt, "disk_size", offDiskSize, "%d bytes, more than the %d blocks (blocks_in_image at %#x) hold", h.diskSize, h.blocks, offBlocks)
	case uuidAt(b[:], offUUIDLink) != uuid.Nil:
		return nil, fieldError(ErrUnsupported, "uuid_link", offUUIDLink, "a differencing image (its parent is %s); convert it with VirtualBox (VBoxManage clonemedium) first", uuidAt(b[:], offUUIDLink))
	case uuidAt(b[:], offUUIDParent) != uuid.Nil:
		return nil, fieldError(ErrUnsupported, "uuid_parent", offUUIDParent, "a differencing image (its parent is %s); convert it with VirtualBox (VBoxManage clonemedium) first", uuidAt(b[:], offUUIDParent))
	case h.blocks > MaxBlocks:
		return nil, fieldError(ErrUnsupported, "blocks_in_image", offBlocks, "%d blocks, more than QEMU's limit of %d", h.blocks, MaxBlocks)
	}
	// VirtualBox's checks, where QEMU would read something no VirtualBox
	// or QEMU writes.
	switch bmapEnd := h.offBmap + 4*h.blocks; {
	case h.headerSize < header1Size:
		return nil, fieldError(ErrCorrupt, "header_size", offHeaderSize, "%#x, less than the %#x bytes of a version 1.1 header", h.headerSize, header1Size)
	case h.imageType != typeDynamic && h.imageType != typeStatic:
		return nil, fieldError(ErrUnsupported, "image_type", offImageType, "%d (1, dynamic, and 2, static, are read; 3 and 4 are VirtualBox's undo and differencing images)", h.imageType)
	case u32(offBlockExtra) != 0:
		return nil, fieldError(ErrUnsupported, "block_extra", offBlockExtra, "%d bytes of extra data per block (QEMU would read them as the disk's)", u32(offBlockExtra))
	case h.offBmap < headerSize:
		return nil, fieldError(ErrCorrupt, "offset_bmap", offBmap, "the block map at %#x overlaps the %d-byte header", h.offBmap, headerSize)
	case h.offData < bmapEnd:
		return nil, fieldError(ErrCorrupt, "offset_data", offData, "the data at %#x overlap the block map (%#x to %#x)", h.offData, h.offBmap, bmapEnd)
	case bmapEnd > fileSize:
		return nil, fieldError(ErrCorrupt, "offset_bmap", offBmap, "the block map at %#x (%d entries) runs past the end of the file (%#x bytes)", h.offBmap, h.blocks, fileSize)
	}
	return h, nil
}

// uuidAt returns the UUID stored at b[off:], where VirtualBox stores it
// with its first three fields little-endian, in RFC 4122 byte order.
func uuidAt(b []byte, off int) uuid.UUID {
	var u uuid.UUID
	copy(u[:], b[off:off+16])
	swapUUID(&u)
	return u
}

// swapUUID converts a UUID between RFC 4122 byte order and VirtualBox's
// (the first three fields little-endian), both ways, as QEMU's
// qemu_uuid_bswap does.
func swapUUID(u *uuid.UUID) {
	u[0], u[1], u[2], u[3] = u[3], u[2], u[1], u[0]
	u[4], u[5] = u[5], u[4]
	u[6], u[7] = u[7], u[6]
}

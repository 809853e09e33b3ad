package vhdx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

// Format is the VHDX driver, for a format.Registry.
var Format = format.Format{
	Name:  Name,
	Probe: func(head []byte) bool { return bytes.HasPrefix(head, Magic[:]) },
	Open: func(f *os.File, o format.OpenOptions) (format.Image, error) {
		s, err := Open(f, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	OpenAt: func(r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
		s, err := OpenAt(r, size, o)
		if err != nil {
			return nil, err
		}
		return format.SingleDisk(s), nil
	},
	Extensions: []string{".vhdx"},
	Create:     Create,
	Options:    options,
	InfoAt:     info,
}

// Errors.
var (
	// ErrCorrupt means a structure of the image is damaged or
	// inconsistent: its errors name the structure, the field and where it
	// is in the file.
	ErrCorrupt = errors.New("vhdx: corrupt image")
	// ErrUnsupported means a valid-looking image this driver does not
	// read (a required region or metadata item it does not know, a log
	// too large to replay in memory).
	ErrUnsupported = errors.New("vhdx: unsupported image")
	// ErrBacking means a differencing image's parent was refused or could
	// not be used.
	ErrBacking = errors.New("vhdx: parent")
)

// corrupt returns an error wrapping ErrCorrupt.
func corrupt(f string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(f, args...))
}

// The layout of the header section ([MS-VHDX] 2.1): 1 MiB of 64 KiB
// structures.
const (
	mib              = 1 << 20
	headerSection    = 1 * mib
	header1Offset    = 64 << 10
	header2Offset    = 128 << 10
	region1Offset    = 192 << 10
	region2Offset    = 256 << 10
	headerBytes      = 4096     // a header's checksummed size
	regionTableBytes = 64 << 10 // a region table's checksummed size
	metaTableBytes   = 64 << 10 // the metadata table, at the start of the metadata region
	maxRegions       = 2047
	maxMetaEntries   = 2047
	maxMetaItem      = 1 * mib // an item's length, at most
	sectorBitmapSize = 1 * mib // a sector bitmap block
	minBlockSize     = 1 * mib
	maxBlockSize     = 256 * mib
	maxDiskSize      = 64 << 40 // 64 TiB
	sectorsPerChunk  = 1 << 23  // sectors a sector bitmap block maps
	logSector        = 4096
)

// Payload BAT entry states ([MS-VHDX] 2.5.1.1), and the sector bitmap's
// present state (2.5.1.2).
const (
	blockNotPresent       = 0
	blockUndefined        = 1
	blockZero             = 2
	blockUnmapped         = 3
	blockUnmapped095      = 5 // PAYLOAD_BLOCK_UNMAPPED of the 0.95 draft, read as QEMU does
	blockFullyPresent     = 6
	blockPartiallyPresent = 7
	sbPresent             = 6
	stateMask             = 7
	offsetShift           = 20 // FileOffsetMB: bits 20-63
)

// stateName names a payload block state for messages.
func stateName(s uint64) string {
	switch s {
	case blockNotPresent:
		return "PAYLOAD_BLOCK_NOT_PRESENT"
	case blockUndefined:
		return "PAYLOAD_BLOCK_UNDEFINED"
	case blockZero:
		return "PAYLOAD_BLOCK_ZERO"
	case blockUnmapped:
		return "PAYLOAD_BLOCK_UNMAPPED"
	case blockUnmapped095:
		return "PAYLOAD_BLOCK_UNMAPPED (0.95)"
	case blockFullyPresent:
		return "PAYLOAD_BLOCK_FULLY_PRESENT"
	case blockPartiallyPresent:
		return "PAYLOAD_BLOCK_PARTIALLY_PRESENT"
	}
	return fmt.Sprintf("reserved state %d", s)
}

// guid is a GUID as VHDX stores it: Microsoft's layout, its first three
// fields little-endian.
type guid [16]byte

func msguid(d1 uint32, d2, d3 uint16, d4 ...byte) guid {
	var g guid
	binary.LittleEndian.PutUint32(g[0:], d1)
	binary.LittleEndian.PutUint16(g[4:], d2)
	binary.LittleEndian.PutUint16(g[6:], d3)
	copy(g[8:], d4)
	return g
}

// String formats g as [MS-VHDX] writes GUIDs in parent locators:
// lower case, in braces.
func (g guid) String() string {
	le := binary.LittleEndian
	return fmt.Sprintf("{%08x-%04x-%04x-%x-%x}", le.Uint32(g[0:]), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:])
}

func (g guid) isZero() bool { return g == guid{} }

// parseGUID reads a GUID written as String writes it (either case,
// braces optional).
func parseGUID(s string) (guid, bool) {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "{"), "}")
	var g guid
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, false
	}
	hex := strings.ReplaceAll(s, "-", "")
	var b [16]byte
	for i := range b {
		var v byte
		for _, c := range []byte(hex[2*i : 2*i+2]) {
			switch {
			case '0' <= c && c <= '9':
				v = v<<4 | (c - '0')
			case 'a' <= c && c <= 'f':
				v = v<<4 | (c - 'a' + 10)
			case 'A' <= c && c <= 'F':
				v = v<<4 | (c - 'A' + 10)
			default:
				return g, false
			}
		}
		b[i] = v
	}
	// The text is big-endian; the first three fields are stored
	// little-endian.
	g = guid{b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]}
	copy(g[8:], b[8:])
	return g, true
}

// Known region and metadata item GUIDs ([MS-VHDX] 2.3.1.2, 2.6.2).
var (
	batGUID            = msguid(0x2dc27766, 0xf623, 0x4200, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08)
	metadataGUID       = msguid(0x8b7ca206, 0x4790, 0x4b9a, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e)
	fileParamsGUID     = msguid(0xcaa16737, 0xfa36, 0x4d43, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b)
	virtualSizeGUID    = msguid(0x2fa54224, 0xcd1b, 0x4876, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8)
	page83GUID         = msguid(0xbeca12ab, 0xb2e6, 0x4523, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46)
	logicalSectorGUID  = msguid(0x8141bf1d, 0xa96f, 0x4709, 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f)
	physicalSectorGUID = msguid(0xcda348c7, 0x445d, 0x4471, 0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56)
	parentLocatorGUID  = msguid(0xa8d35f2d, 0xb30b, 0x454d, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c)
	vhdxParentTypeGUID = msguid(0xb04aefb7, 0xd19e, 0x4a81, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum returns the CRC-32C of b with the four bytes at at taken as
// zero, as VHDX checksums its structures (the checksum field itself).
func checksum(b []byte, at int) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:at])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, b[at+4:])
}

// readAt fills p from r at off, as QEMU reads an image file: bytes past
// size (the file's end) read as zeros.
func readAt(r io.ReaderAt, size int64, p []byte, off int64) error {
	n := 0
	if off < size {
		k := int(min(int64(len(p)), size-off))
		m, err := r.ReadAt(p[:k], off)
		if m < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n = k
	}
	clear(p[n:])
	return nil
}

// utf16le decodes UTF-16LE text (parent locator keys and values, the
// creator field), stopping at a NUL.
func utf16le(b []byte) string {
	var r []rune
	for i := 0; i+1 < len(b); i += 2 {
		c := rune(binary.LittleEndian.Uint16(b[i:]))
		if c == 0 {
			break
		}
		if 0xd800 <= c && c < 0xdc00 && i+3 < len(b) {
			if d := rune(binary.LittleEndian.Uint16(b[i+2:])); 0xdc00 <= d && d < 0xe000 {
				r = append(r, 0x10000+(c-0xd800)<<10+(d-0xdc00))
				i += 2
				continue
			}
		}
		r = append(r, c)
	}
	return string(r)
}

// putUTF16le encodes s as UTF-16LE.
func putUTF16le(s string) []byte {
	var b []byte
	for _, c := range s {
		if c >= 0x10000 {
			c -= 0x10000
			b = binary.LittleEndian.AppendUint16(b, uint16(0xd800+(c>>10)))
			c = 0xdc00 + c&0x3ff
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(c))
	}
	return b
}

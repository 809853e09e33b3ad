package vpc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf16"

	"github.com/google/uuid"
)

// header is the dynamic disk header of a dynamic or differencing disk.
type header struct {
	dataOffset      uint64
	tableOffset     uint64 // the BAT
	version         uint32
	maxTableEntries uint32
	blockSize       uint32
	checksum        uint32
	parentUUID      uuid.UUID
	parentTimestamp uint32
	parentName      string // parent_unicode_name, decoded
	locators        [8]locator
}

// locator is a parent locator entry: where a platform's name of the
// parent file is stored.
type locator struct {
	platform   uint32
	dataSpace  uint32
	dataLength uint32
	dataOffset uint64
}

// Platform codes of parent locators.
const (
	platformW2ru = 0x57327275 // "W2ru": a Windows path relative to the child, UTF-16LE
	platformW2ku = 0x57326b75 // "W2ku": an absolute Windows path, UTF-16LE
	platformMacX = 0x4d616358 // "MacX": a file URL, UTF-8
)

// parseHeader reads a dynamic disk header from b (1024 bytes) read at
// off, checking its cookie and checksum.
func parseHeader(b []byte, off int64) (*header, error) {
	if len(b) < headerSize || !bytes.Equal(b[:8], headerCookie) {
		return nil, fmt.Errorf("dynamic disk header at %#x: cookie %q, want %q", off, cookiePrefix(b), headerCookie)
	}
	be := binary.BigEndian
	h := &header{
		dataOffset: be.Uint64(b[8:]), tableOffset: be.Uint64(b[16:]),
		version: be.Uint32(b[24:]), maxTableEntries: be.Uint32(b[28:]),
		blockSize: be.Uint32(b[32:]), checksum: be.Uint32(b[36:]),
		parentTimestamp: be.Uint32(b[56:]),
	}
	copy(h.parentUUID[:], b[40:56])
	var c [headerSize]byte
	copy(c[:], b[:headerSize])
	clear(c[36:40])
	if sum := checksum(c[:]); sum != h.checksum {
		return nil, fmt.Errorf("dynamic disk header at %#x: checksum %#08x, the header's bytes sum to %#08x", off, h.checksum, sum)
	}
	h.parentName = decodeUTF16(b[64:576], binary.BigEndian)
	for i := range h.locators {
		e := b[576+24*i:]
		h.locators[i] = locator{platform: be.Uint32(e), dataSpace: be.Uint32(e[4:]),
			dataLength: be.Uint32(e[8:]), dataOffset: be.Uint64(e[16:])}
	}
	return h, nil
}

// marshal returns the header's 1024 bytes, with its checksum (no parent:
// the headers written here are of dynamic disks).
func (h *header) marshal() []byte {
	b := make([]byte, headerSize)
	be := binary.BigEndian
	copy(b, headerCookie)
	be.PutUint64(b[8:], h.dataOffset)
	be.PutUint64(b[16:], h.tableOffset)
	be.PutUint32(b[24:], h.version)
	be.PutUint32(b[28:], h.maxTableEntries)
	be.PutUint32(b[32:], h.blockSize)
	h.checksum = checksum(b)
	be.PutUint32(b[36:], h.checksum)
	return b
}

// decodeUTF16 decodes UTF-16 text of the given byte order up to its
// first NUL.
func decodeUTF16(b []byte, order binary.ByteOrder) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := order.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

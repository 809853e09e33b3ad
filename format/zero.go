package format

import "bytes"

var zeroBlock [4096]byte

// IsZero reports whether b is all zero bytes. It compares 4 KiB at a time
// with the runtime's vectorised memequal (tens of GB/s) and stops at the
// first block that differs.
func IsZero(b []byte) bool {
	for len(b) >= len(zeroBlock) {
		if !bytes.Equal(b[:len(zeroBlock)], zeroBlock[:]) {
			return false
		}
		b = b[len(zeroBlock):]
	}
	return bytes.Equal(b, zeroBlock[:len(b)])
}

// Package zero finds zero bytes fast, and keeps them out of new files.
package zero

import (
	"bytes"
	"io"
)

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

// WriteNonZero writes to w at off the runs of p's 4 KiB blocks (on the
// grid of w's offsets) that are not all zero, each run with one WriteAt,
// and skips the rest: for a new file, which reads as zeros where it was
// not written, and keeps those blocks as holes.
func WriteNonZero(w io.WriterAt, p []byte, off int64) error {
	const bs = int64(len(zeroBlock))
	run := -1 // start of the pending run of non-zero blocks
	for i := 0; i < len(p); {
		end := min(i+int(bs-(off+int64(i))%bs), len(p))
		if IsZero(p[i:end]) {
			if run >= 0 {
				if _, err := w.WriteAt(p[run:i], off+int64(run)); err != nil {
					return err
				}
				run = -1
			}
		} else if run < 0 {
			run = i
		}
		i = end
	}
	if run >= 0 {
		if _, err := w.WriteAt(p[run:], off+int64(run)); err != nil {
			return err
		}
	}
	return nil
}

package format

import (
	"fmt"

	"github.com/vmaconv/vmaconv/internal/text"
)

// Mapping describes a range of a disk as qemu-img map reports it: where
// its content comes from, and whether it is known to read as zeros.
type Mapping struct {
	Start, Length int64
	// Depth is 0 for the image itself, 1 for its backing file, and so on.
	Depth int
	// Present: the image (at Depth) defines the range itself, rather
	// than leaving it to a backing file or to zeros.
	Present bool
	// Zero: the range reads as zeros.
	Zero bool
	// Data: the range is stored (it may still be a hole of the file, and
	// then Zero is set too).
	Data bool
	// Compressed: the range is stored compressed.
	Compressed bool
	// Offset is where the range starts in the file that holds it, or -1
	// where it has no such place (unallocated or compressed clusters).
	Offset int64
	// File is the file that holds the range where it is not the image's
	// own (an extent file a VMDK descriptor names, a parent image), as
	// qemu-img map names it; "" for the image's own.
	File string
}

// Mapper is implemented by sources that can say, as qemu's block status
// does, how each range is stored: for vmaconv map. Mapping returns the
// mapping of the range that starts at start, at most length bytes long.
type Mapper interface {
	Mapping(start, length int64) (Mapping, error)
}

// Text returns m as a line of qemu-img map's human format: start, length,
// place in file ("-" where it has none: archive devices, compressed
// clusters) and the file (m.File, or file for the image's own), or "" for
// a range that is not data, which that format does not show.
func (m Mapping) Text(file string) string {
	if !m.Data || m.Zero {
		return ""
	}
	at := "-"
	if m.Offset >= 0 {
		at = cHex(m.Offset)
	}
	if m.File != "" {
		file = m.File
	}
	return fmt.Sprintf("%-16s%-16s%-16s%s\n", cHex(m.Start), cHex(m.Length), at, text.EscapeControls(file))
}

// JSON returns m as qemu-img map --output json writes an entry: its keys
// in its order (compressed as QEMU 8.1 and later write it), offset only
// where the range has a place in the file.
func (m Mapping) JSON() string {
	s := fmt.Sprintf(`{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t, "compressed": %t`,
		m.Start, m.Length, m.Depth, m.Present, m.Zero, m.Data, m.Compressed)
	if m.Offset >= 0 {
		s += fmt.Sprintf(`, "offset": %d`, m.Offset)
	}
	return s + "}"
}

// cHex formats n as C's %#x: 0x-prefixed, but plain 0.
func cHex(n int64) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", n)
}

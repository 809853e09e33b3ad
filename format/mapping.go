package format

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
}

// Mapper is implemented by sources that can say, as qemu's block status
// does, how each range is stored: for vmaconv map. Mapping returns the
// mapping of the range that starts at start, at most length bytes long.
type Mapper interface {
	Mapping(start, length int64) (Mapping, error)
}

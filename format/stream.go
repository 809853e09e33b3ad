package format

import (
	"context"
	"errors"
	"io"
)

// Stream is an input read once, front to back, in its own order: an
// archive from a pipe, from standard input or through a decompressor, the
// data of its disks interleaved as the input stores it. A format that can
// be read so sets Format.OpenStream. The disks and configs are known once
// the stream is open; their content comes from one call to Read.
type Stream interface {
	io.Closer
	// Devices returns the stream's disks, in order: a name (a device name
	// in an archive; "" for a plain image) and a size.
	Devices() []Device
	// Configs returns the files stored with the disks (archives only).
	Configs() []Config
	// Read reads the rest of the input, once, and gives the content of
	// each disk to the targets o names for it. Everything read is checked,
	// whether its disk has a target or not; the data of disks without
	// one may be skipped where the input allows (seeking over it). A
	// damaged or incomplete input fails after what came before it was
	// delivered.
	Read(ctx context.Context, o StreamOptions) error
}

// StreamOptions say where Stream.Read delivers the content of the disks.
// Both slices are indexed like Devices; a nil entry, or one past the end,
// is no target.
type StreamOptions struct {
	// At[i] receives the content of disk i at its offsets, as a Sink's
	// disk takes it: every byte of a complete input once, as data
	// (WriteAt) or as a range known to be zero (ZeroAt). A writer that is
	// OrderIndependent is written from parallel goroutines; any other
	// from one goroutine, in ascending order as far as the stream's
	// bound on data held back allows, so that its output depends only on
	// the input.
	At []DiskWriter
	// InOrder[i] receives the whole content of disk i in order, zeros
	// included (a hash, a pipe). Data that comes early is held back
	// within a bound; an input further out of order fails with an error
	// wrapping ErrReorder.
	InOrder []io.Writer
	// Workers is the number of goroutines that write to At (default: the
	// number of CPUs). The result is the same for any value.
	Workers int
	// Progress, if set, is called as the input is read, with the bytes of
	// it read so far.
	Progress func(n int64)
}

// ErrReorder is wrapped by Stream.Read's errors when content that must be
// delivered in order (StreamOptions.InOrder) is stored further out of
// order than the stream can hold back.
var ErrReorder = errors.New("clusters too far out of order")

// Repacker is implemented by the images and streams of formats that hold
// several disks (archives) and can write them to an archive sink in their
// own order: the output then depends only on the input, not on how it is
// read (at random or as a stream) nor on the number of workers, and an
// archive repacked whole into its own format comes back byte for byte.
type Repacker interface {
	// Repack writes disk disks[k] (an index into the disks) to
	// dst.Disk(k).
	Repack(ctx context.Context, dst Sink, disks []int, o RepackOptions) error
}

// RepackOptions tune Repacker.Repack.
type RepackOptions struct {
	// Workers is the number of parallel readers of an input read at
	// random (default: the number of CPUs).
	Workers int
	// Progress, if set, is called as the input is read, with the bytes of
	// it read so far (for a stream, what its Read would report).
	Progress func(n int64)
}

// Consumed is implemented by readers that stand for more input than they
// return (a decompressor) and by streams: Consumed returns the bytes of
// the underlying input read so far, for progress against its size.
type Consumed interface {
	Consumed() int64
}

// MemoryLimited is implemented by errors for an input that needs more
// memory than it is allowed (a zstd window larger than the limit), so
// that the caller can say how to allow it.
type MemoryLimited interface {
	error
	// MemoryNeeded returns the bytes the input needs (0 if not known) and
	// the limit it exceeds.
	MemoryNeeded() (need, limit int64)
}

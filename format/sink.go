package format

import (
	"errors"
	"fmt"
	"io"
)

// Device is one disk as a sink is asked to hold it: its name (a device
// name in an archive, such as "drive-scsi0"; empty for a plain image) and
// its size in bytes.
type Device struct {
	Name string
	Size int64
}

// Config is a file that travels with the disks of an archive, such as
// Proxmox's qemu-server.conf.
type Config struct {
	Name string
	Data []byte
}

// DiskWriter receives the content of one disk of a Sink. The pipeline
// hands it every byte of [0, Size) exactly once: as data with WriteAt, or,
// for a range known to be all zero, with ZeroAt. Data given to WriteAt may
// hold zeros too; sinks that keep zeros out (sparse files, unallocated
// clusters) look for them themselves, at their own granularity.
//
// Calls come from one goroutine at a time, in an order that depends only
// on the input, so that the same input always gives the same bytes. Only a
// writer that implements OrderIndependent may be called from parallel
// goroutines (on ranges that do not overlap), and one that implements
// Sequential is called in order, each range starting where the previous
// one ended. Neither method retains p.
type DiskWriter interface {
	io.WriterAt
	// ZeroAt records that the n bytes at off are zero. A sink that starts
	// out zero (a new file) writes nothing; one written in place writes
	// zeros.
	ZeroAt(off, n int64) error
}

// Sequential is implemented by disk writers that take their bytes in
// order, each call starting where the previous one ended (a stream such
// as standard output). Calls come from one goroutine.
type Sequential interface {
	DiskWriter
	Sequential()
}

// OrderIndependent is implemented by disk writers whose result does not
// depend on the order of the writes (a raw file): the pipeline may then
// write from parallel goroutines. Other writers lay out their output in
// the order data arrives (an archive, a qcow2 image), and the pipeline
// writes to them from one goroutine in a deterministic order, so that the
// same input always gives the same bytes.
type OrderIndependent interface {
	DiskWriter
	OrderIndependent()
}

// Sink is an output being written: one or more disks (see Format.Multi).
// Disk(i) receives the i-th device given to Create. Commit makes the
// output appear whole — written to a temporary file, synced, then renamed
// into place — and Abort leaves nothing behind (an output written in place
// stays partly written). After either, both return what the first
// returned; Abort after a successful Commit does nothing. A Sink is safe
// for the concurrency its disk writers document.
type Sink interface {
	Disk(i int) DiskWriter
	Commit() error
	Abort() error
}

// Dest says where a sink writes.
type Dest struct {
	// Path is the destination file. With Stream set it only names the
	// output in messages.
	Path string
	// Name, if set, names the output in messages instead of Path (when
	// Path is in a temporary directory of the caller's).
	Name string
	// Stream, if set, receives the output instead of a file (standard
	// output). Formats that need to seek refuse it.
	Stream io.Writer
	// InPlace writes into the existing Path (a block device, or a file at
	// least as large as the disk) without a temporary file, zeros
	// included.
	InPlace bool
	// Overwrite lets Commit replace an existing Path.
	Overwrite bool
	// NoSync skips syncing the output (and its directory) before it is
	// renamed into place: qemu-img's cache mode unsafe, for scratch
	// outputs. A crash soon after may leave the final name on a file whose
	// data never reached the disk.
	NoSync bool
	// TrackTemp, if set, is called with the name of every temporary file
	// the sink creates; the returned function is called once the file is
	// renamed or removed. The CLI uses it to remove leftovers when it is
	// interrupted.
	TrackTemp func(path string) (untrack func())
}

// CreateOptions are given to a format's Create.
type CreateOptions struct {
	// Configs are stored with the disks (archives only).
	Configs []Config
	// Options are the format's own options (Format.Options), as
	// CheckOptions or ParseOptions return them: only options the format
	// declares, each of its type, so that a driver cannot ignore one it
	// has no use for.
	Options Values
	// Workers bounds the goroutines a sink uses to compress (default: the
	// number of CPUs).
	Workers int
	// From, if set, says where the disks and configs come from, and asks
	// an archive format to apply the rules of the tools that restore its
	// archives (see Origin).
	From *Origin
	// Note, if set, is told what the user should know of the output: a
	// config completed, a name the format's tools would refuse. Drivers
	// never print.
	Note func(msg string)
}

// ErrUnsupportedOption matches (errors.Is) errors for an option the
// format does not take (CheckOptions) or cannot honour (Create: -c for a
// raw image, a pipe for qcow2): usage errors. Their text is the
// explanation alone.
var ErrUnsupportedOption = errors.New("unsupported option")

// Unsupported returns an error matching ErrUnsupportedOption with the
// given explanation.
func Unsupported(format string, args ...any) error {
	return &unsupported{fmt.Sprintf(format, args...)}
}

type unsupported struct{ msg string }

func (e *unsupported) Error() string        { return e.msg }
func (e *unsupported) Is(target error) bool { return target == ErrUnsupportedOption }

// ErrStreamOnly is wrapped by Open's errors for an input that can be read
// only sequentially (an archive too far out of order to index in bounded
// memory): callers fall back to a streaming reader.
var ErrStreamOnly = errors.New("random access unavailable")

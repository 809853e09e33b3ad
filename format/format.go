// Package format defines what vmaconv's format drivers provide and keeps
// them in a Registry. A driver opens files as Images (one disk, or an
// archive of several disks and config files) whose disks are Sources,
// readable at any offset; it is probed by the magic bytes at the start of
// a file. A driver that writes creates Sinks: outputs that take disk data
// at offsets, are told which ranges are zero, and end with Commit or
// Abort. Output formats are chosen by name or by the destination's
// extension.
//
// The built-in drivers (raw, qcow2, vma) are registered by format/all.
package format

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
)

// ErrUnknownFormat is returned when no driver recognises an input, or a
// format name is not registered. Drivers' "not mine" errors wrap it.
var ErrUnknownFormat = errors.New("unknown format")

// Source is one virtual disk. ReadAt follows the io.ReaderAt contract,
// including that parallel calls are allowed. The caller closes it.
type Source interface {
	io.ReaderAt
	io.Closer
	Size() int64 // bytes
}

// Region is a byte range of a Source whose content is either all zero
// (Zero) or possibly not.
type Region struct {
	Start, Length int64
	Zero          bool
}

// ZeroMapper is implemented by sources that know where their zeros are
// (holes of a sparse file, unallocated or zero clusters of a qcow2 image),
// so that zero ranges need not be read. Region returns the region that
// starts at start, at most length bytes long. Safe for parallel calls.
type ZeroMapper interface {
	Region(start, length int64) (Region, error)
}

// OpenOptions are given to a driver's Open.
type OpenOptions struct {
	// Forced is set when the user named the format (-f), so the driver
	// must not second-guess it.
	Forced bool
	// AllowBacking lets a qcow2 image read its backing file. Nothing else
	// (naming the format included) consents to it.
	AllowBacking bool
	// Note, if set, is told of things the user should know, such as each
	// backing file followed. Drivers never print.
	Note func(msg string)
}

// Format is a driver.
type Format struct {
	Name string
	// Probe reports whether head, the first bytes of a file (up to 4096,
	// fewer if the file is shorter), belong to this format. Nil: the format
	// is never detected, only named.
	Probe func(head []byte) bool
	// ProbeTail reports whether tail, the last 512 bytes of a regular file
	// of size bytes, belong to this format: a format whose signature is a
	// footer (a fixed VHD is the disk, then a 512-byte footer). It is asked
	// only of files, never of a stream, and only after every Probe has
	// declined the head. Nil: the format is recognised by its head only.
	ProbeTail func(tail []byte, size int64) bool
	// Open opens f. It takes ownership of f: the Image's Close closes it,
	// and so does a failing Open. Nil: the format cannot be read at random.
	Open func(f *os.File, o OpenOptions) (Image, error)
	// OpenAt opens the size bytes of r, a view that is not a file (the
	// content of a compressed input, read through the seekable zstd
	// format or the decompression cache), for reading at random. The
	// Image's Close does not close r. Nil: such inputs of the format are
	// read as streams only.
	OpenAt func(r io.ReaderAt, size int64, o OpenOptions) (Image, error)
	// OpenStream reads r as a Stream: once, front to back (a pipe,
	// standard input, a decompressor). The Stream's Close does not close
	// r. Errors for an input that is not of the format wrap
	// ErrUnknownFormat. Nil: the format is read at random only.
	OpenStream func(r io.Reader, o OpenOptions) (Stream, error)
	// DiskName, if set, returns the name a disk of the format is stored
	// under for a short name a user may give as FILE:DISK (Proxmox's
	// "scsi0" for "drive-scsi0").
	DiskName func(short string) string
	// Extensions are the destination name endings (lower case, with the
	// dot: ".qcow2") that select this format for output; the longest
	// match among all formats wins.
	Extensions []string
	// Multi is set for formats that hold several disks and config files
	// (archives); the others hold exactly one disk.
	Multi bool
	// MaxConfig is the most bytes a config file of the format holds
	// (Multi formats).
	MaxConfig int
	// Create starts an output of the given disks at d. Nil: the format
	// cannot be written. Errors for options the format cannot honour wrap
	// ErrUnsupportedOption.
	Create func(d Dest, disks []Device, o CreateOptions) (Sink, error)
	// DiskSize, if set, returns the size of the disk Create makes for a
	// device of size bytes with options o, where that is more than size
	// rounded up to whole 512-byte sectors (a VHD's is rounded up to its
	// cylinder/head/sector geometry, as qemu-img rounds it). Nil: at most
	// that.
	DiskSize func(size int64, o Values) int64
	// Targets are the platforms the format writes for (--target azure),
	// each standing for some of its Options.
	Targets []Target
	// Options are the options Create takes (CreateOptions.Options), as
	// qemu's create_opts: -o NAME=VALUE, listed by -o help. An option not
	// declared here is refused by CheckOptions, never ignored.
	Options []Option
	// InfoAt describes the size bytes of r, a file or an object of the
	// format, for info, as qemu-img info does: from its header, without
	// opening its disks or a backing file, so that an image other commands
	// refuse can still be described. It reads r only: st says what else
	// there is to know (the name, the bytes the file takes on disk, whether
	// it is a remote object, with no files beside it). size is where r
	// ends, a block device's size too, whether or not st.Size is known.
	// It describes local files and remote objects (s3://, http(s)://)
	// alike. Nil: Info describes the format's local files, and its remote
	// objects are described by their format and size only.
	InfoAt func(r io.ReaderAt, size int64, st FileStat) (Info, error)
	// Info describes a local file of the format for info, as InfoAt does,
	// for a format that needs the file itself; InfoAt, if set, is used
	// instead. Nil with InfoAt nil: info cannot describe the format's
	// files.
	Info func(f *os.File, st FileStat) (Info, error)
	// Archive, if set, holds the rules of the format's archives (Multi)
	// for what they store beside the disks' content: the names of their
	// disks and of the files they become (see ArchiveRules).
	Archive ArchiveRules
}

// Registry is a set of formats. Its methods are safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	formats []Format // registration order: probing order
}

// Register adds a format. It panics if the name is empty or taken, or an
// option is declared amiss (no name, one name twice, no type, an enum
// without values), or a target (one name twice, options the format does
// not take), as database/sql.Register does: all are programming errors.
func (r *Registry) Register(f Format) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.Name == "" {
		panic("format: Register with an empty name")
	}
	for _, g := range r.formats {
		if g.Name == f.Name {
			panic("format: Register called twice for " + f.Name)
		}
	}
	if err := checkDeclarations(f.Options); err != nil {
		panic("format: Register " + f.Name + ": " + err.Error())
	}
	if err := checkTargets(f); err != nil {
		panic("format: Register " + f.Name + ": " + err.Error())
	}
	r.formats = append(r.formats, f)
}

// Lookup returns the format with the given name.
func (r *Registry) Lookup(name string) (Format, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, f := range r.formats {
		if f.Name == name {
			return f, nil
		}
	}
	return Format{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownFormat, name, strings.Join(r.names(), ", "))
}

// Names returns the registered format names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.names()
}

func (r *Registry) names() []string {
	var n []string
	for _, f := range r.formats {
		n = append(n, f.Name)
	}
	slices.Sort(n)
	return n
}

// Formats returns the registered formats, in registration order.
func (r *Registry) Formats() []Format {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.formats)
}

// MaxConfig returns the most bytes a config file holds in any format
// (Format.MaxConfig): how much of a file given as one to read.
func (r *Registry) MaxConfig() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, f := range r.formats {
		n = max(n, f.MaxConfig)
	}
	return n
}

// ForPath returns the format whose Extensions match the end of path
// (case-insensitively), the longest match winning, or false.
func (r *Registry) ForPath(path string) (Format, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	lower := strings.ToLower(path)
	var best Format
	n := 0
	for _, f := range r.formats {
		for _, ext := range f.Extensions {
			if len(ext) > n && strings.HasSuffix(lower, ext) {
				best, n = f, len(ext)
			}
		}
	}
	return best, n > 0
}

// Detect returns the first format, in registration order, whose Probe
// accepts head. It returns ErrUnknownFormat if none does; formats without a
// Probe (raw) are never detected.
func (r *Registry) Detect(head []byte) (Format, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, f := range r.formats {
		if f.Probe != nil && f.Probe(head) {
			return f, nil
		}
	}
	return Format{}, ErrUnknownFormat
}

// DetectTail returns the first format, in registration order, whose
// ProbeTail accepts tail, the last 512 bytes of a regular file of size
// bytes. It returns ErrUnknownFormat if none does.
func (r *Registry) DetectTail(tail []byte, size int64) (Format, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, f := range r.formats {
		if f.ProbeTail != nil && len(tail) == 512 && f.ProbeTail(tail, size) {
			return f, nil
		}
	}
	return Format{}, ErrUnknownFormat
}

// ReadHead reads the first up to 4096 bytes of f, for Detect.
func ReadHead(f io.ReaderAt) ([]byte, error) {
	head := make([]byte, 4096)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return head[:n], nil
}

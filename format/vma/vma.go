package vma

import (
	"errors"
	"fmt"
	"strings"
)

// Name is the format's name in vmaconv's driver registry.
const Name = "vma"

// Magic is the first four bytes of every VMA archive.
var Magic = [4]byte{'V', 'M', 'A', 0}

// ExtentMagic is the first four bytes of every extent header.
var ExtentMagic = [4]byte{'V', 'M', 'A', 'E'}

// Layout constants of VMA v1.
const (
	Version = 1 // the only version there is

	BlockSize        = 4096                    // zero detection granularity
	ClusterSize      = 65536                   // unit of addressing
	BlocksPerCluster = ClusterSize / BlockSize // 16, one mask bit each

	ExtentHeaderSize = 512
	// SlotsPerExtent is the number of blockinfo slots in an extent header.
	// Proxmox calls it VMA_BLOCKS_PER_EXTENT, but each slot is a cluster.
	SlotsPerExtent = 59
	// WriterClustersPerExtent is how many clusters Proxmox's writer (and
	// this package's) puts in one extent: it flushes before the last slot
	// is used.
	WriterClustersPerExtent = SlotsPerExtent - 1
	// MaxExtentSize is the largest extent a reader must accept.
	MaxExtentSize = ExtentHeaderSize + SlotsPerExtent*ClusterSize

	// HeaderStructSize is the fixed part of the archive header; the blob
	// buffer follows it.
	HeaderStructSize = 12288
	// MaxHeaderSize bounds header_size when reading. Proxmox's reader has no
	// bound; this one covers every header this package's writer can produce
	// (256 configs of 64 KiB plus 254 device names).
	MaxHeaderSize = 64 << 20

	MaxConfigs  = 256   // config slots in the header
	MaxDevices  = 254   // usable device ids are 1..254
	MaxBlobSize = 65535 // blob lengths are 16 bit

	// MaxClusters is the exclusive upper bound of cluster numbers (32 bit),
	// so a device can hold at most 256 TiB.
	MaxClusters = 1 << 32

	// VMStateName is the device name of a RAM-state stream.
	VMStateName = "vmstate"
)

// Sentinel errors. Errors returned for a damaged archive are *FormatError
// values that wrap one of these, so callers test with errors.Is.
var (
	// ErrCorrupt means the archive breaks a rule of the format.
	ErrCorrupt = errors.New("vma: corrupt archive")
	// ErrChecksum means a header or extent MD5 does not match.
	ErrChecksum = errors.New("vma: checksum mismatch")
	// ErrUnsupported means a valid-looking archive uses something this
	// package does not handle (another version, a header larger than
	// MaxHeaderSize).
	ErrUnsupported = errors.New("vma: unsupported archive")
	// ErrIncomplete means the archive ended cleanly but clusters of some
	// disks were never stored (a truncated or interrupted backup).
	ErrIncomplete = errors.New("vma: incomplete archive")
	// ErrNotVMA means the input does not start with the VMA magic.
	ErrNotVMA = errors.New("vma: not a VMA archive")
	// ErrWriteAfterClose is returned by a Writer used after Close.
	ErrWriteAfterClose = errors.New("vma: write after close")
)

// FormatError describes a problem found in an archive: what was wrong and
// where. It wraps one of the package's sentinel errors.
type FormatError struct {
	Offset  int64  // byte offset in the archive of the structure at fault; -1 if unknown
	Device  string // device name, if the problem concerns one device
	Cluster int64  // cluster number, or -1
	Msg     string // what is wrong
	Err     error  // ErrCorrupt, ErrChecksum, ErrUnsupported, ErrIncomplete or ErrNotVMA
}

// Error implements error: the message, then where: "vma: duplicate cluster
// (device drive-scsi0, cluster 17, byte offset 13352)".
func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("vma: ")
	b.WriteString(e.Msg)
	var where []string
	if e.Device != "" {
		where = append(where, "device "+e.Device)
	}
	if e.Cluster >= 0 {
		where = append(where, fmt.Sprintf("cluster %d", e.Cluster))
	}
	if e.Offset >= 0 {
		where = append(where, fmt.Sprintf("byte offset %d", e.Offset))
	}
	if len(where) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(where, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *FormatError) Unwrap() error { return e.Err }

func errAt(kind error, off int64, format string, args ...any) *FormatError {
	return &FormatError{Offset: off, Cluster: -1, Msg: fmt.Sprintf(format, args...), Err: kind}
}

// Device is one stream of the archive: a disk, or the RAM state of a
// suspended VM (named VMStateName).
type Device struct {
	ID   int    // 1..254, unique within the archive
	Name string // e.g. "drive-scsi0"
	Size int64  // bytes; any positive value
}

// UnstoredTailLimit is the most of a vmstate stream's end that an archive
// may leave unstored and still have read as zeros (beyond it, and beyond
// the size of what is stored, see CheckVMStateTail). Proxmox stores every
// cluster of a vmstate stream, so a missing tail is damage; a large one
// is refused rather than made up, so that an archive of a few bytes
// cannot declare terabytes of zeros to hash or write.
const UnstoredTailLimit = 64 << 20

// CheckVMStateTail returns an error if the bytes of d past storedEnd (the
// end of its last stored cluster) are more than UnstoredTailLimit and more
// than storedEnd. Disks are never checked: the reader requires all their
// clusters.
func CheckVMStateTail(d Device, storedEnd int64) error {
	tail := d.Size - storedEnd
	if !d.IsVMState() || tail <= UnstoredTailLimit || tail <= storedEnd {
		return nil
	}
	return &FormatError{Offset: -1, Device: d.Name, Cluster: -1, Err: ErrCorrupt,
		Msg: fmt.Sprintf("the archive stores %d of the %d bytes the vmstate stream declares; refusing to make up the other %d as zeros", max(storedEnd, 0), d.Size, tail)}
}

// Clusters returns the number of 64 KiB clusters the device occupies,
// ceil(Size / ClusterSize).
func (d Device) Clusters() int64 { return (d.Size + ClusterSize - 1) / ClusterSize }

// IsVMState reports whether the device is a RAM-state stream rather than a
// disk.
func (d Device) IsVMState() bool { return d.Name == VMStateName }

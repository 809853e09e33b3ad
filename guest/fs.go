// Package guest reads the files inside a disk without restoring it: the
// partition table, LVM2 volume groups and file systems found on a disk,
// as one tree of nodes (see Tree). File system readers live in packages
// under guest/ and register here (see Register); guest/all registers
// them all.
package guest

import (
	"errors"
	"io"
	"io/fs"
	"time"
)

// Info describes one node of a file system, as its inode says.
type Info struct {
	// Name is the node's name in the directory it was read from, as the
	// file system stores it (decoded to UTF-8 where the file system stores
	// UTF-16 or a code page). It is never checked: see CheckName.
	Name string
	// Mode holds the type bits (fs.ModeDir, fs.ModeSymlink, fs.ModeDevice,
	// fs.ModeCharDevice, fs.ModeNamedPipe, fs.ModeSocket; none for a regular
	// file) and the permission, setuid, setgid and sticky bits.
	Mode fs.FileMode
	// Size is a regular file's length in bytes, a symbolic link's target
	// length, a directory's size as the file system reports it.
	Size int64
	// ModTime is the last modification time (ATime, CTime where known).
	ModTime, ATime, CTime time.Time
	// UID and GID are the owner's ids, 0 where the file system has none.
	UID, GID uint32
	// Nlink is the number of hard links, 1 where the file system has none.
	Nlink uint32
	// Ino identifies the node within its file system (the inode number,
	// the MFT record, a directory entry's position); two entries with the
	// same Ino are hard links to one node. Never 0.
	Ino uint64
	// Rdev is a device node's device number (Linux encoding), else 0.
	Rdev uint64
}

// Node is one file, directory, link or special file of a file system.
// Nodes are safe for concurrent use.
type Node interface {
	// Info returns the node's metadata. Its Name is the name the node was
	// found under (the root's is "").
	Info() Info
	// ReadDir returns a directory's entries, without "." and "..", in the
	// file system's order. It returns ErrNotDir for anything but a
	// directory, and ErrTooManyEntries past MaxDirEntries.
	ReadDir() ([]Node, error)
	// Open returns a regular file's contents. It returns ErrNotRegular for
	// anything else.
	Open() (File, error)
	// Readlink returns a symbolic link's target as stored, never followed.
	// It returns ErrNotLink for anything else.
	Readlink() (string, error)
}

// File is a regular file's contents, read at random. ReadAt past Size
// returns io.EOF. Safe for concurrent use.
type File interface {
	io.ReaderAt
	Size() int64
}

// Sparse is implemented by files that know where their data lies, so that
// holes are neither read nor written. Data returns the stored range
// [start, end) that holds off, or else the first one after off, with start
// clipped to off; it returns io.EOF when nothing is stored at or after off.
// Holes, unwritten (preallocated) extents and sparse runs read as zeros and
// are not stored ranges.
type Sparse interface {
	Data(off int64) (start, end int64, err error)
}

// FS is a file system opened read-only.
type FS interface {
	// Root returns the root directory.
	Root() (Node, error)
}

// MaxDirEntries bounds one directory's entries, so that a hostile
// directory costs bounded memory: ReadDir fails with ErrTooManyEntries
// past it.
const MaxDirEntries = 1 << 18

// MaxLinkLen bounds a symbolic link's target (Linux's PATH_MAX).
const MaxLinkLen = 4096

// Errors returned by Node's methods, wrapped with context.
var (
	ErrNotDir         = errors.New("not a directory")
	ErrNotRegular     = errors.New("not a regular file")
	ErrNotLink        = errors.New("not a symbolic link")
	ErrTooManyEntries = errors.New("more entries than vmaconv reads in one directory (262144)")
	// ErrCorrupt is wrapped by every error about a file system's
	// structures that do not hold together (a block past the end, a loop
	// in a tree, a bad magic).
	ErrCorrupt = errors.New("corrupt")
)

// Filesystem is a file system type that a reader package registers.
type Filesystem struct {
	// Name is the family's name ("ext4", "xfs", "ntfs", "fat", "iso9660").
	Name string
	// Probe returns the type of the file system at the start of r (size
	// bytes long: a disk, a partition or a logical volume) as a user knows
	// it ("ext2", "ext3", "ext4", "fat12", "fat16", "fat32", "ntfs",
	// "xfs", "iso9660"), or "" if r does not hold one of this family.
	// It reads only the first blocks (the superblock) and never fails.
	Probe func(r io.ReaderAt, size int64) string
	// Open opens the file system at the start of r. It checks what it
	// needs of the superblock and fails with an error wrapping ErrCorrupt
	// on anything it cannot read.
	Open func(r io.ReaderAt, size int64) (FS, error)
}

var filesystems []Filesystem

// Register adds a file system type. It is called from the init function
// of the reader's package; the registered types are probed in the order
// registered.
func Register(f Filesystem) {
	for _, g := range filesystems {
		if g.Name == f.Name {
			panic("guest: file system " + f.Name + " registered twice")
		}
	}
	filesystems = append(filesystems, f)
}

// Filesystems returns the registered file system types.
func Filesystems() []Filesystem { return append([]Filesystem(nil), filesystems...) }

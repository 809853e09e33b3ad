// Package vmdk reads and writes VMware virtual disks (VMDK), as QEMU's
// block/vmdk.c does and as VMware's "Virtual Disk Format 5.0" technical
// note describes them.
//
// Reading (Open, OpenAt):
//
//   - hosted sparse extents ("KDMV", versions 1 to 3): monolithicSparse
//     images, with grain directory, grain tables and zeroed grains (grain
//     table entry 1, version 2); streamOptimized images, whose grains are
//     zlib-compressed behind markers and whose grain directory may be
//     known only from the footer (gdOffset GD_AT_END), read as QEMU does;
//   - ESX sparse extents ("COWD", vmfsSparse);
//   - descriptor files ("# Disk DescriptorFile") of monolithicFlat, vmfs,
//     vmfsSparse, twoGbMaxExtentSparse and twoGbMaxExtentFlat disks, whose
//     extents are FLAT, VMFS, SPARSE, VMFSSPARSE or ZERO, in several files;
//   - a parent image (parentFileNameHint), whose content shows through
//     unallocated grains.
//
// Descriptors are read as VMware's tools read them: a ZERO extent is
// zeros and a RDONLY one is read, where QEMU skips both lines (and so
// makes the disk shorter), and an extent line after a blank line is read
// once, where QEMU's sscanf reads it twice. QEMU's other rules are kept:
// a sparse extent's size is its header's, not its line's, and only the
// createTypes QEMU opens are opened.
//
// Extent files are opened from the descriptor's directory only: an
// absolute name, one that leaves the directory ("..") or a symbolic link
// out of it is refused unless format.OpenOptions.AllowBacking is set, and
// so is a parent image, whatever its name; each one followed is told to
// OpenOptions.Note. A parent chain is at most maxParents deep and has no
// loop. OpenAt reads a self-contained sparse image (monolithicSparse or
// streamOptimized, as an OVA holds it) from any io.ReaderAt and refuses a
// descriptor, which names files.
//
// Nothing a header says is trusted for an allocation: tables are checked
// against the file before they are read, and read on demand through a
// bounded cache (tables.go), so that opening and reading any image costs
// memory bounded by a constant. Where QEMU reads zeros past the end of a
// file (a grain table or a grain beyond it), this package refuses the
// image, naming the field and its offset.
//
// Writing (Create, -o subformat=):
//
//   - monolithicSparse (the default, as qemu-img's): QEMU's layout, with a
//     redundant grain directory, grain tables placed after both directories
//     and 64 KiB grains appended as their data arrives (SparseWriter);
//   - streamOptimized, version 3: zlib-compressed grains behind markers,
//     each grain table after its grains, then the grain directory, the
//     footer and the end-of-stream marker, as VMware's tools write it for
//     OVAs, so that it can be written to a pipe (StreamWriter).
//
// The embedded descriptor carries what ESXi checks: createType,
// ddb.adapterType, ddb.virtualHWVersion, ddb.toolsVersion and the geometry
// QEMU computes (-o adapter_type=, hwversion=, toolsversion=, compat6).
// Its CID, which qemu-img draws at random, is derived from the file's
// name and the disk's size, so that the same input gives the same bytes.
package vmdk

// Name is the format's name in vmaconv's driver registry (qemu-img's).
const Name = "vmdk"

// Magics of the two sparse extent formats, as their files start.
var (
	Magic     = [4]byte{'K', 'D', 'M', 'V'} // hosted sparse extent (VMDK4)
	MagicCOWD = [4]byte{'C', 'O', 'W', 'D'} // ESX sparse extent (VMDK3)
)

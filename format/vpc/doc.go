// Package vpc is vmaconv's VHD driver (qemu-img's name for the format is
// vpc): Microsoft's Virtual Hard Disk, as Virtual PC, Hyper-V, Azure and
// qemu-img write it, specified in Microsoft's "Virtual Hard Disk Image
// Format Specification" (version 1.0, 2006) and read as QEMU's
// block/vpc.c reads it.
//
// It reads the three kinds of VHD:
//   - fixed: the disk, then a 512-byte footer. It starts with no
//     signature, so it is recognised by its footer (Format.ProbeTail: the
//     cookie "conectix", a checksum that adds up, the fixed disk type and a
//     size that fits the file), which qemu-img does only when told -f vpc;
//   - dynamic: a copy of the footer, a dynamic disk header ("cxsparse"),
//     the block allocation table (BAT) and blocks of 2 MiB (each a sector
//     bitmap, then the data), the footer last. Blocks the BAT leaves out
//     read as zeros and are zero regions (format.ZeroMapper);
//   - differencing: a dynamic disk whose sectors not marked in a block's
//     bitmap, and whose blocks not in the BAT, are its parent's. The parent
//     is opened only with OpenOptions.AllowBacking (QEMU reads none: it
//     takes a differencing disk for a dynamic one), each one followed is
//     told through OpenOptions.Note, found from the parent locators
//     relative to the child's directory, checked against the UUID the
//     child records, and a chain deeper than 16 or one that loops is
//     refused.
//
// The virtual size is QEMU's: the disk's CHS geometry for images made by
// Virtual PC ("vpc ") and by qemu-img without force_size ("qemu"), its
// current size otherwise (Hyper-V, Azure, Disk2vhd, qemu-img's force_size,
// …) and whenever the geometry is the largest (see footer.sizedByGeometry
// for the rule and how QEMU 9.2 and earlier differ).
//
// Every field a reader would trust is checked first: the footer's and the
// header's checksums, the BAT within the file and within the memory bound
// (see Source), every block within the file and clear of every other
// block and of the metadata, the block size, the parent locators. Errors
// name the field and its offset in the file.
//
// It writes fixed and dynamic disks (Create, Writer) as qemu-img convert
// -O vpc writes them, field for field: the size rounded up to a CHS
// geometry unless -o force_size=on keeps it, the creator "qemu" ("qem2"
// with force_size), the BAT after the header, blocks in the order their
// data arrives with all their bitmap bits set, zero blocks left out. -o
// azure=on writes what Azure takes: a fixed disk of a whole number of MiB.
// A fixed disk streams (the disk, then the footer), so it can be written
// to a pipe.
package vpc

// Name is the format's name in vmaconv's driver registry: qemu-img's.
const Name = "vpc"

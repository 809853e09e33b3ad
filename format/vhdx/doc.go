// Package vhdx reads and writes VHDX images, Hyper-V's virtual disks, as
// [MS-VHDX] (Microsoft's Virtual Hard Disk v2 File Format specification)
// lays them out and as QEMU's block/vhdx.c and block/vhdx-log.c read and
// write them.
//
// Reading (Open, OpenAt): dynamic, fixed and differencing images. The
// file identifier ("vhdxfile"), both headers (the current one chosen by
// its sequence number, each checked with its CRC-32C), the region table
// (CRC-32C; its copy is used when the first is damaged), the metadata
// items (file parameters, virtual disk size, logical and physical sector
// sizes, page 83 data, parent locator) and every BAT entry are checked
// when the image is opened, as QEMU checks them and as strictly as the
// specification asks where QEMU would read past a damaged structure:
// regions may not overlap, and a block may not overlap a region or another
// block, nor lie in the header section or past the end of the file (a
// region past it reads as zeros, as QEMU reads it). A log that holds entries to replay (QEMU refuses such an image
// when it opens it read-only) is replayed in memory, within a bound
// (maxLogOps descriptors); a larger log is refused with the way out. A
// differencing image reads its parent (found through its parent locator,
// checked by its DataWriteGuid as Hyper-V checks it) only with
// format.OpenOptions.AllowBacking.
//
// The BAT is read on demand through a bounded cache (batCacheBytes), so
// that a source costs memory independent of the disk's size; payload
// blocks in a zero state (and, through the file's holes, the zero parts
// of present blocks) are zero regions for format.ZeroMapper.
//
// Writing (Create, NewWriter): dynamic and fixed images laid out as
// qemu-img lays them out (a 1 MiB header section, the log, the BAT, the
// metadata, then the payload blocks), with qemu-img's options block_size,
// log_size, subformat and block_state_zero. See Writer.
//
// [MS-VHDX]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/
package vhdx

// Name is the format's name in vmaconv's driver registry (qemu-img's).
const Name = "vhdx"

// Magic is the file identifier's signature, the first eight bytes of a
// VHDX file.
var Magic = [8]byte{'v', 'h', 'd', 'x', 'f', 'i', 'l', 'e'}

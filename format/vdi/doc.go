// Package vdi is vmaconv's driver for VirtualBox disk images (VDI), read
// and written as QEMU's block/vdi.c and VirtualBox's VDI backend
// (src/VBox/Storage/VDI.cpp, VDICore.h) read and write them.
//
// A VDI file starts with a 512-byte header: a pre-header (64 bytes of
// text, the signature 0xbeda107f, the version 1.1), then the header
// proper (header_size, image type, offsets of the block map and of the
// data, the disk size, the block size, the number of blocks, UUIDs). The
// block map holds one little-endian 32-bit entry per block of the disk:
// the index of the data block that holds it (at offset_data +
// index × block_size), or 0xffffffff (never allocated) or 0xfffffffe
// (discarded), both read as zeros, as QEMU reads them. A dynamic image
// (image type 1) allocates blocks as they are written; a static one (type
// 2, qemu-img's static=on, VirtualBox's fixed) maps block i to data block
// i.
//
// Reading: the header is checked as QEMU checks it when it opens an image
// (version 1.1, sectors of 512 bytes, blocks of 1 MiB, the only size QEMU
// reads, no link or parent UUID, block count and disk size within QEMU's
// limits), with the same limits, and, as VirtualBox checks it, a
// header_size of at least 0x180, a block map after the header and before
// the data, an image type of 1 or 2 and no extra data per block (which
// QEMU would misread). The block map is then read once and every entry
// checked: an allocated entry must name a data block below the block
// count (qemu-img check's rule), used by no other entry, whose bytes are
// in the file. QEMU reads data past the end of the file as zeros; a
// block map or data block that does not fit the file is refused here. The
// virtual size is the header's disk size rounded up to whole 512-byte
// sectors, as QEMU reads it (and writes it back when it allocates a
// block; VirtualBox rounds it down). Unallocated and
// discarded blocks, and data blocks the file holds as holes, are zero
// regions (format.ZeroMapper); Mapping answers as qemu-img map does.
//
// Writing (Writer, Create): a header as qemu-img writes it (header_size
// 0x180, the block map at 0x200, the data after it, qemu's pre-header
// text), dynamic by default, static with -o static=on. The disk size is
// its source's rounded up to whole sectors, as qemu-img convert records
// it (qemu-img create records the size it is given, exactly). Blocks of
// zeros stay unallocated in a dynamic image, and zero 4 KiB pieces of the
// others stay holes of the file. The image UUID is random unless -o uuid=
// gives it; the last-modification UUID is random too, or derived from a
// given image UUID, so that the same input and options give the same
// bytes.
package vdi

// Name is the format's name in vmaconv's driver registry.
const Name = "vdi"

// Signature is the image signature, stored little-endian at byte 0x40.
const Signature = 0xbeda107f

// Package qcow2 is vmaconv's read-only qcow2 source, built on
// github.com/lima-vm/go-qcow2reader.
//
// The library is used with guards around what it trusts: the header is
// checked first (cluster size, L1 table within the file, so that no field
// can make it allocate gigabytes), backing files are only followed when
// allowed and when the image records their format, backing chains are
// bounded, panics inside the library become errors, and compressed
// clusters are decompressed once (zlib and zstd, with pooled decoders).
//
// Where a disk's bytes are comes from the package's own cluster map, not
// the library's per-cluster lookups: it reads the L1 and L2 tables
// (extended ones too) once each into a bounded cache, skips empty L1
// entries whole, reads uncompressed clusters straight from the file, and
// reports clusters the file holds as holes as zeros, so that a source's
// cost follows its metadata and its data, not its virtual size. The
// package also writes qcow2 images (NewWriter, Create).
package qcow2

// Name is the format's name in vmaconv's driver registry.
const Name = "qcow2"

// Magic is the first four bytes of a qcow2 image.
var Magic = [4]byte{'Q', 'F', 'I', 0xfb}

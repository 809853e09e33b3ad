// Package qcow2 is vmaconv's read-only qcow2 source, built on
// github.com/lima-vm/go-qcow2reader.
//
// The library is used with guards around what it trusts: the header is
// checked first (cluster size, L1 table within the file, so that no field
// can make it allocate gigabytes), backing files are only followed when
// allowed and when the image records their format, backing chains are
// bounded, panics inside the library become errors, and compressed
// clusters are decompressed once (zlib and zstd, with pooled decoders).
package qcow2

// Name is the format's name in vmaconv's driver registry.
const Name = "qcow2"

// Magic is the first four bytes of a qcow2 image.
var Magic = [4]byte{'Q', 'F', 'I', 0xfb}

// Package raw is vmaconv's driver for raw disk images: the file's bytes
// are the disk.
//
// As a source, a raw image reports its holes (SEEK_DATA/SEEK_HOLE on Linux;
// elsewhere every byte counts as data, which gives the same result, only
// slower), so a sparse file's holes are never read. Raw has no magic and is
// never detected: it is what an input is when no other format claims it.
package raw

// Name is the format's name in vmaconv's driver registry.
const Name = "raw"

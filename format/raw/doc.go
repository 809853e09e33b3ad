// Package raw will hold vmaconv's driver for raw disk images: a source that
// reports holes (SEEK_DATA/SEEK_HOLE) and a sparse sink over io.WriterAt.
//
// It is part of the converter (issue 3) and holds nothing yet; `vmaconv
// extract` writes its sparse raw files through pipeline.Unpack.
package raw

// Name is the format's name in vmaconv's driver registry.
const Name = "raw"

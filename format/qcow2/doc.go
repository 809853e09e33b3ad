// Package qcow2 will hold vmaconv's read-only qcow2 source, built on
// github.com/lima-vm/go-qcow2reader (pinned at v0.7.1 when first used).
//
// It is part of the converter (issue 3) and holds nothing yet.
package qcow2

// Name is the format's name in vmaconv's driver registry.
const Name = "qcow2"

// Magic is the first four bytes of a qcow2 image.
var Magic = [4]byte{'Q', 'F', 'I', 0xfb}

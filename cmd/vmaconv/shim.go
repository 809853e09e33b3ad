package main

// Until the vmarules branch is merged: what its files define from the
// registry and the format capabilities (archiveFormat in proxmox.go) and
// what its files still call here (header). Delete this file when merging
// it.

import (
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
)

// archiveFormat is the format of archives.
func archiveFormat() format.Format { return vma.Format }

// header returns an archive input's header.
func header(in *input.Input) *vma.Header {
	if r := vma.ReaderOf(in.Stream()); r != nil {
		return r.Header()
	}
	return vma.ArchiveOf(in.Image()).Header()
}

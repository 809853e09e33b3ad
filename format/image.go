package format

import "io"

// Image is an opened input file: one disk (a raw or qcow2 image), or an
// archive of several disks and the config files that go with them. Its
// disks' Sources stay valid until Close, which closes the file.
type Image interface {
	io.Closer
	// Disks returns the image's disks, in order. A plain image has one,
	// without a name.
	Disks() []Disk
	// Configs returns the files stored with the disks (archives only).
	Configs() []Config
}

// Disk is one disk of an Image. Its Source is closed with the Image, not
// on its own.
type Disk struct {
	Name   string // device name in an archive; "" for a plain image
	Source Source
}

// SingleDisk returns an Image of one unnamed disk, src; its Close closes
// src.
func SingleDisk(src Source) Image { return single{src} }

type single struct{ src Source }

func (s single) Disks() []Disk     { return []Disk{{Source: s.src}} }
func (s single) Configs() []Config { return nil }
func (s single) Close() error      { return s.src.Close() }

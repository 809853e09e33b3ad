package ova

import (
	"errors"

	"github.com/vmaconv/vmaconv/format"
)

// vmdkDriver writes each disk of an OVA as a streamOptimized VMDK, and
// reads the VMDKs of a package. (A placeholder until format/vmdk is
// merged.)
var vmdkDriver = diskDriver{
	format: format.Format{Name: "vmdk",
		Create: func(format.Dest, []format.Device, format.CreateOptions) (format.Sink, error) {
			return nil, errors.New("vmdk: not yet")
		}},
	settings: func(Bus) []format.Setting { return nil },
}

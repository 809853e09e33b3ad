package ova

import (
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
)

// vmdkDriver writes each disk of an OVA as a streamOptimized VMDK (the
// adapter type of its controller: ide, else lsilogic, as ovftool writes
// them), and reads the VMDKs of a package: through vmdk.Format.OpenAt
// from an OVA (a self-contained sparse VMDK), through vmdk.Format.Open
// beside a bare OVF (a descriptor's extents too, by the VMDK driver's own
// consent rules).
var vmdkDriver = diskDriver{
	format: vmdk.Format,
	settings: func(bus Bus) []format.Setting {
		adapter := "lsilogic"
		if bus == BusIDE {
			adapter = "ide"
		}
		return []format.Setting{{Name: "subformat", Value: vmdk.StreamOptimized}, {Name: "adapter_type", Value: adapter}}
	},
}

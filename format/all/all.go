// Package all registers vmaconv's built-in formats, in one visible list.
package all

import (
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/ova"
	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vdi"
	"github.com/vmaconv/vmaconv/format/vhdx"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/format/vpc"
)

// Registry returns a new registry holding the built-in formats. Probing
// order is qcow2, vma, vdi, vmdk, ova, vhdx; raw is never probed, only the fallback, for inputs
// and for outputs whose name matches no format's extension.
func Registry() *format.Registry {
	r := &format.Registry{}
	r.Register(qcow2.Format)
	r.Register(vma.Format)
	r.Register(vdi.Format)
	r.Register(vmdk.Format)
	r.Register(ova.Format) // after vma: a directory DST is vma's (output.Choose)
	r.Register(vhdx.Format)
	r.Register(vpc.Format)
	r.Register(raw.Format)
	return r
}

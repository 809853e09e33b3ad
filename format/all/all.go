// Package all registers vmaconv's built-in formats, in one visible list.
package all

import (
	"bytes"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
)

// VMA is the archive format. It has no random-access Open: archives are
// read as streams (vma.NewReader), one device at a time.
var VMA = format.Format{
	Name:  vma.Name,
	Probe: func(head []byte) bool { return bytes.HasPrefix(head, vma.Magic[:]) },
}

// Registry returns a new registry holding the built-in formats. Probing
// order is qcow2, vma; raw is never probed, only the fallback.
func Registry() *format.Registry {
	r := &format.Registry{}
	r.Register(qcow2.Format)
	r.Register(VMA)
	r.Register(raw.Format)
	return r
}

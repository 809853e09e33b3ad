package input

import (
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

// Origin describes the input for an archive written from it
// (format.CreateOptions.From): its path, whether it is an archive, its
// compression, and when it was made (format.Created). The caller says
// whether its configs are kept (OwnConfigs) and all its disks (Whole).
func (in *Input) Origin() *format.Origin {
	path := in.ref.Path
	if in.name != "" {
		path, _, _ = strings.Cut(in.name, "?")
	}
	o := &format.Origin{Path: path, Archive: in.Archive(), Compression: in.comp}
	var c any = in.img
	if in.stream != nil {
		c = in.stream
	}
	if c, ok := c.(format.Created); ok {
		o.CTime = c.Created()
	}
	return o
}

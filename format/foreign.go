package format

import (
	"bytes"
	"strings"
)

// Foreign describes an image format vmaconv does not read or write but
// recognises, so that such an image is never taken for raw (its container
// bytes archived as a disk) and such a destination never written as raw.
type Foreign struct {
	Name       string   // as users know it: "VMDK"
	QEMU       string   // qemu-img's name for it: "vmdk"
	Extensions []string // destination name endings, lower case
	// Probe reports whether head (the first bytes of a file, up to 4096)
	// and tail (its last 512 bytes, or fewer) are of this format.
	Probe func(head, tail []byte) bool
}

func prefix(p string) func(head, _ []byte) bool {
	return func(head, _ []byte) bool { return bytes.HasPrefix(head, []byte(p)) }
}

// Foreigns are the formats QEMU reads that vmaconv does not, with the
// signatures QEMU's own probes look for.
var Foreigns = []Foreign{
	{"QED", "qed", []string{".qed"}, prefix("QED\x00")},
	{"LUKS", "luks", []string{".luks"}, prefix("LUKS\xba\xbe")},
	{"Parallels", "parallels", []string{".hds"}, func(head, _ []byte) bool {
		return bytes.HasPrefix(head, []byte("WithoutFreeSpace")) || bytes.HasPrefix(head, []byte("WithouFreSpacExt"))
	}},
	{"Bochs", "bochs", nil, prefix("Bochs Virtual HD Image")},
	{"cloop", "cloop", []string{".cloop"}, prefix("#!/bin/sh\n#V2.0 Format\nmodprobe cloop")},
	{"DMG", "dmg", []string{".dmg"}, func(_, tail []byte) bool {
		return len(tail) == 512 && bytes.HasPrefix(tail, []byte("koly"))
	}},
}

// DetectForeign returns the foreign format head and tail belong to, if
// any.
func DetectForeign(head, tail []byte) (Foreign, bool) {
	for _, f := range Foreigns {
		if f.Probe(head, tail) {
			return f, true
		}
	}
	return Foreign{}, false
}

// ForeignForPath returns the foreign format a destination's name asks for,
// if any.
func ForeignForPath(path string) (Foreign, bool) {
	lower := strings.ToLower(path)
	for _, f := range Foreigns {
		for _, ext := range f.Extensions {
			if strings.HasSuffix(lower, ext) {
				return f, true
			}
		}
	}
	return Foreign{}, false
}

package format

import (
	"errors"
	"io/fs"
	"os"
	"strings"
)

// Ref names a source: a file, and for an archive optionally one device,
// written FILE:DEVICE ("vm.vma:drive-scsi0"). "-" is standard input.
type Ref struct {
	Path   string
	Device string // empty: the only disk, or all of them
}

// ParseRef parses s. A path that exists as given is always a file, so file
// names with colons work; otherwise the text after the last colon is the
// device, if the part before it exists. Anything else is a path (and
// opening it reports that it does not exist).
func ParseRef(s string) Ref {
	if s == "-" || exists(s) {
		return Ref{Path: s}
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 && i < len(s)-1 && (s[:i] == "-" || exists(s[:i])) {
		return Ref{Path: s[:i], Device: s[i+1:]}
	}
	return Ref{Path: s}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}

// String returns the reference as ParseRef reads it.
func (r Ref) String() string {
	if r.Device == "" {
		return r.Path
	}
	return r.Path + ":" + r.Device
}

// UnmarshalText implements encoding.TextUnmarshaler, for flag parsers.
func (r *Ref) UnmarshalText(b []byte) error {
	*r = ParseRef(string(b))
	return nil
}

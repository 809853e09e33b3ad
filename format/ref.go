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
//
// A URL (s3://, http://, https://) cannot be asked whether it exists: the
// text after a colon past its last slash is the device if it is a device
// name (letters, digits, - and _) and a path precedes it
// (s3://bucket/vm.vma:drive-scsi0); input.Open takes the URL whole if
// the object without the suffix does not exist.
func ParseRef(s string) Ref {
	if IsURL(s) {
		return parseURLRef(s)
	}
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

// IsURL reports whether s names a remote object (package remote): it
// starts with s3://, http:// or https:// (in any case), with something
// after it.
func IsURL(s string) bool {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || rest == "" {
		return false
	}
	switch strings.ToLower(scheme) {
	case "s3", "http", "https":
		return true
	}
	return false
}

// parseURLRef splits a URL's device suffix (see ParseRef).
func parseURLRef(s string) Ref {
	_, rest, _ := strings.Cut(s, "://")
	slash := strings.IndexByte(rest, '/')
	i := strings.LastIndexByte(rest, ':')
	if slash < 0 || i <= strings.LastIndexByte(rest, '/') || i == len(rest)-1 || i == slash+1 {
		return Ref{Path: s}
	}
	dev := rest[i+1:]
	for _, r := range dev {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
			return Ref{Path: s}
		}
	}
	cut := len(s) - len(rest) + i
	return Ref{Path: s[:cut], Device: dev}
}

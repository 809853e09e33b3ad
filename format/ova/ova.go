package ova

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/text"
)

// Name is the format's name in vmaconv's driver registry.
const Name = "ova"

// Format is the OVA driver, for a format.Registry: an OVA (or a bare
// .ovf with its files beside it) read as an archive of the disks its
// descriptor names, with a qemu-server.conf made from its hardware; and
// an archive's disks and config written as an OVA of streamOptimized
// VMDKs. It is probed after vma: a directory destination is still an
// archive (output.Choose takes the first format that writes archives).
var Format = format.Format{
	Name:       Name,
	Probe:      Probe,
	Open:       open,
	OpenAt:     openAt,
	DiskName:   vma.DeviceName,
	Extensions: []string{".ova", ".ovf"},
	Multi:      true,
	MaxConfig:  vma.MaxBlobSize,
	Create:     Create,
	Options:    options,
	InfoAt:     fileInfo,
}

// Sentinel errors. Errors for a damaged package wrap ErrCorrupt or
// ErrChecksum, for one vmaconv cannot read ErrUnsupported, so callers
// test with errors.Is.
var (
	// ErrCorrupt means the package breaks a rule of the format: a tar
	// header, a member, the descriptor or the manifest.
	ErrCorrupt = errors.New("ova: corrupt package")
	// ErrChecksum means a file's digest does not match the manifest.
	ErrChecksum = errors.New("ova: checksum mismatch")
	// ErrUnsupported means a valid-looking package uses something
	// vmaconv does not handle (several VMs, compressed files).
	ErrUnsupported = errors.New("ova: unsupported package")
	// ErrNotOVA means the input is neither an OVA nor an OVF
	// descriptor; it wraps format.ErrUnknownFormat.
	ErrNotOVA = fmt.Errorf("ova: not an OVA or OVF descriptor: %w", format.ErrUnknownFormat)
)

// ustarMagic is at byte 257 of a ustar (and GNU) tar header.
const ustarMagic = "ustar"

// Probe reports whether head, the first bytes of a file, are an OVA (a
// tar archive whose first header, or one within head, names a .ovf) or
// an OVF descriptor (XML whose root is an OVF Envelope).
func Probe(head []byte) bool {
	long := "" // a name an extended header gives the next member
	for off := 0; off+blockSize <= len(head); off += blockSize {
		h := head[off : off+blockSize]
		if string(h[257:262]) != ustarMagic || !validChecksum(h) {
			break
		}
		name := cstring(h[0:100])
		if long != "" {
			name = long
		}
		if strings.HasSuffix(strings.ToLower(name), ".ovf") {
			return true
		}
		size, ok := parseOctal(h[124:136])
		if off > 0 || !ok || (h[156] != 'L' && h[156] != 'x') || size > blockSize {
			break // only an extended header may come before the descriptor's
		}
		data := head[min(off+blockSize, len(head)):min(off+blockSize+int(size), len(head))]
		if h[156] == 'L' {
			long = cstring(data)
		} else if _, rest, ok := strings.Cut(string(data), " path="); ok {
			long, _, _ = strings.Cut(rest, "\n")
		}
		off += int(padded(size))
	}
	return isOVF(head)
}

// isOVF reports whether head starts an XML document whose root element
// is an OVF Envelope.
func isOVF(head []byte) bool {
	s := bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	s = bytes.TrimLeft(s, " \t\r\n")
	if !bytes.HasPrefix(s, []byte("<")) {
		return false
	}
	return bytes.Contains(s, []byte("Envelope")) &&
		(bytes.Contains(s, []byte(nsOVF)) || bytes.Contains(s, []byte(nsOVF2)))
}

// cstring returns b up to its first NUL.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// FormatError describes a problem found in a package: what is wrong and
// where. It wraps one of the package's sentinel errors.
type FormatError struct {
	Member string // the member (or file) at fault, if any
	Offset int64  // byte offset in the package of the structure at fault, or -1
	Msg    string // what is wrong
	Err    error  // ErrCorrupt, ErrChecksum or ErrUnsupported
}

// Error implements error: "ova: MEMBER: what (byte offset N)".
func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("ova: ")
	if e.Member != "" {
		b.WriteString(text.Printable(e.Member) + ": ")
	}
	b.WriteString(e.Msg)
	if e.Offset >= 0 {
		fmt.Fprintf(&b, " (byte offset %d)", e.Offset)
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *FormatError) Unwrap() error { return e.Err }

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
)

// archiveArg is an ARCHIVE argument: a path, or "-" for standard input.
type archiveArg struct {
	Archive string `arg:"" help:"VMA archive, or - for standard input."`
}

// name is how the archive is called in messages.
func (a archiveArg) name() string {
	if a.Archive == "-" {
		return "<stdin>"
	}
	return a.Archive
}

// open opens the archive, compressed or not, as a stream (input.Open):
// for its header, or to read it through once.
func (a archiveArg) open(e *env) (*input.Input, error) {
	if a.Archive != "-" {
		if fi, err := os.Stat(a.Archive); err == nil && fi.IsDir() {
			return nil, fmt.Errorf("%s: is a directory, not an archive", a.Archive)
		}
	}
	return openInput(e, format.Ref{Path: a.Archive}, input.Options{Format: archiveFormat().Name, Stream: true})
}

// size returns the archive's file size, or -1 for standard input.
func (a archiveArg) size() int64 {
	if a.Archive == "-" {
		return -1
	}
	fi, err := os.Stat(a.Archive)
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	return fi.Size()
}

// humanSize formats n bytes the way qemu-img does: "3.01 MiB", "528 KiB".
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	s := fmt.Sprintf("%.3g", v)
	if v >= 1000 {
		s = fmt.Sprintf("%.0f", v)
	}
	return s + " " + units[u]
}

// printable returns name as it is if it is plain printable ASCII without
// spaces, and quoted otherwise, so that names from an archive cannot play
// tricks on a terminal.
func printable(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f || name[i] == '"' {
			return strconv.Quote(name)
		}
	}
	if name == "" {
		return `""`
	}
	return name
}

// escapeControls replaces control characters (newlines, escape
// sequences, DEL, the C1 range) and bytes that are not UTF-8 with Go
// escapes, so that text holding names from an archive stays on one line
// and cannot drive the terminal.
func escapeControls(s string) string {
	bad := func(r rune, size int) bool {
		return r < ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError && size == 1
	}
	clean := true
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if bad(r, size) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case bad(r, size):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// plural formats "1 device", "2 devices".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

package main

import (
	"fmt"
	"os"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/text"
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

// The text helpers of internal/text, by the names the commands use.
var (
	humanSize      = text.Size
	printable      = text.Printable
	escapeControls = text.EscapeControls
	plural         = text.Plural
)

// entries formats "1 entry", "2 entries".
func entries(n int) string { return text.Plural(n, "entry") }

package input

import (
	"io"

	"github.com/vmaconv/vmaconv/format"
)

// openIndexed opens the size bytes of r with fm's OpenAt.
func (op *opener) openIndexed(fm format.Format, r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
	return fm.OpenAt(r, size, o)
}

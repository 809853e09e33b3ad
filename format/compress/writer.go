package compress

import (
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// NewWriter returns a writer that compresses into w. level 0 means the
// format's default (zstd 3, gzip 6); zstd uses one encoder goroutine per
// CPU. Close flushes the stream; it does not close w.
func NewWriter(w io.Writer, name string, level int) (io.WriteCloser, error) {
	switch name {
	case Zstd:
		if level == 0 {
			level = 3
		}
		if level < 1 || level > 22 {
			return nil, fmt.Errorf("zstd level %d: want 1 to 22", level)
		}
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(runtime.NumCPU()),
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)))
	case Gzip:
		if level == 0 {
			level = 6
		}
		if level < 1 || level > 9 {
			return nil, fmt.Errorf("gzip level %d: want 1 to 9", level)
		}
		return gzip.NewWriterLevel(w, level)
	case Lzop:
		return nil, fmt.Errorf("%w: no lzop compressor under a compatible licence; write .vma and pipe it through lzop", ErrUnsupported)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, name)
}

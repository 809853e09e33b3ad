package compress_test

import (
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
)

// A window too large is a format.MemoryLimited, which the CLI turns into
// the --zstd-memory way out without knowing the compressor.
var _ format.MemoryLimited = (*compress.WindowError)(nil)

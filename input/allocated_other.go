//go:build !unix

package input

import "os"

// allocated returns the file's size: the bytes it takes on disk are not
// known here.
func allocated(fi os.FileInfo) int64 { return fi.Size() }

//go:build unix

package input

import (
	"os"
	"syscall"
)

// allocated returns the bytes a file takes on disk (qemu-img's "disk
// size"), or its size where that is not known.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

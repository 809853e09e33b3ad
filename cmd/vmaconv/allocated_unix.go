//go:build unix

package main

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

// ownerOnly runs fn with a umask that keeps what it creates to the owner.
func ownerOnly(fn func() error) error {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	return fn()
}

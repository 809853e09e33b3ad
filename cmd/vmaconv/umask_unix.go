//go:build unix

package main

import (
	"os"
	"syscall"
)

// umask returns the process umask: CreateTemp makes 0600 files, and outputs
// get the usual 0666 &^ umask.
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

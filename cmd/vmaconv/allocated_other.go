//go:build !unix

package main

import "os"

// allocated returns the file's size: the bytes it takes on disk are not
// known here.
func allocated(fi os.FileInfo) int64 { return fi.Size() }

// ownerOnly runs fn (there is no umask here).
func ownerOnly(fn func() error) error { return fn() }

package input

import (
	"context"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// Names returns the names a user may give the disks of the archive at
// path by, as path:NAME: each device's name and its short name
// (ShortName). Only its header is read (and decompressed); nothing is
// returned for a file that is not an archive, or that takes longer than
// limit to read (a pipe that says nothing), for tab completion.
func Names(reg *format.Registry, path string, limit time.Duration) []string {
	names := make(chan []string, 1)
	go func() {
		in, err := Open(context.Background(), reg, format.Ref{Path: path}, Options{Stream: true})
		if err != nil {
			names <- nil
			return
		}
		defer in.Close()
		var n []string
		for i, d := range in.Devices() {
			if in.Archive() {
				n = append(n, d.Name)
			}
			if short := in.ShortName(i); short != "" {
				n = append(n, short)
			}
		}
		names <- n
	}()
	select {
	case n := <-names:
		return n
	case <-time.After(limit):
		return nil
	}
}

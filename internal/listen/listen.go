// Package listen opens the sockets vmaconv serves on: a Unix socket for
// its owner only, replacing one left by a server that was killed but
// never one a server listens on.
package listen

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Unix listens on a Unix socket at path, created for the owner only. A
// socket at path that no server listens on (left by one that was
// killed) is replaced, and replaced says so; one a server listens on is
// not (the error names the server's process where the system tells), nor
// is a file that is not a socket. Closing the listener does not remove
// the socket: the caller does, once.
func Unix(path string) (l *net.UnixListener, replaced bool, err error) {
	err = ownerOnly(func() (err error) {
		var nl net.Listener
		nl, err = net.Listen("unix", path)
		if !errors.Is(err, syscall.EADDRINUSE) {
			if err == nil {
				l = nl.(*net.UnixListener)
			}
			return err
		}
		if replaced, err = replaceStale(path); err != nil || !replaced {
			return cmp.Or(err, fmt.Errorf("%s: address already in use", path))
		}
		if nl, err = net.Listen("unix", path); err == nil {
			l = nl.(*net.UnixListener)
		}
		return err
	})
	if err != nil {
		return nil, false, err
	}
	l.SetUnlinkOnClose(false)
	return l, replaced, nil
}

//go:build unix

package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// replaceStale removes the socket at path if no server listens on it
// (one killed before it could remove it), and says whether it did. A
// socket a server listens on is left, and the error names the process
// where the system tells (Linux); a file that is not a socket is never
// removed.
func replaceStale(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, nil
	}
	if fi.Mode().Type() != os.ModeSocket {
		return false, fmt.Errorf("%s exists and is not a socket: not replacing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		who := peerProcess(c)
		c.Close()
		return false, fmt.Errorf("%s: a server is listening on it%s; stop it, or choose another --socket", path, who)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("%s is in use, and could not be checked: %w", path, err)
	}
	// No one listens. Removed if it is still the socket looked at.
	if now, err := os.Lstat(path); err != nil || !os.SameFile(fi, now) {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	return true, nil
}

// ownerOnly runs fn with a umask that keeps what it creates to the owner.
func ownerOnly(fn func() error) error {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	return fn()
}

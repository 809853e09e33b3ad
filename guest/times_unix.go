//go:build unix

package guest

import (
	"time"

	"golang.org/x/sys/unix"
)

// lchtimes sets a symbolic link's own times, not its target's.
func lchtimes(host string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, unix.AT_SYMLINK_NOFOLLOW)
}

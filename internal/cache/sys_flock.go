//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package cache

import (
	"errors"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openNonblock keeps an open from blocking on a FIFO put at an entry's
// name.
const openNonblock = syscall.O_NONBLOCK

// haveLocks: tryLock tells whether another run holds a lock.
const haveLocks = true

func currentUID() int { return os.Geteuid() }

// owner returns the uid owning a file.
func owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// tryLock takes a flock(2) lock on f without waiting: exclusive or shared.
// It reports false if another open file holds a conflicting one.
func tryLock(f *os.File, exclusive bool) (bool, error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how|unix.LOCK_NB)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return false, err
	}
	if errors.Is(ferr, unix.EWOULDBLOCK) {
		return false, nil
	}
	return ferr == nil, ferr
}

// statID returns an open file's device, inode and change time.
func statID(f *os.File) (dev, ino uint64, ctime int64, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, 0, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, 0, 0, err
	}
	if serr != nil {
		return 0, 0, 0, serr
	}
	return uint64(st.Dev), uint64(st.Ino), st.Ctim.Nano(), nil
}

// freeSpace returns the bytes free for the running user on dir's file
// system.
func freeSpace(dir string) (int64, bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}

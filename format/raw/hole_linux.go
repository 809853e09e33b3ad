//go:build linux

package raw

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// holeAt returns the length of the run that starts at off (data or hole,
// as zero says), up to size. lseek's SEEK_DATA/SEEK_HOLE do not change
// anything ReadAt depends on, so parallel calls are fine.
func holeAt(f *os.File, off, size int64) (n int64, zero bool, err error) {
	fd := int(f.Fd())
	data, err := syscall.Seek(fd, off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO): // no data at or after off: a hole to the end
		return size - off, true, nil
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
		return size - off, false, nil // no hole support (block device, old fs): all data
	case err != nil:
		return 0, false, err
	case data > off:
		return min(data, size) - off, true, nil
	}
	hole, err := syscall.Seek(fd, off, seekHole)
	if err != nil {
		return size - off, false, nil
	}
	return min(hole, size) - off, false, nil
}

// fullyAllocated reports whether f's allocated blocks cover its size, so
// that it cannot have holes worth asking about.
func fullyAllocated(f *os.File, size int64) bool {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Blocks*512 >= size
}

// punchHole deallocates n bytes at off of a regular file, which then
// read as zeros; it reports whether it could.
func punchHole(f *os.File, off, n int64) bool {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil
}

package main

import (
	"io/fs"
	"testing"
)

// TestModeString: ls -l's type and permission letters, setuid, setgid and
// sticky as s/S and t/T.
func TestModeString(t *testing.T) {
	for m, want := range map[fs.FileMode]string{
		0o644:                                     "-rw-r--r--",
		fs.ModeDir | 0o755:                        "drwxr-xr-x",
		fs.ModeSymlink | 0o777:                    "lrwxrwxrwx",
		fs.ModeSetuid | 0o755:                     "-rwsr-xr-x",
		fs.ModeSetuid | 0o644:                     "-rwSr--r--",
		fs.ModeSetgid | 0o750:                     "-rwxr-s---",
		fs.ModeDir | fs.ModeSticky | 0o777:        "drwxrwxrwt",
		fs.ModeDir | fs.ModeSticky | 0o776:        "drwxrwxrwT",
		fs.ModeDevice | fs.ModeCharDevice | 0o666: "crw-rw-rw-",
		fs.ModeDevice | 0o660:                     "brw-rw----",
		fs.ModeNamedPipe | 0o600:                  "prw-------",
		fs.ModeSocket | 0o777:                     "srwxrwxrwx",
		fs.ModeIrregular | 0o444:                  "?r--r--r--",
	} {
		if got := modeString(m); got != want {
			t.Errorf("modeString(%v) = %q, want %q", m, got, want)
		}
	}
}

// TestDevNumbers: Linux's device number encoding, as glibc's major(3) and
// minor(3) read it, for small and large numbers.
func TestDevNumbers(t *testing.T) {
	for rdev, want := range map[uint64][2]uint32{
		0x0501:     {5, 1},         // /dev/console
		0x0103:     {1, 3},         // /dev/null
		0x0801:     {8, 1},         // sda1
		0x10010300: {259, 0x10000}, // a minor past 255 uses the high bits
		0x10000102: {1, 0x10002},
	} {
		major, minor := devNumbers(rdev)
		if major != want[0] || minor != want[1] {
			t.Errorf("devNumbers(%#x) = %d, %d; want %d, %d", rdev, major, minor, want[0], want[1])
		}
	}
}

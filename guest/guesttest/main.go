package guesttest

import (
	"fmt"
	"os"
	"testing"
)

// MainTempDir is a TestMain for tests that share a temporary directory:
// it creates one in dir ("" for the default) as os.MkdirTemp(dir,
// pattern) does, sets *tmp to it, runs m, removes the directory and exits
// with m's code.
func MainTempDir(m *testing.M, tmp *string, dir, pattern string) {
	d, err := os.MkdirTemp(dir, pattern)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*tmp = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

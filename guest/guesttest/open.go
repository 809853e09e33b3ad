package guesttest

import (
	"io"
	"os"
	"testing"
)

// OpenFile opens the image file at path and returns what open makes of it
// and its size; it fails t when the file cannot be opened or open fails,
// and closes the file when t ends.
func OpenFile[F any](t testing.TB, path string, open func(r io.ReaderAt, size int64) (F, error)) F {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	v, err := open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

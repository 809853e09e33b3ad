package guesttest

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/guest"
)

// Lookup returns the node at slash-separated path p of fsys, reading the
// directories on the way; it fails t when a directory cannot be read or a
// name is not found.
func Lookup(t testing.TB, fsys guest.FS, p string) guest.Node {
	t.Helper()
	n, err := LookupErr(fsys, p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// LookupErr is Lookup returning the error: Root's as it is, a ReadDir's
// wrapped with p, or one wrapping fs.ErrNotExist when a name is not
// found.
func LookupErr(fsys guest.FS, p string) (guest.Node, error) {
	n, err := fsys.Root()
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(p, "/") {
		nodes, err := n.ReadDir()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		var next guest.Node
		for _, c := range nodes {
			if c.Info().Name == name {
				next = c
			}
		}
		if next == nil {
			return nil, fmt.Errorf("%s: %q not found: %w", p, name, fs.ErrNotExist)
		}
		n = next
	}
	return n, nil
}

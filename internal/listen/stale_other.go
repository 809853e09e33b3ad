//go:build !unix

package listen

// replaceStale does not replace sockets here: serve --socket on a path in
// use fails.
func replaceStale(path string) (bool, error) { return false, nil }

// ownerOnly runs fn (there is no umask here).
func ownerOnly(fn func() error) error { return fn() }

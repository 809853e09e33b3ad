//go:build !unix

package guest

import "time"

// lchtimes does nothing: a link's own times are not set here.
func lchtimes(host string, atime, mtime time.Time) error { return nil }

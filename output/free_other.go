//go:build !unix

package output

// freeSpace is not known here: staging is not bounded by it.
func freeSpace(string) (int64, bool) { return 0, false }

//go:build !linux

package outfile

// renameNoReplace renames oldpath to newpath unless newpath exists
// (fs.ErrExist).
func renameNoReplace(oldpath, newpath string) error { return linkRename(oldpath, newpath) }

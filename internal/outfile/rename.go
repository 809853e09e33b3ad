package outfile

import (
	"errors"
	"io/fs"
	"os"
)

// linkRename renames by hard link and unlink, which fails if newpath
// exists; where hard links are unsupported it checks, then renames (a
// window remains there).
func linkRename(oldpath, newpath string) error {
	err := os.Link(oldpath, newpath)
	if err == nil {
		return os.Remove(oldpath)
	}
	if errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, serr := os.Lstat(newpath); serr == nil {
		return fs.ErrExist
	}
	return os.Rename(oldpath, newpath)
}

// RenameNoReplace renames oldpath to newpath unless newpath exists, in
// which case it fails with an error matching fs.ErrExist: atomically with
// renameat2(RENAME_NOREPLACE) where the system has it, by link and unlink
// otherwise.
func RenameNoReplace(oldpath, newpath string) error { return renameNoReplace(oldpath, newpath) }

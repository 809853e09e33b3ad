// Package outfile is the file every output of vmaconv is written to: a
// temporary file beside the destination, renamed into place only when
// whole, so that a failed or interrupted run never leaves a file that
// looks complete.
package outfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmaconv/vmaconv/format"
)

// File is a destination file as sinks write it. A new output is
// written under a temporary name in the destination's directory and
// renamed into place by Commit, after a sync, so that a failed or
// interrupted run never leaves a file that looks complete and never
// touches an existing one before the new one is whole. The rename never
// replaces a file unless format.Dest.Overwrite is set, even one created by
// someone else meanwhile; a replaced file's permissions are kept. An
// output written in place (format.Dest.InPlace) is the destination itself.
//
// WriteAt may be called in parallel (io.WriterAt); errors name the
// destination, never the temporary file.
type File struct {
	f       *os.File
	path    string
	name    string // for messages
	tmp     string // "" in place
	mode    fs.FileMode
	keep    bool // chmod to mode: an existing file is replaced
	over    bool
	nosync  bool
	untrack func()

	mu   sync.Mutex
	done bool
	err  error
}

// tempPrefix starts the name of every temporary output file; see
// TempName.
const tempPrefix = ".vmaconv-"

// IsTempName reports whether a file name is one of vmaconv's temporary
// outputs (left behind only if the process was killed).
func IsTempName(name string) bool {
	return len(name) > len(tempPrefix) && name[:len(tempPrefix)] == tempPrefix
}

// Create opens the file a sink writes for d (which must not be a
// stream).
func Create(d format.Dest) (*File, error) {
	name := d.Name
	if name == "" {
		name = d.Path
	}
	if d.InPlace {
		f, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("writing in place needs an existing destination: %w", err)
		}
		return &File{f: f, path: d.Path, name: name, nosync: d.NoSync}, nil
	}
	o := &File{path: d.Path, name: name, over: d.Overwrite, nosync: d.NoSync}
	fi, err := os.Lstat(d.Path)
	switch {
	case err == nil && fi.IsDir():
		return nil, fmt.Errorf("%s is a directory", d.Path)
	case err == nil && fi.Mode()&fs.ModeSymlink == 0 && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s exists and is not a regular file (a device? write raw output into it in place with -n)", d.Path)
	case err == nil && !d.Overwrite:
		return nil, fmt.Errorf("%s exists; pass --overwrite to replace it", d.Path)
	case err == nil:
		if fi.Mode().IsRegular() {
			o.mode, o.keep = fi.Mode().Perm(), true
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	dir := filepath.Dir(d.Path)
	for range 100 {
		var b [6]byte
		rand.Read(b[:])
		o.tmp = filepath.Join(dir, tempPrefix+hex.EncodeToString(b[:])+".tmp")
		// 0666 before the umask, as any new file gets.
		o.f, err = os.OpenFile(o.tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("creating %s: %w", name, err)
	}
	if d.TrackTemp != nil {
		o.untrack = d.TrackTemp(o.tmp)
	}
	return o, nil
}

// Path returns the destination's name for messages.
func (o *File) Path() string { return o.name }

// File returns the open file, for operations File does not wrap
// (errors from it name the temporary file: wrap them with Err).
func (o *File) File() *os.File { return o.f }

// WriteAt implements io.WriterAt.
func (o *File) WriteAt(p []byte, off int64) (int, error) {
	n, err := writeAt(o.f, p, off)
	return n, o.Err("writing", err)
}

// Write writes at the current offset.
func (o *File) Write(p []byte) (int, error) {
	n, err := write(o.f, p)
	return n, o.Err("writing", err)
}

// The file operations an output depends on; tests make them fail (a disk
// that fills midway, a failing sync or rename).
var (
	writeAt = (*os.File).WriteAt
	write   = (*os.File).Write
	rename  = func(oldpath, newpath string, replace bool) error {
		if replace {
			return os.Rename(oldpath, newpath)
		}
		return renameNoReplace(oldpath, newpath)
	}
)

// Truncate sets the file's size.
func (o *File) Truncate(size int64) error { return o.Err("sizing", o.f.Truncate(size)) }

// Size returns the file's current size (for a block device written in
// place, the device's).
func (o *File) Size() (int64, error) {
	n, err := o.f.Seek(0, io.SeekEnd)
	return n, o.Err("sizing", err)
}

// Err returns err, if not nil, as an error about the destination: "what
// PATH: cause", without the temporary file's name.
func (o *File) Err(what string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s %s: %w", what, o.name, err)
}

// Commit syncs the file (unless the Dest said NoSync) and, for a new
// output, renames it into place.
func (o *File) Commit() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return o.err
	}
	o.done = true
	o.err = o.commit()
	if o.err != nil {
		o.remove()
	}
	return o.err
}

func (o *File) commit() error {
	if !o.nosync {
		if err := fsync(o.f); err != nil {
			o.f.Close()
			return o.Err("writing", err)
		}
	}
	if err := o.f.Close(); err != nil {
		return o.Err("writing", err)
	}
	if o.tmp == "" {
		return nil
	}
	if o.keep {
		if err := os.Chmod(o.tmp, o.mode); err != nil {
			return o.Err("writing", err)
		}
	}
	err := rename(o.tmp, o.path, o.over)
	if !o.over && errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s appeared while it was written (another run?); pass --overwrite to replace it", o.name)
	}
	if err != nil {
		return o.Err("renaming into", err)
	}
	if o.untrack != nil {
		o.untrack()
	}
	o.tmp = ""
	if !o.nosync {
		syncDir(filepath.Dir(o.path))
	}
	return nil
}

// Abort closes the file and removes a new output. It does nothing after
// a successful Commit.
func (o *File) Abort() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return nil
	}
	o.done = true
	o.f.Close()
	o.remove()
	return nil
}

func (o *File) remove() {
	if o.tmp == "" {
		return
	}
	os.Remove(o.tmp)
	if o.untrack != nil {
		o.untrack()
	}
	o.tmp = ""
}

// fsync is (*os.File).Sync; tests count the calls.
var fsync = (*os.File).Sync

// syncDir makes a rename in dir durable; failures (file systems that
// cannot sync a directory) are ignored, as the rename itself succeeded.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		fsync(d)
		d.Close()
	}
}

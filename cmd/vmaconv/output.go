package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// outputFile is a destination file written under a temporary name in the
// same directory and renamed into place only by commit, so that a failed or
// interrupted run leaves nothing that looks complete and never touches an
// existing file until the new one is whole.
type outputFile struct {
	*os.File
	path       string
	unregister func()
	done       bool
}

func createOutput(path string, overwrite bool) (*outputFile, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s exists and is not a regular file; pass -n to write raw output into it in place", path)
	case err == nil && !overwrite:
		return nil, fmt.Errorf("%s exists; pass --overwrite to replace it", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".vmaconv-*")
	if err != nil {
		return nil, err
	}
	o := &outputFile{File: f, path: path}
	tmp := f.Name()
	o.unregister = atInterrupt(func() { os.Remove(tmp) })
	return o, nil
}

// commit makes the output permanent: sync, close, rename.
func (o *outputFile) commit() error {
	if err := o.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", o.path, err)
	}
	if err := o.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", o.path, err)
	}
	if err := os.Chmod(o.Name(), 0o666&^umask()); err != nil {
		return err
	}
	if err := os.Rename(o.Name(), o.path); err != nil {
		return err
	}
	o.done = true
	o.unregister()
	return nil
}

// discard removes the output unless it was committed; safe to defer.
func (o *outputFile) discard() {
	if o.done {
		return
	}
	o.done = true
	o.Close()
	os.Remove(o.Name())
	o.unregister()
}

// Write, WriteAt and Truncate report errors under the destination's name,
// not the temporary one.
func (o *outputFile) Write(p []byte) (int, error) {
	n, err := o.File.Write(p)
	return n, o.fix(err)
}

func (o *outputFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := o.File.WriteAt(p, off)
	return n, o.fix(err)
}

func (o *outputFile) Truncate(size int64) error { return o.fix(o.File.Truncate(size)) }

func (o *outputFile) fix(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %s: %w", o.path, pe.Op, pe.Err)
	}
	return err
}

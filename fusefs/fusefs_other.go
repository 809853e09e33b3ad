//go:build !linux

// Package fusefs mounts read-only files as a FUSE file system; it is
// built for Linux only.
package fusefs

import (
	"errors"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/guest"
)

// File is one file of the mount.
type File struct {
	Name   string
	Source format.Source
	MTime  time.Time
}

// ErrUnavailable means FUSE cannot be used here.
var ErrUnavailable = errors.New("FUSE is not available")

// Mount is a mounted file system.
type Mount struct{}

// New fails: vmaconv mounts on Linux only.
func New(dir string, files []File, name string) (*Mount, error) {
	return nil, errors.Join(ErrUnavailable, errors.New("vmaconv mount works on Linux only; vmaconv serve works everywhere"))
}

// Unmount does nothing.
func (m *Mount) Unmount() error { return nil }

// Wait returns at once.
func (m *Mount) Wait() {}

// OpenFiles returns 0.
func (m *Mount) OpenFiles() int { return 0 }

// Abort does nothing.
func (m *Mount) Abort() error { return nil }

// Connection fails: vmaconv mounts on Linux only.
func Connection(dir string) (uint64, error) { return 0, ErrUnavailable }

// AbortConnection fails: vmaconv mounts on Linux only.
func AbortConnection(id uint64) error { return ErrUnavailable }

// NewTree fails: vmaconv mounts on Linux only.
func NewTree(dir string, root guest.Node, name string) (*Mount, error) {
	return New(dir, nil, name)
}

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/fusefs"
)

type mountCmd struct {
	Archive string   `arg:"" help:"An input of any format vmaconv reads (${formats}): an image is mounted as DIR/disk.raw; an archive (.vma; .vma.zst, .vma.gz and .vma.lzo are decompressed once into a cache), its disks as DIR/NAME.raw and its configs."`
	Dir     string   `arg:"" help:"An existing directory to mount on."`
	Device  []string `short:"d" placeholder:"NAME" help:"Show only this disk (repeatable; default: every disk)."`
	Files   bool     `help:"Mount the files inside the disks instead, read-only, as vmaconv ls shows them: DIR/drive-scsi0/p2/etc/fstab (partitions, LVM2, ext2/3/4, XFS, NTFS, FAT, ISO 9660)."`
	cacheOpts
}

// Run mounts an image's disk (DIR/disk.raw), or an archive's disks
// (DIR/drive-scsi0.raw, …) and configs,
// read-only until DIR is unmounted from outside (status 0), or until
// SIGINT or SIGTERM (status 130, 143). Interrupted with files open (a
// loop device on one counts), it detaches DIR and serves them until they
// are closed; a second signal ends it at once.
func (c *mountCmd) Run(e *env) error {
	fi, err := os.Stat(c.Dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", c.Dir)
	}
	if c.Files {
		if len(c.Device) > 0 {
			return usageError{errors.New("mount --files shows every disk: -d does not go with it")}
		}
		in, t, err := openTree(e, c.Archive, c.cacheOpts)
		if err != nil {
			return err
		}
		defer in.Close()
		root, err := t.Root()
		if err != nil {
			return err
		}
		m, err := fusefs.NewTree(c.Dir, root, "vmaconv:"+filepath.Base(c.Archive))
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "mounted the files of %s read-only on %s; stop with Ctrl-C or umount %s\n", printable(c.Archive), c.Dir, c.Dir)
		return c.serve(e, m)
	}
	in, exports, err := openExports(e, c.Archive, c.Device, c.cacheOpts)
	if err != nil {
		return err
	}
	defer in.Close()
	// Files are named as names.go says (what verify checks and every
	// archive writer refuses to clash), with the archive's creation time,
	// else the file's.
	var mtime time.Time
	if fi, err := os.Stat(c.Archive); err == nil {
		mtime = fi.ModTime()
	}
	if c, ok := in.Image().(format.Created); ok {
		mtime = c.Created()
	}
	var files []fusefs.File
	var named []namedFile
	for _, cf := range in.Configs() {
		name := configFileName(cf.Name)
		if name != cf.Name {
			e.note("config %s shown as %s", printable(cf.Name), name)
		}
		files = append(files, fusefs.File{Name: name, Source: configSource(cf.Data), MTime: mtime})
		named = append(named, namedFile{"config " + printable(cf.Name), name})
	}
	for _, x := range exports {
		name := mountFileName(x.Name)
		files = append(files, fusefs.File{Name: name, Source: x.Source, MTime: mtime})
		named = append(named, namedFile{"device " + printable(x.Name), name})
	}
	if cl := clashes(named); len(cl) > 0 {
		return fmt.Errorf("%s: %s and %s would both be mounted as %s", c.Archive, cl[0].first.origin, cl[0].second.origin, cl[0].first.name)
	}
	m, err := fusefs.New(c.Dir, files, "vmaconv:"+filepath.Base(c.Archive))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "mounted %s read-only on %s; stop with Ctrl-C or umount %s\n", printable(c.Archive), c.Dir, c.Dir)
	for _, f := range files {
		fmt.Fprintf(e.stdout, "  %-*s  %10s\n", 20, printable(f.Name), humanSize(f.Source.Size()))
	}
	return c.serve(e, m)
}

// serve serves a mount until it is unmounted from outside (status 0), or
// until SIGINT or SIGTERM (status 130, 143); see Run.
func (c *mountCmd) serve(e *env, m *fusefs.Mount) error {
	// A second signal aborts the mount; what it found is said here once
	// forced is closed.
	forced := make(chan struct{})
	var force sync.Once
	var forcedOpen int
	var abortErr error
	defer holdOnInterrupt(func() bool { return m.OpenFiles() > 0 }, func() {
		force.Do(func() {
			forcedOpen, abortErr = m.OpenFiles(), m.Abort()
			close(forced)
		})
	})()
	e.flushNotes()
	gone := make(chan struct{})
	go func() { m.Wait(); close(gone) }()
	select {
	case <-e.ctx.Done():
	case <-gone: // unmounted from outside
		return nil
	}
	if n := m.OpenFiles(); n > 0 {
		e.note("%s detached with %s open (a loop device on one counts): served until closed; a second Ctrl-C or SIGTERM ends it now",
			c.Dir, plural(n, "file"))
		e.flushNotes()
	}
	unmounted := make(chan error, 1)
	go func() { unmounted <- m.Unmount() }()
	select {
	case err := <-unmounted:
		if err != nil {
			return err
		}
	case <-forced:
		if abortErr != nil && !errors.Is(abortErr, os.ErrNotExist) { // no fusectl: the exit ends it
			e.note("%v; its files are cut off when vmaconv exits", abortErr)
		}
		e.note("%s: ended by force with %s open", c.Dir, plural(forcedOpen, "file"))
		e.flushNotes()
	}
	return e.ctx.Err()
}

// configSource is a config's bytes, as a format.Source.
type configSource []byte

func (b configSource) Size() int64  { return int64(len(b)) }
func (b configSource) Close() error { return nil }

func (b configSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

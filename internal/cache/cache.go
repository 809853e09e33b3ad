// Package cache keeps decompressed copies of compressed archives, so that
// they can be read at random, in a directory private to the running user.
//
// An entry is found by a key over its archive's identity (see Identity):
// device and inode, size, modification and change times, and a hash of the
// archive's first and last MiB. The entry records that identity, with the
// archive's absolute path, in a trailer after its data, and it is used only
// when the trailer is ours and names the same identity, when the entry is a
// regular file owned by the running user and writable by no one else, and
// when the directory holding it is private (see Open). Anything else at an
// entry's name (a symlink, a file planted by another user, a damaged entry)
// is never followed or served, and is replaced by a new build.
//
// Several runs, in one process or many, share a directory safely:
//   - A build holds the lock file KEY.lock while it writes KEY.RAND.tmp, and
//     renames the finished file to KEY.cache. A second run wanting the same
//     entry waits for that lock, then uses the entry, or builds its own if
//     the first build failed.
//   - A run using an entry holds a shared lock on it. Eviction and Remove
//     take an exclusive lock without waiting, so they never remove an entry
//     in use.
//   - Open removes temporary files whose build is dead (its KEY.lock is not
//     held) and stale lock files.
//
// Locks are flock(2) locks: they go with their process, whatever way it
// ends. Where there is no flock (Windows), there are no locks and no
// ownership checks: one run at a time.
//
// The last use of an entry is its modification time, set each time it is
// used (access times are not reliable: relatime, noatime). Entries least
// recently used are evicted when the entries take more than the limit.
package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultMaxLimit bounds the default limit: 10 % of the free space of the
// cache's file system, at most this.
const DefaultMaxLimit = 50 << 30

// File name suffixes in a cache directory: KEY.cache is an entry,
// KEY.RAND.tmp a build in progress (or a dead one), KEY.lock the lock held
// by the build of KEY.
const (
	entrySuffix = ".cache"
	tempSuffix  = ".tmp"
	lockSuffix  = ".lock"
)

// Options configure a Cache. Every field is optional.
type Options struct {
	// Limit is the most bytes the entries may take together. Past it, the
	// entries least recently used are evicted, except those in use.
	// Negative: the default, 10 % of the free space of the cache's file
	// system (counting the space the entries take as free), at most
	// DefaultMaxLimit.
	Limit int64
	// Note receives informational messages: entries ignored and why,
	// entries evicted, temporary files of dead builds removed.
	Note func(msg string)
	// Progress is called while an entry is built with the bytes of the
	// archive read so far and the archive's size.
	Progress func(done, total int64)
	// Waiting is called once when a run starts waiting for another run's
	// build of the entry it wants.
	Waiting func()
}

// Cache is a cache directory. Its methods may be called from several
// goroutines at once; separate Caches (in one process or many) on one
// directory work together through locks.
type Cache struct {
	dir  string
	root *os.Root
	opts Options
	uid  int // the running user; -1 where ownership is not known

	mu    sync.Mutex
	noted map[string]bool
}

// Open opens the cache directory dir, created (with its parents) for the
// owner only if it does not exist. A directory that is not private to the
// running user (owned by another user, or with any permission for group or
// others, as /var/tmp) holds the cache in a subdirectory vmaconv-UID,
// created for the owner only; Open fails if that subdirectory exists and is
// a symlink, not a directory, not the user's or not private. Open then
// removes what dead builds left. Close the Cache after its entries.
func Open(dir string, opts Options) (*Cache, error) {
	uid := currentUID()
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	d, want, err := privateDir(dir, uid)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(d)
	if err != nil {
		return nil, err
	}
	// The directory opened is the one checked.
	if fi, err := root.Stat("."); err != nil || !os.SameFile(fi, want) {
		root.Close()
		return nil, fmt.Errorf("cache directory %s changed while it was opened", d)
	}
	c := &Cache{dir: d, root: root, opts: opts, uid: uid, noted: map[string]bool{}}
	c.sweep()
	return c, nil
}

// privateDir returns the directory that holds the cache in dir, checked,
// and its file info.
func privateDir(dir string, uid int) (string, fs.FileInfo, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("creating the cache directory: %w", err)
		}
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return "", nil, fmt.Errorf("cache directory: %w", err)
	}
	if !fi.IsDir() {
		return "", nil, fmt.Errorf("cache directory %s is not a directory", dir)
	}
	if uid < 0 || owner(fi) == uid && fi.Mode().Perm()&0o077 == 0 {
		return dir, fi, nil
	}
	sub := filepath.Join(dir, fmt.Sprintf("vmaconv-%d", uid))
	if err := os.Mkdir(sub, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", nil, fmt.Errorf("creating the cache directory: %w", err)
	}
	fi, err = os.Lstat(sub)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("cache directory: %w", err)
	case !fi.IsDir():
		return "", nil, fmt.Errorf("cache directory %s is not a directory (%s): not used; pass another --cache-dir", sub, kind(fi))
	case owner(fi) != uid:
		return "", nil, fmt.Errorf("cache directory %s belongs to uid %d, not to you (uid %d): not used; pass another --cache-dir", sub, owner(fi), uid)
	case fi.Mode().Perm()&0o077 != 0:
		return "", nil, fmt.Errorf("cache directory %s is open to others (mode %#o): not used; make it 0700 or pass another --cache-dir", sub, fi.Mode().Perm())
	}
	return sub, fi, nil
}

// Dir returns the directory that holds the entries.
func (c *Cache) Dir() string { return c.dir }

// Close closes the directory. Entries must be closed first.
func (c *Cache) Close() error { return c.root.Close() }

func (c *Cache) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	seen := c.noted[msg]
	c.noted[msg] = true
	c.mu.Unlock()
	if !seen && c.opts.Note != nil {
		c.opts.Note(msg)
	}
}

// path returns the full name of a file in the cache, for messages.
func (c *Cache) path(name string) string { return filepath.Join(c.dir, name) }

// BuildFunc writes an entry's data into dst, from its start, reading the
// archive from src (which stops with the context's error when it is
// cancelled). The data ends where dst's offset is when it returns. It may
// read dst back (ReadAt) to check what it wrote.
type BuildFunc func(ctx context.Context, src io.Reader, dst *os.File) error

// Entry is an entry of the cache in use: its data, read at random. It
// holds a shared lock that keeps it from eviction until Close. ReadAt may
// be called from several goroutines at once (io.ReaderAt).
type Entry struct {
	c     *Cache
	f     *os.File
	name  string
	rec   record
	built bool
	data  *io.SectionReader
	once  sync.Once
}

// ReadAt reads the entry's data (io.ReaderAt).
func (e *Entry) ReadAt(p []byte, off int64) (int, error) { return e.data.ReadAt(p, off) }

// Size returns the size of the entry's data.
func (e *Entry) Size() int64 { return e.data.Size() }

// Path returns the entry's file name, for messages.
func (e *Entry) Path() string { return e.c.path(e.name) }

// Built reports whether this run built the entry.
func (e *Entry) Built() bool { return e.built }

// Close releases the entry, then evicts entries (this one included) while
// the cache is over its limit. Close is idempotent.
func (e *Entry) Close() error {
	var err error
	e.once.Do(func() {
		err = e.f.Close()
		e.c.Evict()
	})
	return err
}

// Discard releases the entry and removes it unless another run uses it
// (for an entry found damaged).
func (e *Entry) Discard() {
	e.once.Do(func() {
		e.f.Close()
		e.c.remove(e.name)
	})
}

// Get returns the entry of the archive open as src, named path (made
// absolute for List), building it with build when there is none that can
// be trusted. A run that finds another run building the same entry waits
// for it (calling Options.Waiting once), then uses that run's entry, or
// builds its own if that run failed. The archive must not change while it
// is read: a build during which it changed fails.
func (c *Cache) Get(ctx context.Context, src *os.File, path string, build BuildFunc) (*Entry, error) {
	id, err := Identify(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		id.Path = abs
	}
	key := id.Key()
	e, why, err := c.lookup(ctx, key, id)
	if err != nil || e != nil {
		return e, err
	}
	if why != "" {
		c.note("%s: ignored cache entry %s: %s; building it again", path, c.path(key+entrySuffix), why)
	}
	lk, err := c.lockKey(ctx, key, true)
	if err != nil {
		return nil, err
	}
	defer lk.unlock()
	// Built by another run while this one waited?
	if e, _, err := c.lookup(ctx, key, id); err != nil || e != nil {
		return e, err
	}
	return c.build(ctx, src, id, key, build)
}

// lookup opens the entry of key if it can be trusted, with a shared lock.
// It returns why an entry at that name was not used, or "" if there was
// none.
func (c *Cache) lookup(ctx context.Context, key string, id Identity) (*Entry, string, error) {
	name := key + entrySuffix
	for range 10 {
		fi, err := c.root.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", nil
		}
		if err != nil {
			return nil, err.Error(), nil
		}
		if why := c.untrusted(fi); why != "" {
			return nil, why, nil
		}
		f, err := c.root.OpenFile(name, os.O_RDONLY|openNonblock, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err.Error(), nil
		}
		st, err := f.Stat()
		if err != nil || !os.SameFile(fi, st) { // replaced since Lstat
			f.Close()
			continue
		}
		if err := lock(ctx, f, false); err != nil {
			f.Close()
			return nil, "", err
		}
		// Still at its name once locked (not evicted meanwhile)?
		if now, err := c.root.Lstat(name); err != nil || !os.SameFile(now, st) {
			f.Close()
			continue
		}
		rec, err := readRecord(f, st.Size())
		if err != nil {
			f.Close()
			return nil, "not a cache entry of vmaconv (" + err.Error() + ")", nil
		}
		if !rec.Archive.Same(id) {
			f.Close()
			return nil, "records another archive", nil
		}
		now := time.Now()
		c.root.Chtimes(name, now, now) // last use
		return &Entry{c: c, f: f, name: name, rec: rec, data: io.NewSectionReader(f, 0, rec.DataSize)}, "", nil
	}
	return nil, "kept changing", nil
}

// untrusted says why a file in the cache is not used as an entry, or "".
func (c *Cache) untrusted(fi fs.FileInfo) string {
	switch {
	case !fi.Mode().IsRegular():
		return "not a regular file (" + kind(fi) + ")"
	case c.uid < 0: // ownership and modes are not known here
	case owner(fi) != c.uid:
		return fmt.Sprintf("owned by uid %d, not by you (uid %d)", owner(fi), c.uid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Sprintf("writable by group or others (mode %#o)", fi.Mode().Perm())
	}
	return ""
}

// kind names what a non-regular file is.
func kind(fi fs.FileInfo) string {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	default:
		return "a special file"
	}
}

// build writes the entry of key, under the key's lock, and returns it in
// use.
func (c *Cache) build(ctx context.Context, src *os.File, id Identity, key string, build BuildFunc) (*Entry, error) {
	c.Evict() // room first
	var rb [6]byte
	rand.Read(rb[:])
	tmp := key + "." + hex.EncodeToString(rb[:]) + tempSuffix
	f, err := c.root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating a cache entry in %s: %w", c.dir, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			c.root.Remove(tmp)
		}
	}()
	r := &sourceReader{ctx: ctx, r: io.NewSectionReader(src, 0, id.Size), total: id.Size, progress: c.opts.Progress}
	if err := build(ctx, r, f); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("cache entry %s: %w", c.path(tmp), err)
	}
	// The archive read is the one identified.
	now, err := Identify(src)
	if err != nil || !now.Same(id) {
		return nil, fmt.Errorf("%s changed while it was decompressed", id.Path)
	}
	rec := record{Format: recordFormat, Version: recordVersion, Archive: id, DataSize: size, Built: time.Now().UTC()}
	if err := writeRecord(f, rec); err != nil {
		return nil, fmt.Errorf("writing a cache entry in %s: %w", c.dir, err)
	}
	// Durable before it is named: an entry that a crash left incomplete
	// would look complete.
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("writing a cache entry in %s: %w", c.dir, err)
	}
	// In use from the moment it has its name.
	if err := lock(ctx, f, false); err != nil {
		return nil, err
	}
	name := key + entrySuffix
	if err := c.rename(tmp, name); err != nil {
		return nil, fmt.Errorf("cache entry %s: %w", c.path(name), err)
	}
	done = true
	e := &Entry{c: c, f: f, name: name, rec: rec, built: true, data: io.NewSectionReader(f, 0, size)}
	// Earlier versions of the same archive, unless in use.
	if infos, err := c.List(); err == nil {
		for _, in := range infos {
			if in.Name != name && in.Archive.Path == id.Path {
				c.remove(in.Name)
			}
		}
	}
	if lim, _ := c.limit(); size > lim {
		c.note("the cache entry of %s (%s) is larger than the cache's limit (%s): it is removed once no run uses it", id.Path, human(size), human(lim))
	}
	c.Evict()
	return e, nil
}

// rename names a finished entry, replacing what is at the name (never
// following it): an older entry, a symlink, an empty directory.
func (c *Cache) rename(tmp, name string) error {
	err := c.root.Rename(tmp, name)
	if err != nil {
		if fi, lerr := c.root.Lstat(name); lerr == nil && fi.IsDir() {
			if c.root.Remove(name) == nil {
				err = c.root.Rename(tmp, name)
			}
		}
	}
	return err
}

// sourceReader reads the archive for a build: it stops when the context is
// cancelled and reports progress.
type sourceReader struct {
	ctx      context.Context
	r        io.Reader
	done     int64
	total    int64
	progress func(done, total int64)
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	s.done += int64(n)
	if s.progress != nil && n > 0 {
		s.progress(s.done, s.total)
	}
	return n, err
}

// keyLock is a held lock of a key's build.
type keyLock struct {
	c    *Cache
	name string
	f    *os.File
}

// lockKey takes the lock of key's build: waiting for it while another run
// holds it (wait), or reporting it busy (nil).
func (c *Cache) lockKey(ctx context.Context, key string, wait bool) (*keyLock, error) {
	name := key + lockSuffix
	waited := false
	for {
		if fi, err := c.root.Lstat(name); err == nil && !fi.Mode().IsRegular() {
			c.root.Remove(name) // never followed
		}
		f, err := c.root.OpenFile(name, os.O_RDWR|os.O_CREATE|openNonblock, 0o600)
		if err != nil {
			return nil, fmt.Errorf("cache lock %s: %w", c.path(name), err)
		}
		ok, err := tryLock(f, true)
		for tries := 0; err == nil && !ok && wait; tries++ {
			// Said once the lock has been held a while: a sweep or a
			// lookup holds it only for a moment.
			if tries == 2 && !waited {
				waited = true
				if c.opts.Waiting != nil {
					c.opts.Waiting()
				}
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			case <-time.After(lockPoll):
			}
			ok, err = tryLock(f, true)
		}
		if err != nil || !ok {
			f.Close()
			if err != nil {
				err = fmt.Errorf("cache lock %s: %w", c.path(name), err)
			}
			return nil, err
		}
		// The holder before removes the file as it unlocks: the lock
		// counts only while the file still has its name.
		st, err1 := f.Stat()
		fi, err2 := c.root.Lstat(name)
		if err1 == nil && err2 == nil && os.SameFile(st, fi) {
			return &keyLock{c: c, name: name, f: f}, nil
		}
		f.Close()
	}
}

// unlock removes the lock file, then releases it.
func (l *keyLock) unlock() {
	l.c.root.Remove(l.name)
	l.f.Close()
}

// lockPoll is how often a lock held by another run is tried again.
const lockPoll = 50 * time.Millisecond

// lock takes a lock on f, waiting (until ctx is done) while another run
// holds a conflicting one.
func lock(ctx context.Context, f *os.File, exclusive bool) error {
	for {
		ok, err := tryLock(f, exclusive)
		if err != nil {
			return fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

// sweep removes the temporary files of dead builds (their key's lock is
// free), stale lock files, and the temporary files that vmaconv versions
// before these locks left, once they are an hour old.
func (c *Cache) sweep() {
	names, err := c.names()
	if err != nil || !haveLocks {
		return
	}
	temps := map[string][]string{}
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, tempSuffix) && isKey(tempKey(n)):
			temps[tempKey(n)] = append(temps[tempKey(n)], n)
		case strings.HasSuffix(n, lockSuffix) && isKey(strings.TrimSuffix(n, lockSuffix)):
			if k := strings.TrimSuffix(n, lockSuffix); temps[k] == nil {
				temps[k] = []string{} // a stale lock file, maybe
			}
		case strings.HasPrefix(n, legacyTempPrefix) && strings.HasSuffix(n, tempSuffix):
			if fi, err := c.root.Lstat(n); err == nil && time.Since(fi.ModTime()) > time.Hour {
				c.root.Remove(n)
			}
		}
	}
	for k, ts := range temps {
		lk, err := c.lockKey(context.Background(), k, false)
		if err != nil || lk == nil {
			continue // a live build
		}
		for _, t := range ts {
			if fi, err := c.root.Lstat(t); err == nil {
				c.root.Remove(t)
				c.note("removed %s (%s), left by a build that did not finish", c.path(t), human(fi.Size()))
			}
		}
		lk.unlock()
	}
}

// tempKey returns the key of a temporary file's name, KEY.RAND.tmp.
func tempKey(name string) string {
	k, _, _ := strings.Cut(name, ".")
	return k
}

// names returns the names in the cache directory.
func (c *Cache) names() ([]string, error) {
	d, err := c.root.Open(".")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// human formats a size for notes: "389.2 MiB".
func human(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < 5 {
		v /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[u])
}

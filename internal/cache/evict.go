package cache

import (
	"errors"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Info describes an entry, for listing and eviction.
type Info struct {
	Name    string    // file name in the cache directory
	Size    int64     // bytes: the file's size
	LastUse time.Time // when a run last used it
	InUse   bool      // held by a run now
	// Archive is the identity of the archive it holds; zero for files
	// that are not valid entries.
	Archive Identity
	// Legacy is set for entries of vmaconv versions that recorded no
	// archive (NAMEHASH-KEYHASH.vma).
	Legacy bool
}

// legacyEntry matches the names of entries of vmaconv versions before
// records, and legacyTempPrefix their temporary files.
var legacyEntry = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{16}\.vma$`)

const legacyTempPrefix = ".vmaconv-"

// isEntryName reports whether name is an entry's (this version's or a
// legacy one).
func isEntryName(name string) bool {
	return strings.HasSuffix(name, entrySuffix) && isKey(strings.TrimSuffix(name, entrySuffix)) || legacyEntry.MatchString(name)
}

// List returns the entries, most recently used first. Files at entry
// names that are not valid entries are listed with a zero Archive.
func (c *Cache) List() ([]Info, error) {
	names, err := c.names()
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, n := range names {
		if !isEntryName(n) {
			continue
		}
		fi, err := c.root.Lstat(n)
		if err != nil {
			continue
		}
		in := Info{Name: n, Size: fi.Size(), LastUse: fi.ModTime(), Legacy: legacyEntry.MatchString(n)}
		if fi.Mode().IsRegular() {
			if f, err := c.root.OpenFile(n, os.O_RDONLY|openNonblock, 0); err == nil {
				if st, err := f.Stat(); err == nil && os.SameFile(fi, st) {
					if !in.Legacy && c.untrusted(st) == "" {
						if rec, err := readRecord(f, st.Size()); err == nil {
							in.Archive = rec.Archive
						}
					}
					ok, err := tryLock(f, true)
					in.InUse = err == nil && !ok
				}
				f.Close() // and its lock
			}
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := b.LastUse.Compare(a.LastUse); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// Limit returns the limit in force (see Options.Limit) and the bytes the
// entries take.
func (c *Cache) Limit() (limit, total int64) { return c.limit() }

func (c *Cache) limit() (limit, total int64) {
	infos, _ := c.List()
	return c.limitFor(infos)
}

// limitFor returns the limit in force for these entries and their size.
func (c *Cache) limitFor(infos []Info) (limit, total int64) {
	for _, in := range infos {
		total += in.Size
	}
	if c.opts.Limit >= 0 {
		return c.opts.Limit, total
	}
	free, ok := freeSpace(c.dir)
	if !ok {
		return DefaultMaxLimit, total
	}
	return min(DefaultMaxLimit, (free+total)/10), total
}

// Evict removes entries, least recently used first, while the entries
// take more than the limit, skipping those in use.
func (c *Cache) Evict() {
	infos, err := c.List()
	if err != nil {
		return
	}
	limit, total := c.limitFor(infos)
	for _, in := range slices.Backward(infos) {
		if total <= limit {
			break
		}
		if in.InUse {
			continue
		}
		if removed, _ := c.remove(in.Name); removed {
			total -= in.Size
			what := "a file that was not a valid entry"
			if in.Archive.Path != "" {
				what = "the entry of " + in.Archive.Path
			} else if in.Legacy {
				what = "an entry of an earlier vmaconv"
			}
			c.note("cache over its limit (%s): removed %s (%s, last used %s)", human(limit), what, human(in.Size), in.LastUse.Format(time.DateTime))
		}
	}
}

// Remove removes the entries for which match is true, except those in
// use, and returns those it removed and those it kept.
func (c *Cache) Remove(match func(Info) bool) (removed, busy []Info, err error) {
	infos, err := c.List()
	if err != nil {
		return nil, nil, err
	}
	for _, in := range infos {
		if !match(in) {
			continue
		}
		ok, err := c.remove(in.Name)
		switch {
		case err != nil:
			return removed, busy, err
		case ok:
			removed = append(removed, in)
		default:
			busy = append(busy, in)
		}
	}
	return removed, busy, nil
}

// remove removes the file at an entry's name unless a run uses it (holds
// a lock on it). A symlink or another file that is not regular is removed
// itself, never followed.
func (c *Cache) remove(name string) (bool, error) {
	fi, err := c.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		err := c.root.Remove(name)
		return err == nil, err
	}
	f, err := c.root.OpenFile(name, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if ok, err := tryLock(f, true); err != nil || !ok {
		return false, err
	}
	// The file locked is the one at the name (not replaced meanwhile).
	st, err1 := f.Stat()
	now, err2 := c.root.Lstat(name)
	if err1 != nil || err2 != nil || !os.SameFile(st, now) {
		return false, nil
	}
	if err := c.root.Remove(name); err != nil {
		return false, err
	}
	return true, nil
}

package cache

import (
	"errors"
	"os"
	"path/filepath"
	"time"
)

// Listing is a cache's entries as `vmaconv cache list --output json`
// shows them.
type Listing struct {
	Dir     string         `json:"dir"`
	Size    int64          `json:"size"`
	Limit   int64          `json:"default-limit"`
	Entries []ListingEntry `json:"entries"`
}

// ListingEntry is one entry of a Listing: an Info.
type ListingEntry struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	LastUse     string `json:"last-use"` // RFC 3339
	InUse       bool   `json:"in-use"`
	Archive     string `json:"archive,omitempty"`
	ArchiveSize int64  `json:"archive-size,omitempty"`
	Legacy      bool   `json:"legacy,omitempty"`
}

// NewListing returns the listing of the entries infos (List) of the cache
// in dir, which holds size bytes and is limited by default to limit
// (Limit).
func NewListing(dir string, infos []Info, size, limit int64) Listing {
	l := Listing{Dir: dir, Size: size, Limit: limit, Entries: []ListingEntry{}}
	for _, in := range infos {
		l.Entries = append(l.Entries, ListingEntry{Name: in.Name, Size: in.Size, LastUse: in.LastUse.Format(time.RFC3339),
			InUse: in.InUse, Archive: in.Archive.Path, ArchiveSize: in.Archive.Size, Legacy: in.Legacy})
	}
	return l
}

// Selector selects the entries of archives named by the user, for
// Remove: an entry is an archive's if it recorded the archive's absolute
// path, or, where the archive still exists, if it holds the archive as it
// is now (its Identity's key).
type Selector struct {
	wants []*want
}

type want struct {
	name, abs, key string
	found          bool
}

// SelectArchives returns the Selector of the archives at paths; with
// none, it selects every entry.
func SelectArchives(paths []string) (*Selector, error) {
	s := &Selector{}
	for _, a := range paths {
		w := &want{name: a}
		var err error
		if w.abs, err = filepath.Abs(a); err != nil {
			return nil, err
		}
		if f, err := os.Open(a); err == nil {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				if id, err := Identify(f); err == nil {
					w.key = id.Key()
				}
			}
			f.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		s.wants = append(s.wants, w)
	}
	return s, nil
}

// Match reports whether in is an entry of one of the archives, and
// remembers which archives had one.
func (s *Selector) Match(in Info) bool {
	if len(s.wants) == 0 {
		return true
	}
	match := false
	for _, w := range s.wants {
		if in.Archive.Path != "" && in.Archive.Path == w.abs || w.key != "" && in.Name == w.key+entrySuffix {
			w.found, match = true, true
		}
	}
	return match
}

// Unmatched returns the archives, as they were named, that no entry
// matched.
func (s *Selector) Unmatched() []string {
	var out []string
	for _, w := range s.wants {
		if !w.found {
			out = append(out, w.name)
		}
	}
	return out
}

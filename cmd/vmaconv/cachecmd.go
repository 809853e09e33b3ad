package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vmaconv/vmaconv/internal/cache"
)

// cacheCmd manages the cache of decompressed archives that serve and
// mount use.
type cacheCmd struct {
	List  cacheListCmd  `cmd:"" default:"withargs" help:"List the cache's entries: size, last use, archive (the default)."`
	Clear cacheClearCmd `cmd:"" help:"Remove the cache's entries (all, or those of the archives named), except those in use by a run."`
}

type cacheListCmd struct {
	Output string `help:"Output format: human or json." enum:"human,json" default:"human"`
	cacheDirOpt
}

// cacheListJSON is `cache list --output json`.
type cacheListJSON struct {
	Dir     string           `json:"dir"`
	Size    int64            `json:"size"`
	Limit   int64            `json:"default-limit"`
	Entries []cacheEntryJSON `json:"entries"`
}

type cacheEntryJSON struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	LastUse     string `json:"last-use"`
	InUse       bool   `json:"in-use"`
	Archive     string `json:"archive,omitempty"`
	ArchiveSize int64  `json:"archive-size,omitempty"`
	Legacy      bool   `json:"legacy,omitempty"`
}

func (c *cacheListCmd) Run(e *env) error {
	ca, err := c.open(e, cache.Options{Limit: -1})
	if err != nil {
		return err
	}
	defer ca.Close()
	infos, err := ca.List()
	if err != nil {
		return fmt.Errorf("cache %s: %w", ca.Dir(), err)
	}
	limit, total := ca.Limit()
	if c.Output == "json" {
		out := cacheListJSON{Dir: ca.Dir(), Size: total, Limit: limit, Entries: []cacheEntryJSON{}}
		for _, in := range infos {
			out.Entries = append(out.Entries, cacheEntryJSON{Name: in.Name, Size: in.Size, LastUse: in.LastUse.Format(time.RFC3339),
				InUse: in.InUse, Archive: in.Archive.Path, ArchiveSize: in.Archive.Size, Legacy: in.Legacy})
		}
		b, err := json.MarshalIndent(out, "", "    ")
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(e.stdout, "cache %s: %s, %s (limit by default %s)\n", printable(ca.Dir()), entries(len(infos)), humanSize(total), humanSize(limit))
	if len(infos) == 0 {
		return nil
	}
	fmt.Fprintf(e.stdout, "%10s  %-16s  %s\n", "SIZE", "LAST USE", "ARCHIVE")
	for _, in := range infos {
		what := printable(in.Archive.Path)
		switch {
		case in.Legacy:
			what = "(made by an earlier vmaconv: archive not recorded)"
		case what == "":
			what = "(not a valid entry: " + printable(in.Name) + ")"
		}
		if in.InUse {
			what += " (in use)"
		}
		fmt.Fprintf(e.stdout, "%10s  %-16s  %s\n", humanSize(in.Size), in.LastUse.Format("2006-01-02 15:04"), what)
	}
	return nil
}

type cacheClearCmd struct {
	Archives []string `arg:"" optional:"" name:"archive" help:"Remove only the entries of these archives (by path, or by identity where the archive still exists)."`
	cacheDirOpt
}

func (c *cacheClearCmd) Run(e *env) error {
	ca, err := c.open(e, cache.Options{Limit: -1})
	if err != nil {
		return err
	}
	defer ca.Close()
	type want struct {
		name, abs, key string
		found          bool
	}
	var wants []*want
	for _, a := range c.Archives {
		w := &want{name: a}
		if w.abs, err = filepath.Abs(a); err != nil {
			return err
		}
		if f, err := os.Open(a); err == nil {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				if id, err := cache.Identify(f); err == nil {
					w.key = id.Key()
				}
			}
			f.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		wants = append(wants, w)
	}
	removed, busy, err := ca.Remove(func(in cache.Info) bool {
		if len(wants) == 0 {
			return true
		}
		match := false
		for _, w := range wants {
			if in.Archive.Path != "" && in.Archive.Path == w.abs || w.key != "" && in.Name == w.key+".cache" {
				w.found, match = true, true
			}
		}
		return match
	})
	var freed int64
	for _, in := range removed {
		freed += in.Size
	}
	for _, in := range busy {
		e.note("kept the entry of %s (%s): in use by a run", in.Archive.Path, humanSize(in.Size))
	}
	for _, w := range wants {
		if !w.found {
			e.note("%s: no cache entry", w.name)
		}
	}
	fmt.Fprintf(e.stdout, "removed %s, %s, from %s\n", entries(len(removed)), humanSize(freed), printable(ca.Dir()))
	if err != nil {
		return fmt.Errorf("cache %s: %w", ca.Dir(), err)
	}
	return nil
}

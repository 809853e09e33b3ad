package main

import (
	"encoding/json"
	"fmt"

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
		b, err := json.MarshalIndent(cache.NewListing(ca.Dir(), infos, total, limit), "", "    ")
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
	sel, err := cache.SelectArchives(c.Archives)
	if err != nil {
		return err
	}
	removed, busy, err := ca.Remove(sel.Match)
	var freed int64
	for _, in := range removed {
		freed += in.Size
	}
	for _, in := range busy {
		e.note("kept the entry of %s (%s): in use by a run", in.Archive.Path, humanSize(in.Size))
	}
	for _, a := range sel.Unmatched() {
		e.note("%s: no cache entry", a)
	}
	fmt.Fprintf(e.stdout, "removed %s, %s, from %s\n", entries(len(removed)), humanSize(freed), printable(ca.Dir()))
	if err != nil {
		return fmt.Errorf("cache %s: %w", ca.Dir(), err)
	}
	return nil
}

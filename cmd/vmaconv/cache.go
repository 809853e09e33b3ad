package main

import (
	"fmt"

	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/cache"
)

// cacheDirOpt is the option that places the cache.
type cacheDirOpt struct {
	CacheDir string `name:"cache-dir" placeholder:"DIR" help:"The cache of compressed archives decompressed for reading at random (default: $XDG_CACHE_HOME/vmaconv, else ~/.cache/vmaconv). A directory that is not yours alone (/var/tmp) holds it in DIR/vmaconv-UID, made for you only (0700)."`
}

// cacheOpts are the options of commands that read a compressed archive at
// random.
type cacheOpts struct {
	cacheDirOpt
	CacheSize *byteSize `name:"cache-size" placeholder:"SIZE" help:"Most the cache may hold (K, M, G, T suffixes; default: 10% of its file system's free space, at most 50G). Past it, the entries least recently used are removed, except those in use by a run."`
	Progress  bool      `short:"p" help:"Show the progress of decompressing into the cache on stderr (shown anyway on a terminal)."`
}

// open opens the cache directory.
func (co cacheDirOpt) open(e *env, o cache.Options) (*cache.Cache, error) {
	if o.Note == nil {
		o.Note = func(msg string) { e.note("%s", msg) }
	}
	return input.OpenCache(co.CacheDir, o)
}

// inputOptions are the cache options of input.Open for reading the
// archive at path at random: decompressed once into the cache (see
// internal/cache) with its progress on stderr (-p, or a terminal). done
// ends the progress once Open has returned err.
func (co cacheOpts) inputOptions(e *env, path string) (o input.CacheOptions, done func(err error)) {
	o.Dir = co.CacheDir
	if co.CacheSize != nil {
		limit := int64(*co.CacheSize)
		o.Limit = &limit
	}
	show := co.Progress || e.stderrTTY
	var p *meter // from the first bytes decompressed: only a build shows it
	o.Progress = func(done, total int64) {
		if p == nil {
			p = newProgress(e, show, "decompressing "+printable(path)+" into the cache", total)
		}
		p.update(done)
	}
	o.Waiting = func() {
		if show {
			p.abort()
			fmt.Fprintf(e.stderr, "vmaconv: %s: waiting for another run's decompression into the cache\n", printable(path))
		} else {
			e.note("%s: waited for another run's decompression into the cache", path)
		}
	}
	return o, func(err error) {
		if err != nil {
			p.abort()
			return
		}
		p.finish()
	}
}

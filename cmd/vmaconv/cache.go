package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
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
	d := co.CacheDir
	if d == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no cache directory (%v): pass --cache-dir", err)
		}
		d = filepath.Join(base, "vmaconv")
	}
	if o.Note == nil {
		o.Note = func(msg string) { e.note("%s", msg) }
	}
	return cache.Open(d, o)
}

// openCached opens a compressed archive through the cache: the archive
// decompressed into a file once — a VMA archive holds only what is stored,
// so this is about the data, never the disk size — and opened through its
// index like any archive file. An entry is built whole, checked (the
// compression's checksums, then every extent header as vma.Open checks
// them), then named; it is used again while the archive has the same
// identity (device, inode, size, times, first and last MiB), as
// internal/cache describes.
func openCached(e *env, path string, _ os.FileInfo, co cacheOpts) (*randomArchive, func(), error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return nil, nil, err
	}
	limit := int64(-1)
	if co.CacheSize != nil {
		limit = int64(*co.CacheSize)
	}
	show := co.Progress || e.stderrTTY
	p := newProgress(e, show, "decompressing "+printable(path)+" into the cache", fi.Size())
	o := cache.Options{Limit: limit, Progress: func(done, _ int64) { p.update(done) }}
	o.Waiting = func() {
		if show {
			p.abort()
			fmt.Fprintf(e.stderr, "vmaconv: %s: waiting for another run's decompression into the cache\n", printable(path))
		} else {
			e.note("%s: waited for another run's decompression into the cache", path)
		}
	}
	c, err := co.open(e, o)
	if err != nil {
		return nil, nil, err
	}
	ent, err := c.Get(e.ctx, src, path, func(ctx context.Context, r io.Reader, dst *os.File) error {
		return decompressInto(e, path, r, dst)
	})
	if err != nil {
		p.abort()
		c.Close()
		return nil, nil, err
	}
	if ent.Built() {
		p.finish()
		e.note("%s: decompressed once into %s, reused while the archive is unchanged", path, ent.Path())
	}
	ar, err := vma.Open(ent, ent.Size())
	if err != nil {
		ent.Discard() // damaged since: built again next time
		c.Close()
		return nil, nil, fmt.Errorf("%s: cache %s: %w", path, ent.Path(), err)
	}
	ra := &randomArchive{hdr: ar.Header()}
	for _, d := range ar.Devices() {
		ra.devs = append(ra.devs, d)
	}
	return ra, func() { ent.Close(); c.Close() }, nil
}

// decompressInto writes the archive that r holds compressed into dst and
// checks it as an archive (every extent header) before it is kept.
func decompressInto(e *env, path string, r io.Reader, dst *os.File) error {
	dr, comp, err := compress.NewReader(r, compress.ReaderOptions{MaxWindow: e.zstdMemory << 20})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer dr.Close()
	n, err := io.CopyBuffer(dst, dr, make([]byte, 1<<20))
	if err != nil {
		if strings.Contains(err.Error(), dst.Name()) {
			return fmt.Errorf("writing the cache of %s: %w", path, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := vma.Open(io.NewSectionReader(dst, 0, n), n); err != nil {
		return fmt.Errorf("%s: %s-compressed archive: %w", path, comp, err)
	}
	return nil
}

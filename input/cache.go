package input

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/cache"
)

// CacheOptions place and bound the cache that compressed archives are
// decompressed into, once, to be read at random (Options.RandomAccess).
type CacheOptions struct {
	// Dir is the cache's directory (default: see OpenCache).
	Dir string
	// Limit, if set, is the most bytes the cache may hold (default: 10%
	// of its file system's free space, at most cache.DefaultMaxLimit).
	Limit *int64
	// Progress, if set, is called while an archive is decompressed into
	// the cache with its (compressed) bytes read so far and its size.
	Progress func(done, total int64)
	// Waiting, if set, is called once when Open starts waiting for
	// another run's decompression of the same archive.
	Waiting func()
}

// OpenCache opens the decompression cache in dir, or, if dir is "", in
// $XDG_CACHE_HOME/vmaconv, else ~/.cache/vmaconv (see cache.Open).
func OpenCache(dir string, o cache.Options) (*cache.Cache, error) {
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no cache directory (%v): pass --cache-dir", err)
		}
		dir = filepath.Join(base, "vmaconv")
	}
	return cache.Open(dir, o)
}

// openDecompressed opens the compressed archive file f (of fm) for reading
// at random: a zstd file in the seekable format as it is, anything else
// through the cache.
func (op *opener) openDecompressed(fm format.Format, f *os.File, comp string, size int64) (*Input, error) {
	path := op.ref.Path
	if fm.OpenAt == nil {
		f.Close()
		return nil, fmt.Errorf("%s: a compressed %s cannot be read at random", path, fm.Name)
	}
	if comp == compress.Zstd {
		sk, err := compress.OpenSeekable(f, size)
		switch {
		case err == nil:
			img, err := fm.OpenAt(sk, sk.Size(), op.openOptions())
			if err != nil {
				sk.Close()
				f.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return op.newInput(fm, img, comp, size, func() { img.Close() }, func() { sk.Close() }, func() { f.Close() }), nil
		case !errors.Is(err, compress.ErrNotSeekable):
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		// Without a seek table: through the restart points of its
		// sidecar index, if it has one.
		if x, closeIx := op.localSidecar(f, path, size); x != nil && x.Restarts != nil {
			in, err := op.openRestarts(fm, f, size, x, closeIx, func() { f.Close() })
			if err != nil {
				closeIx()
				f.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return in, nil
		} else {
			closeIx()
		}
	}
	defer f.Close()
	return op.openCached(fm, f, comp, size)
}

// openCached opens a compressed archive through the cache: the archive
// decompressed into a file once — an archive holds only what is stored,
// so this is about the data, never the disk size — and opened like any
// archive file. An entry is built whole, checked (the compression's
// checksums, then the archive as fm opens it), then named; it is used
// again while the archive has the same identity (device, inode, size,
// times, first and last MiB), as internal/cache describes.
func (op *opener) openCached(fm format.Format, src *os.File, comp string, size int64) (*Input, error) {
	path := op.ref.Path
	co := op.o.Cache
	o := cache.Options{Limit: -1, Progress: co.Progress, Waiting: co.Waiting, Note: op.o.Note}
	if co.Limit != nil {
		o.Limit = *co.Limit
	}
	c, err := OpenCache(co.Dir, o)
	if err != nil {
		return nil, err
	}
	ent, err := c.Get(op.ctx, src, path, func(ctx context.Context, r io.Reader, dst *os.File) error {
		return op.decompressInto(fm, r, dst)
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	if ent.Built() {
		op.note("%s: decompressed once into %s, reused while the archive is unchanged", path, ent.Path())
	}
	img, err := fm.OpenAt(ent, ent.Size(), op.openOptions())
	if err != nil {
		ent.Discard() // damaged since: built again next time
		c.Close()
		return nil, fmt.Errorf("%s: cache %s: %w", path, ent.Path(), err)
	}
	return op.newInput(fm, img, comp, size, func() { img.Close() }, func() { ent.Close() }, func() { c.Close() }), nil
}

// decompressInto writes the archive that r holds compressed into dst and
// checks it as fm opens it (an archive: every extent header) before it is
// kept.
func (op *opener) decompressInto(fm format.Format, r io.Reader, dst *os.File) error {
	path := op.ref.Path
	dr, comp, err := compress.NewReader(r, compress.ReaderOptions{MaxWindow: op.o.MaxWindow})
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
	img, err := fm.OpenAt(io.NewSectionReader(dst, 0, n), n, op.openOptions())
	if err != nil {
		return fmt.Errorf("%s: %s-compressed archive: %w", path, comp, err)
	}
	return img.Close()
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
)

// cacheOpts are the options of commands that read a compressed archive at
// random.
type cacheOpts struct {
	CacheDir string `name:"cache-dir" placeholder:"DIR" help:"Where a compressed archive is kept decompressed for reading at random (default: $XDG_CACHE_HOME/vmaconv, else ~/.cache/vmaconv). It holds what the archive stores (about the data, never the disk size) and is reused while the archive is unchanged."`
}

// dir returns the cache directory, created for the owner only.
func (co cacheOpts) dir() (string, error) {
	d := co.CacheDir
	if d == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache directory (%v): pass --cache-dir", err)
		}
		d = filepath.Join(base, "vmaconv")
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	return d, nil
}

// openCached opens a compressed archive through its cache: the archive
// decompressed — a VMA archive holds only what is stored, so this is about
// the data, never the disk size — opened through its index like any
// archive file. The cache is built once, checked whole (the compression's
// checksums, then every extent header as vma.Open checks them), written to
// a temporary file and renamed into place only when complete; it is found
// again while the archive keeps its path, size, modification time and
// inode, and replaces the caches of earlier versions of the same path.
func openCached(e *env, path string, fi os.FileInfo, co cacheOpts) (*randomArchive, func(), error) {
	dir, err := co.dir()
	if err != nil {
		return nil, nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	ph := sha256.Sum256([]byte(abs))
	stem := hex.EncodeToString(ph[:8])
	ino, dev := fileID(fi)
	fp := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00%d\x00%d", abs, fi.Size(), fi.ModTime().UnixNano(), ino, dev))
	cachePath := filepath.Join(dir, stem+"-"+hex.EncodeToString(fp[:8])+".vma")
	if _, err := os.Stat(cachePath); err != nil {
		if err := buildCache(e, path, cachePath); err != nil {
			return nil, nil, err
		}
		// Earlier versions of the same archive.
		old, _ := filepath.Glob(filepath.Join(dir, stem+"-*.vma"))
		for _, o := range old {
			if o != cachePath {
				os.Remove(o)
			}
		}
		e.note("%s: decompressed once into %s, reused while the archive is unchanged", path, cachePath)
	}
	f, err := os.Open(cachePath)
	if err != nil {
		return nil, nil, err
	}
	cfi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	ar, err := vma.Open(f, cfi.Size())
	if err != nil {
		f.Close()
		os.Remove(cachePath) // damaged since: built again next time
		return nil, nil, fmt.Errorf("%s: cache %s: %w", path, cachePath, err)
	}
	ra := &randomArchive{hdr: ar.Header()}
	for _, d := range ar.Devices() {
		ra.devs = append(ra.devs, d)
	}
	return ra, func() { f.Close() }, nil
}

// buildCache decompresses the archive at path into cachePath.
func buildCache(e *env, path, cachePath string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dr, comp, err := compress.NewReader(src, compress.ReaderOptions{MaxWindow: e.zstdMemory << 20})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer dr.Close()
	out, err := format.CreateOutput(format.Dest{Path: cachePath, Name: cachePath, NoSync: true, TrackTemp: trackTemp})
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := io.CopyBuffer(out, ctxReader{e, dr}, make([]byte, 1<<20)); err != nil {
		if strings.Contains(err.Error(), cachePath) {
			return err
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	// Checked as an archive (every extent header) before it is kept.
	size, err := out.Size()
	if err != nil {
		return err
	}
	if _, err := vma.Open(out.File(), size); err != nil {
		return fmt.Errorf("%s: %s-compressed archive: %w", path, comp, err)
	}
	return out.Commit()
}

// ctxReader stops a long copy when the command is interrupted.
type ctxReader struct {
	e *env
	r io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.e.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

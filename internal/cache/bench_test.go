package cache

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkIdentify: the identity of an archive, which every use of the
// cache computes: a stat and the sha256 of its first and last MiB (the
// bytes counted), read from the page cache.
func BenchmarkIdentify(b *testing.B) {
	p := filepath.Join(b.TempDir(), "a.vma.zst")
	if err := os.WriteFile(p, content(1, 8<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(2 * edge)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Identify(f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetWarm: finding an entry that exists (identity, checks, the
// record, the lock), for an archive of 8 MiB (the archive's bytes
// counted).
func BenchmarkGetWarm(b *testing.B) {
	tmp := b.TempDir()
	p := filepath.Join(tmp, "a.vma.zst")
	if err := os.WriteFile(p, content(1, 8<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	c, err := Open(filepath.Join(tmp, "cache"), Options{Limit: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(8 << 20)
	for b.Loop() {
		e, err := c.Get(context.Background(), f, p, copyBuild(nil, 0))
		if err != nil {
			b.Fatal(err)
		}
		e.Close()
	}
}

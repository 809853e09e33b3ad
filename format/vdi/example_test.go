package vdi_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vdi"
)

// Write a dynamic VDI image of 1 GiB holding a few bytes, then read them
// back: the file holds the header, the block map (4 bytes a block) and
// the one block of 1 MiB that is not all zeros.
func ExampleNewWriter() {
	dir, err := os.MkdirTemp("", "vdi-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.vdi")
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	w, err := vdi.NewWriter(f, 1<<30, vdi.WriterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.ZeroAt(0, 512<<20); err != nil {
		log.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("hello, vdi"), 512<<20); err != nil {
		log.Fatal(err)
	}
	if err := w.ZeroAt(512<<20+10, 512<<20-10); err != nil { // the rest is zero
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	fi, _ := f.Stat()
	f.Close()
	fmt.Println("file size:", fi.Size())

	f, err = os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	img, err := vdi.Open(f, format.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, 10)
	img.ReadAt(buf, 512<<20)
	r, _ := img.Region(0, img.Size())
	fmt.Printf("%d bytes, %q; the first %d MiB are zero\n", img.Size(), buf, r.Length>>20)
	// Output:
	// file size: 1053184
	// 1073741824 bytes, "hello, vdi"; the first 512 MiB are zero
}

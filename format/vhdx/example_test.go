package vhdx_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vhdx"
)

// Write a dynamic VHDX image of 1 GiB holding one piece of data, then
// read it back: the file holds the header section, the log, the BAT, the
// metadata and the one 8 MiB block the data is in (a hole but for the
// data).
func ExampleNewWriter() {
	dir, err := os.MkdirTemp("", "vhdx-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.vhdx")
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	w, err := vhdx.NewWriter(f, 1<<30, vhdx.WriterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.ZeroAt(0, 512<<20); err != nil {
		log.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("hello, vhdx"), 512<<20); err != nil {
		log.Fatal(err)
	}
	if err := w.ZeroAt(512<<20+11, 512<<20-11); err != nil { // the rest is zero
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
	img, err := vhdx.Open(f, format.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, 11)
	img.ReadAt(buf, 512<<20)
	r, _ := img.Region(0, img.Size())
	fmt.Printf("%d bytes, %q; the first %d MiB zero\n", img.Size(), buf, r.Length>>20)
	// Output:
	// file size: 16777216
	// 1073741824 bytes, "hello, vhdx"; the first 512 MiB zero
}

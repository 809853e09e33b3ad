package vpc_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vpc"
)

// Write a dynamic VHD of 1 GiB holding a few bytes, then read it back:
// its size is rounded up to a CHS geometry, as qemu-img rounds it, and
// only the metadata and the one block written take space.
func ExampleNewWriter() {
	dir, err := os.MkdirTemp("", "vpc-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.vhd")
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	w, err := vpc.NewWriter(f, 1<<30, vpc.WriterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("hello, VHD"), 512<<20); err != nil {
		log.Fatal(err)
	}
	if err := w.ZeroAt(0, 512<<20); err != nil { // the rest is zero
		log.Fatal(err)
	}
	if err := w.ZeroAt(512<<20+10, 512<<20-10); err != nil {
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
	img, err := vpc.Open(f, format.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, 10)
	img.ReadAt(buf, 512<<20)
	fmt.Printf("%d bytes in blocks of %d, %q\n", img.Size(), img.BlockSize(), buf)
	// Output:
	// file size: 2102272
	// 1073995776 bytes in blocks of 2097152, "hello, VHD"
}

package qcow2_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/qcow2"
)

// Write a qcow2 image of 1 GiB holding one non-zero cluster, then read it
// back: only the header, that cluster and the metadata take space.
func ExampleNewWriter() {
	dir, err := os.MkdirTemp("", "qcow2-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	w, err := qcow2.NewWriter(f, 1<<30, qcow2.WriterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("hello, qcow2"), 512<<20); err != nil {
		log.Fatal(err)
	}
	if err := w.ZeroAt(0, 512<<20); err != nil { // the rest is zero
		log.Fatal(err)
	}
	if err := w.ZeroAt(512<<20+12, 512<<20-12); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	fi, _ := f.Stat()
	f.Close()
	fmt.Println("file size:", fi.Size())

	img, err := qcow2.Open(mustOpen(path), format.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, 12)
	img.ReadAt(buf, 512<<20)
	fmt.Printf("%d bytes, %q\n", img.Size(), buf)
	// Output:
	// file size: 393216
	// 1073741824 bytes, "hello, qcow2"
}

func mustOpen(path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	return f
}

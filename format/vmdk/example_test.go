package vmdk_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
)

// Write a streamOptimized VMDK of 1 GiB holding one piece of data to a
// stream (here a buffer; a tar member of an OVA, a pipe), then read it
// back from memory: only the header, one compressed grain and the
// metadata take space.
func Example() {
	opts, err := format.CheckOptions(vmdk.Format, []format.Setting{{Name: "subformat", Value: "streamOptimized"}})
	if err != nil {
		log.Fatal(err)
	}
	var out bytes.Buffer
	sink, err := vmdk.Format.Create(format.Dest{Stream: &out, Name: "disk1.vmdk"},
		[]format.Device{{Size: 1 << 30}}, format.CreateOptions{Options: opts})
	if err != nil {
		log.Fatal(err)
	}
	disk := sink.Disk(0)
	_, sequential := disk.(format.Sequential)
	// A stream is written in order: zeros, data, zeros.
	if err := disk.ZeroAt(0, 512<<20); err != nil {
		log.Fatal(err)
	}
	if _, err := disk.WriteAt([]byte("hello, vmdk"), 512<<20); err != nil {
		log.Fatal(err)
	}
	if err := disk.ZeroAt(512<<20+11, 512<<20-11); err != nil {
		log.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("sequential:", sequential, "bytes:", out.Len())

	img, err := vmdk.Format.OpenAt(bytes.NewReader(out.Bytes()), int64(out.Len()), format.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()
	src := img.Disks()[0].Source
	buf := make([]byte, 11)
	src.ReadAt(buf, 512<<20)
	fmt.Printf("%d bytes, %q\n", src.Size(), buf)
	// Output:
	// sequential: true bytes: 71168
	// 1073741824 bytes, "hello, vmdk"
}

package vma_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/vmaconv/vmaconv/format/vma"
)

// Write a small archive, then read it back.
func Example() {
	var archive bytes.Buffer
	w := vma.NewWriter(&archive,
		vma.WithUUID(uuid.MustParse("6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b")),
		vma.WithCTime(time.Unix(1718000000, 0)))
	if err := w.AddConfig("qemu-server.conf", []byte("memory: 512\n")); err != nil {
		log.Fatal(err)
	}
	id, err := w.AddDevice("drive-scsi0", 3*vma.ClusterSize)
	if err != nil {
		log.Fatal(err)
	}
	data := make([]byte, vma.ClusterSize)
	copy(data[vma.BlockSize:], "hello") // only block 1 is not zero
	for c := range int64(3) {
		if err := w.WriteCluster(id, c, data); err != nil {
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	r, err := vma.NewReader(&archive)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range r.Header().Devices {
		fmt.Printf("device %d %s: %d bytes\n", d.ID, d.Name, d.Size)
	}
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("cluster %d: mask %016b, %d bytes stored: %q\n", c.Index, c.Mask, len(c.Data), c.Block(1)[:5])
	}
	// Output:
	// device 1 drive-scsi0: 196608 bytes
	// cluster 0: mask 0000000000000010, 4096 bytes stored: "hello"
	// cluster 1: mask 0000000000000010, 4096 bytes stored: "hello"
	// cluster 2: mask 0000000000000010, 4096 bytes stored: "hello"
}

// Damaged archives fail with a *FormatError that says what and where.
func ExampleFormatError() {
	var archive bytes.Buffer
	w := vma.NewWriter(&archive, vma.WithUUID(uuid.MustParse("6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b")))
	id, _ := w.AddDevice("drive-scsi0", 100*vma.ClusterSize)
	for c := range int64(100) {
		w.WriteCluster(id, c, nil)
	}
	w.Close()
	cut := archive.Bytes()[:13312] // header and the first extent only

	r, err := vma.NewReader(bytes.NewReader(cut))
	if err != nil {
		log.Fatal(err)
	}
	for err == nil {
		_, err = r.Next()
	}
	fmt.Println(err)
	// Output:
	// vma: archive ends with clusters missing: drive-scsi0: 42 of 100 clusters missing (58-99) (byte offset 13312)
}

// Open an archive for random access and read one device at any offset.
func ExampleOpen() {
	var archive bytes.Buffer
	w := vma.NewWriter(&archive, vma.WithUUID(uuid.MustParse("6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b")))
	id, _ := w.AddDevice("drive-scsi0", 1000*vma.ClusterSize)
	data := make([]byte, vma.ClusterSize)
	for c := range int64(1000) {
		copy(data, fmt.Sprintf("cluster %d", c))
		if err := w.WriteCluster(id, c, data); err != nil {
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	a, err := vma.Open(bytes.NewReader(archive.Bytes()), int64(archive.Len()))
	if err != nil {
		log.Fatal(err)
	}
	d, _ := a.Device("drive-scsi0")
	buf := make([]byte, 11)
	if _, err := d.ReadAt(buf, 777*vma.ClusterSize); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", buf)
	e, _ := d.Region(777*vma.ClusterSize+vma.BlockSize, vma.ClusterSize)
	fmt.Printf("%d bytes from %d: zero %v\n", e.Length, e.Start, e.Zero)
	fmt.Printf("%d extents; %d bytes stored; index of %d bytes\n", a.Extents(), d.Stored(), a.IndexBytes())
	// Output:
	// "cluster 777"
	// 65536 bytes from 50925568: zero false
	// 18 extents; 4096000 bytes stored; index of 2432 bytes
}

// GenerateConfig writes the qemu-server.conf vmaconv stores when it is given
// none: settings in sorted key order, as Proxmox writes them, then one map
// line per disk so that qmrestore finds every device, on the storage given.
func ExampleGenerateConfig() {
	devs := []vma.Device{
		{Name: "drive-scsi0", Size: 32 << 30},
		{Name: "drive-efidisk0", Size: 528 << 10},
	}
	os.Stdout.Write(vma.GenerateConfig(120, "web", "local-lvm", devs))
	// Output:
	// # written by vmaconv: a minimal configuration; adjust it after the restore
	// bios: ovmf
	// boot: order=scsi0
	// cores: 1
	// efidisk0: local-lvm:vm-120-disk-1,efitype=4m,size=528K
	// memory: 2048
	// name: web
	// ostype: other
	// scsi0: local-lvm:vm-120-disk-0,size=32G
	// scsihw: virtio-scsi-single
	// #qmdump#map:scsi0:drive-scsi0:local-lvm::
	// #qmdump#map:efidisk0:drive-efidisk0:local-lvm::
}

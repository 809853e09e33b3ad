package ova_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"regexp"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/ova"
	"github.com/vmaconv/vmaconv/pipeline"
)

// Write a VM of one disk as an OVA, list its members, and open it again:
// its disk under the key its controller gives it, and the config an
// archive of it would carry.
func Example() {
	dir, err := os.MkdirTemp("", "ova-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "web.ova")

	disk := make([]byte, 4<<20)
	copy(disk[1<<20:], "hello")
	conf := "name: web\ncores: 2\nmemory: 1024\nostype: l26\nscsi0: local-lvm:vm-100-disk-0,size=4M\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n"
	sink, err := ova.Format.Create(format.Dest{Path: path}, []format.Device{{Name: "drive-scsi0", Size: int64(len(disk))}},
		format.CreateOptions{Configs: []format.Config{{Name: "qemu-server.conf", Data: []byte(conf)}}})
	if err != nil {
		log.Fatal(err)
	}
	if err := pipeline.Copy(context.Background(), sink.Disk(0), memSource(disk), pipeline.Options{}); err != nil {
		log.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		log.Fatal(err)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("member", h.Name)
	}

	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	img, err := ova.Format.Open(f, format.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer img.Close()
	h := ova.HardwareOf(img)
	fmt.Printf("%s: %d CPUs, %d MiB, %s (%s), NIC %s\n", h.Name, h.CPUs(), h.MemoryMiB, h.OS.VMware, h.OS.Proxmox, h.NICs[0].Model)
	for _, d := range img.Disks() {
		got := make([]byte, 5)
		d.Source.ReadAt(got, 1<<20)
		fmt.Printf("disk %s: %d bytes, %q at 1 MiB\n", d.Name, d.Source.Size(), got)
	}
	// The NIC's MAC address comes from the package's digest: masked here.
	conf = regexp.MustCompile(`BC:24:11(:[0-9A-F]{2}){3}`).ReplaceAllString(string(img.Configs()[0].Data), "BC:24:11:…")
	fmt.Print(conf)
	// Output:
	// member web.ovf
	// member web.mf
	// member web-disk1.vmdk
	// web: 2 CPUs, 1024 MiB, other4xLinux64Guest (l26), NIC vmxnet3
	// disk drive-scsi0: 4194304 bytes, "hello" at 1 MiB
	// # imported by vmaconv from the OVF of web
	// boot: order=scsi0
	// cores: 2
	// memory: 1024
	// name: web
	// net0: vmxnet3=BC:24:11:…,bridge=vmbr0
	// ostype: l26
	// scsi0: local:ova-disk-0,size=4M
	// scsihw: lsi
	// #qmdump#map:scsi0:drive-scsi0:::
}

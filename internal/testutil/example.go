package testutil

import (
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
)

// ExampleName is the shipped example archive, under examples/: named as
// vzdump names a backup of VM 100 made at its ctime (TestCTime, in UTC).
const ExampleName = "vzdump-qemu-100-2024_06_10-06_13_20.vma"

// ExampleConfig is the example VM's qemu-server.conf, with the
// #qmdump#map lines vzdump appends and qmrestore needs.
const ExampleConfig = `boot: order=scsi0
cores: 2
memory: 2048
name: example
bios: ovmf
efidisk0: local-lvm:vm-100-disk-1,efitype=4m,size=528K
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
ostype: l26
scsi0: local-lvm:vm-100-disk-0,size=2M
scsihw: virtio-scsi-single
#qmdump#map:efidisk0:drive-efidisk0:local-lvm:raw:
#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:
`

// ExampleArchive builds the shipped example archive: a small VM with an EFI
// disk and a 2 MiB system disk holding a few blocks of data.
func ExampleArchive(t TB) []byte {
	scsi := make([]byte, 2<<20)
	copy(scsi, "example boot sector")
	scsi[510], scsi[511] = 0x55, 0xaa
	copy(scsi[1<<20:], GenDisk(100, 3*vma.BlockSize+100, "data"))
	copy(scsi[2<<20-vma.BlockSize:], "last block of the disk")
	efi := make([]byte, 540672)
	copy(efi[vma.ClusterSize*8:], "EFI variables live here")
	return WriteArchive(t, []Disk{{Name: "drive-efidisk0", Data: efi}, {Name: "drive-scsi0", Data: scsi}},
		[]format.Config{{Name: "qemu-server.conf", Data: []byte(ExampleConfig)},
			{Name: "qemu-server.fw", Data: []byte("[OPTIONS]\nenable: 1\n")}}, "interleave", 0)
}

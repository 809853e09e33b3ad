package part_test

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/vmaconv/vmaconv/guest/part"
)

func ExampleRead() {
	// A 1 MiB disk with an MBR holding one bootable Linux partition.
	disk := make([]byte, 1<<20)
	binary.LittleEndian.PutUint32(disk[440:], 0x1234abcd) // disk signature
	e := disk[446:]
	e[0], e[4] = 0x80, 0x83                     // active, type Linux
	binary.LittleEndian.PutUint32(e[8:], 64)    // first sector
	binary.LittleEndian.PutUint32(e[12:], 1984) // sectors
	disk[510], disk[511] = 0x55, 0xAA

	tab, err := part.Read(bytes.NewReader(disk), int64(len(disk)))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tab.Kind, tab.DiskID, tab.SectorSize)
	for _, p := range tab.Partitions {
		fmt.Printf("%d: bytes %d+%d, type %s (%s), bootable %v\n", p.Number, p.Start, p.Size, p.Type, p.TypeName, p.Bootable)
	}
	// Output:
	// dos 0x1234abcd 512
	// 1: bytes 32768+1015808, type 0x83 (Linux), bootable true
}

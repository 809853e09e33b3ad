package guest_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/guest"
)

const mib = 1 << 20

// mbrDisk returns a disk of size bytes with an MBR whose four primary
// partitions start at 1, 2, 3 and 4 MiB, 1 MiB each, of the given types.
func mbrDisk(size int, types [4]byte) []byte {
	d := make([]byte, size)
	for i, typ := range types {
		e := d[446+16*i:]
		e[4] = typ
		binary.LittleEndian.PutUint32(e[8:], uint32((i+1)*mib/512))
		binary.LittleEndian.PutUint32(e[12:], mib/512)
	}
	d[510], d[511] = 0x55, 0xaa
	return d
}

// TestNamedNotRead: contents vmaconv recognises but does not read are
// listed with their type and why, and refused by name when opened.
func TestNamedNotRead(t *testing.T) {
	d := mbrDisk(6*mib, [4]byte{0x83, 0x83, 0x82, 0x42})
	copy(d[1*mib:], "LUKS\xba\xbe\x00\x02")
	copy(d[2*mib+0x10040:], "_BHRfS_M")
	copy(d[3*mib+4096-10:], "SWAPSPACE2")
	// A second disk: an MD RAID member (superblock 1.2, 4 KiB in), and a
	// third with ZFS's uberblocks.
	md := make([]byte, mib)
	binary.LittleEndian.PutUint32(md[4096:], 0xa92b4efc)
	zfs := make([]byte, mib)
	binary.LittleEndian.PutUint64(zfs[128<<10+3<<10:], 0x00bab10c)
	tr := guest.New([]guest.Disk{
		{Name: "drive-scsi0", R: bytes.NewReader(d), Size: int64(len(d))},
		{Name: "drive-scsi1", R: bytes.NewReader(md), Size: int64(len(md))},
		{Name: "drive-scsi2", R: bytes.NewReader(zfs), Size: int64(len(zfs))},
		{Name: "drive-scsi3", R: bytes.NewReader(make([]byte, mib)), Size: mib},
	})
	want := map[string]string{
		"/drive-scsi0/p1": "luks: encrypted (LUKS)",
		"/drive-scsi0/p2": "btrfs: Btrfs is not readable",
		"/drive-scsi0/p3": "swap: Linux swap holds no files",
		"/drive-scsi0/p4": "ldm: a Windows dynamic disk (LDM) is not readable",
		"/drive-scsi1":    "linux_raid_member: an MD RAID member is not readable",
		"/drive-scsi2":    "zfs: ZFS is not readable",
		"/drive-scsi3":    "empty: holds only zeros at its start: no file system",
	}
	for p, w := range want {
		n, _, err := tr.Lookup(p, false)
		if err != nil {
			t.Fatal(err)
		}
		v := n.(guest.Volumer).Volume()
		if got := v.Content + ": " + v.Why; got != w || v.Readable {
			t.Errorf("%s: %q (readable %v), want %q", p, got, v.Readable, w)
		}
		if n.Info().Mode&fs.ModeIrregular == 0 {
			t.Errorf("%s: mode %v, want irregular", p, n.Info().Mode)
		}
		_, err = n.ReadDir()
		if !errors.Is(err, guest.ErrNotDir) || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: ReadDir: %v", p, err)
		}
		if _, err := n.Open(); !errors.Is(err, guest.ErrNotRegular) || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: Open: %v", p, err)
		}
	}
	// A path through an unreadable volume says what it is.
	if _, _, err := tr.Lookup("/drive-scsi0/p2/etc/fstab", true); err == nil || !strings.Contains(err.Error(), "btrfs") {
		t.Errorf("a path through btrfs: %v", err)
	}
	// The root lists the disks; a missing one is named.
	if _, _, err := tr.Lookup("/drive-scsi9", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing disk: %v", err)
	}
}

// TestPartitionPastEnd: a partition table that points past the disk is
// one error naming it, not a panic or a read past the end.
func TestPartitionPastEnd(t *testing.T) {
	d := mbrDisk(2*mib, [4]byte{0x83, 0x83, 0, 0})
	binary.LittleEndian.PutUint32(d[446+16+8:], 1<<30) // p2 starts at 512 GiB
	tr := guest.New([]guest.Disk{{R: bytes.NewReader(d), Size: int64(len(d))}})
	root, _ := tr.Root()
	v := root.(guest.Volumer).Volume()
	if v.Readable || !strings.Contains(v.Why, "partition 2: starts at byte 549755813888, past the disk's end") {
		t.Errorf("volume %+v", v)
	}
	if _, err := root.ReadDir(); !errors.Is(err, guest.ErrCorrupt) || !errors.Is(err, guest.ErrNotDir) {
		t.Errorf("ReadDir: %v, want ErrCorrupt and ErrNotDir", err)
	}
}

// TestNestedTables: partitions that start at their disk's own partition
// table (4 of them, each holding the table again) are not read for a
// table of their own: the tree ends at one level, as Linux's.
func TestNestedTables(t *testing.T) {
	d := make([]byte, 4096)
	for i := range 4 {
		e := d[446+16*i:]
		e[4] = 0x83
		binary.LittleEndian.PutUint32(e[8:], 0)
		binary.LittleEndian.PutUint32(e[12:], 8)
	}
	d[510], d[511] = 0x55, 0xaa
	tr := guest.New([]guest.Disk{{R: bytes.NewReader(d), Size: int64(len(d))}})
	root, _ := tr.Root()
	visits := 0
	err := guest.Walk(root, "/", func(p string, n guest.Node, err error) error {
		if visits++; visits > 100 {
			return errors.New("more than 100 nodes: the tables nest")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if visits > 5 {
		t.Errorf("%d nodes visited in a disk of 4 partitions", visits)
	}
}

// TestVolumeWarnings: what a partition table warns of reaches its
// volume (ls notes it).
func TestVolumeWarnings(t *testing.T) {
	d := mbrDisk(5*mib, [4]byte{0x83, 0x83, 0, 0})
	binary.LittleEndian.PutUint32(d[446+16+12:], 4*mib/512) // p2 from 2 MiB to 6 MiB, past the end
	tr := guest.New([]guest.Disk{{R: bytes.NewReader(d), Size: int64(len(d))}})
	root, _ := tr.Root()
	v := root.(guest.Volumer).Volume()
	if !v.Readable || !slices.ContainsFunc(v.Warnings, func(w string) bool {
		return strings.Contains(w, "partition 2 runs 1048576 bytes past the disk's end")
	}) {
		t.Errorf("volume %+v", v)
	}
}

package vmdk

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"strings"
)

// Subformats and adapter types Create writes (qemu-img's names).
const (
	MonolithicSparse = "monolithicSparse"
	StreamOptimized  = "streamOptimized"
)

// Adapter types, as ddb.adapterType records them.
var adapterTypes = []string{"ide", "buslogic", "lsilogic", "legacyESX"}

// Defaults of the descriptor's fields, as qemu-img writes them.
const (
	defaultHWVersion    = "4"
	defaultToolsVersion = "2147483647"
	defaultAdapter      = "ide"
)

// Layout of the images this package writes, as QEMU lays them out.
const (
	grainSectors = 128 // 64 KiB grains
	grainBytes   = grainSectors * sector
	gtEntries    = 512 // a grain table maps 32 MiB
	gtSectors    = gtEntries * 4 / sector
	descSectors  = 20 // room for the embedded descriptor (QEMU's DESC_SIZE)
	// streamOverhead is where a streamOptimized image's first grain may
	// start (overHead), as VMware's tools write it.
	streamOverhead = 128
)

// MaxSize is the largest disk Create writes: as qemu-img, whose grain
// count is a 32-bit number, 2^32-1 grains of 64 KiB (256 TiB less one
// grain).
const MaxSize = (1<<32 - 1) * grainBytes

// WriterOptions configure the descriptor and header of a new image. The
// zero value is qemu-img's default: an IDE disk of hardware version 4.
type WriterOptions struct {
	// AdapterType is ddb.adapterType: ide (the default), buslogic,
	// lsilogic or legacyESX; it also sets the geometry's heads (16 for
	// ide, 255 for the others), as QEMU does.
	AdapterType string
	// HWVersion is ddb.virtualHWVersion ("4" if empty).
	HWVersion string
	// ToolsVersion is ddb.toolsVersion ("2147483647" if empty).
	ToolsVersion string
	// ZeroedGrain sets the zeroed-grain flag (and version 2 for a
	// monolithicSparse image), as qemu-img's zeroed_grain=on.
	ZeroedGrain bool
	// FileName is the extent file the descriptor names (its base name is
	// kept, characters a descriptor cannot hold replaced): the image's own
	// name.
	FileName string
	// Workers is the number of goroutines compressing grains of a
	// streamOptimized image (default, and at most, the number of CPUs).
	// The output is the same for any number.
	Workers int
}

// check fills in the defaults and refuses what a descriptor cannot hold.
func (o *WriterOptions) check() error {
	if o.AdapterType == "" {
		o.AdapterType = defaultAdapter
	}
	if o.HWVersion == "" {
		o.HWVersion = defaultHWVersion
	}
	if o.ToolsVersion == "" {
		o.ToolsVersion = defaultToolsVersion
	}
	found := false
	for _, a := range adapterTypes {
		found = found || a == o.AdapterType
	}
	if !found {
		return fmt.Errorf("vmdk: adapter type %q: want %s", o.AdapterType, strings.Join(adapterTypes, ", "))
	}
	for _, v := range []struct{ what, v string }{{"hardware version", o.HWVersion}, {"tools version", o.ToolsVersion}} {
		if err := descValue(v.v); err != nil {
			return fmt.Errorf("vmdk: %s %q: %v", v.what, v.v, err)
		}
	}
	return nil
}

// descValue refuses a value a descriptor line cannot hold between quotes.
func descValue(v string) error {
	if len(v) > 64 {
		return fmt.Errorf("longer than 64 bytes")
	}
	for _, c := range v {
		if c < ' ' || c == '"' || c == 0x7f || c > 0x7e {
			return fmt.Errorf("want printable ASCII without quotes")
		}
	}
	return nil
}

// extentName is the name the descriptor gives the image's own file: the
// base of name, with what a quoted descriptor value cannot hold replaced.
func extentName(name string) string {
	base := filepath.Base(name)
	if base == "." || base == "/" || base == "-" || base == "" {
		base = "disk.vmdk"
	}
	b := []byte(base)
	for i, c := range b {
		if c < ' ' || c == '"' || c == 0x7f || c == '\\' {
			b[i] = '_'
		}
	}
	if len(b) > 255 {
		b = b[len(b)-255:]
	}
	return string(b)
}

// descriptorText is the descriptor QEMU writes into a new image
// (vmdk_co_do_create), for a disk of size bytes (whole sectors).
func descriptorText(subformat string, size int64, o WriterOptions) string {
	heads := int64(16)
	if o.AdapterType != "ide" {
		heads = 255 // VMware's, for disks on other adapters
	}
	name := extentName(o.FileName)
	return fmt.Sprintf("# Disk DescriptorFile\n"+
		"version=1\n"+
		"CID=%x\n"+
		"parentCID=ffffffff\n"+
		"createType=\"%s\"\n"+
		"\n"+
		"# Extent description\n"+
		"RW %d SPARSE \"%s\"\n"+
		"\n"+
		"# The Disk Data Base\n"+
		"#DDB\n"+
		"\n"+
		"ddb.virtualHWVersion = \"%s\"\n"+
		"ddb.geometry.cylinders = \"%d\"\n"+
		"ddb.geometry.heads = \"%d\"\n"+
		"ddb.geometry.sectors = \"63\"\n"+
		"ddb.adapterType = \"%s\"\n"+
		"ddb.toolsVersion = \"%s\"\n",
		contentID(name, subformat, size), subformat, size/sector, name,
		o.HWVersion, size/(63*heads*sector), heads, o.AdapterType, o.ToolsVersion)
}

// contentID is the new image's CID. qemu-img draws it at random; it is
// derived here from the file's name, subformat and size, so that the same
// input always gives the same bytes (a CID only has to differ from a
// parent's, and a new image has none). 0xffffffff and 0xfffffffe, which
// VMware reserves, are avoided.
func contentID(name, subformat string, size int64) uint32 {
	h := fnv.New32a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(size))
	h.Write([]byte(name + "\x00" + subformat + "\x00"))
	h.Write(b[:])
	cid := h.Sum32()
	if cid >= 0xfffffffe {
		cid -= 2
	}
	return cid
}

// sparseHeader encodes a hosted sparse extent header (VMDK4).
func sparseHeader(h *header) []byte {
	b := make([]byte, sector)
	le := binary.LittleEndian
	copy(b, Magic[:])
	le.PutUint32(b[4:], h.version)
	le.PutUint32(b[8:], h.flags)
	le.PutUint64(b[12:], h.capacity)
	le.PutUint64(b[20:], h.granularity)
	le.PutUint64(b[28:], h.descOffset)
	le.PutUint64(b[36:], h.descSize)
	le.PutUint32(b[44:], h.gtes)
	le.PutUint64(b[48:], h.rgdOffset)
	le.PutUint64(b[56:], h.gdOffset)
	le.PutUint64(b[64:], h.grainOffset)
	copy(b[73:], "\n \r\n") // newline detection
	le.PutUint16(b[77:], h.compression)
	return b
}

// marker encodes a metadata marker sector of a streamOptimized image.
func marker(typ uint32, val uint64) []byte {
	b := make([]byte, sector)
	binary.LittleEndian.PutUint64(b, val)
	binary.LittleEndian.PutUint32(b[12:], typ)
	return b
}

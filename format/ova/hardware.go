package ova

import (
	"fmt"
	"strconv"
	"strings"
)

// Hardware is the virtual machine an OVF descriptor describes, as vmaconv
// maps it to and from a Proxmox VM config: the parts both sides have.
type Hardware struct {
	// Name is the VM's name (the OVF's VirtualSystem Name; Proxmox's
	// name:, a DNS name there).
	Name string
	// Sockets × Cores are the virtual CPUs (vmw:CoresPerSocket is Cores).
	Sockets, Cores int
	// MemoryMiB is the memory, in MiB.
	MemoryMiB int64
	// EFI says the VM boots with UEFI firmware (vmw:Config firmware=efi;
	// Proxmox's bios: ovmf); SecureBoot that secure boot is on.
	EFI, SecureBoot bool
	// OS is the guest operating system.
	OS OS
	// Version is VMware's virtual hardware version (VirtualSystemType
	// vmx-NN).
	Version int
	// Controllers are the disk controllers, Disks the disks and CD-ROM
	// drives on them, NICs the network adapters, in order.
	Controllers []Controller
	Disks       []Disk
	NICs        []NIC

	// remarks are what a Proxmox config of the VM cannot keep of the OVF,
	// written into it as comments (see Config).
	remarks []string
}

// remark records what a Proxmox config of the VM loses.
func (h *Hardware) remark(format string, args ...any) {
	h.remarks = append(h.remarks, fmt.Sprintf(format, args...))
}

// OS is a guest operating system as the three sides name it.
type OS struct {
	ID      int    // CIM_OperatingSystem's OsType (the OperatingSystemSection's ovf:id)
	VMware  string // vmw:osType (otherLinux64Guest)
	Proxmox string // ostype (l26)
}

// Bus is a kind of disk controller.
type Bus string

// Disk controllers.
const (
	BusIDE  Bus = "ide"
	BusSATA Bus = "sata"
	BusSCSI Bus = "scsi"
	// BusNVMe is an NVMe controller, which Proxmox's configs lack: its
	// disks are imported as SCSI disks.
	BusNVMe Bus = "nvme"
)

// Controller is a disk controller.
type Controller struct {
	Bus Bus
	// Number tells controllers of one bus apart (rasd:Address): IDE 0
	// and 1, SCSI 0 to 3.
	Number int
	// SubType is rasd:ResourceSubType: the SCSI model (VirtualSCSI,
	// lsilogic, lsilogicsas, buslogic), vmware.sata.ahci, …
	SubType string
}

// Disk is a disk or a CD-ROM drive on a controller.
type Disk struct {
	// Key is the Proxmox disk key (scsi0, sata1, ide2); Device the
	// archive device it is stored as (drive-scsi0), "" for a CD-ROM.
	Key, Device string
	// Controller is the index of its controller in Hardware.Controllers,
	// Unit its address on it (rasd:AddressOnParent).
	Controller, Unit int
	// CDROM marks a CD-ROM drive: no content, no size.
	CDROM bool
	// Capacity is the disk's size in bytes, as the OVF says it.
	Capacity int64
	// File names the file that holds the disk's content: a member of the
	// OVA, or a path relative to the .ovf; "" for an empty disk.
	File string
	// FileSize is the file's size as the OVF says it (ovf:size), -1 if
	// it does not.
	FileSize int64
}

// NIC is a network adapter.
type NIC struct {
	// Model is Proxmox's model: e1000, e1000e, vmxnet3 (VMware's E1000,
	// E1000e, VmxNet3), virtio, rtl8139.
	Model string
	// MAC is its address (XX:XX:XX:XX:XX:XX), "" if none is given.
	MAC string
	// Network names the network it is connected to (rasd:Connection;
	// Proxmox's bridge).
	Network string
	// Disconnected says it starts unplugged (Proxmox's link_down=1).
	Disconnected bool
}

// CPUs returns the number of virtual CPUs.
func (h *Hardware) CPUs() int { return h.Sockets * h.Cores }

// osTypes are the guest operating systems vmaconv maps, by Proxmox's
// ostype: the CIM OsType and VMware guest ID it exports each as. On
// import the VMware guest ID decides where the OVF has one (see
// vmwareOSType), else the CIM OsType (cimOSType).
var osTypes = map[string]OS{
	"l26":     {100, "other4xLinux64Guest", "l26"}, // as open-vmdk's ova-compose
	"l24":     {97, "otherLinuxGuest", "l24"},
	"win11":   {122, "windows11_64Guest", "win11"},
	"win10":   {120, "windows9_64Guest", "win10"},
	"win8":    {114, "windows8_64Guest", "win8"},
	"win7":    {105, "windows7_64Guest", "win7"},
	"wvista":  {74, "winVista64Guest", "wvista"},
	"w2k8":    {77, "winLonghorn64Guest", "w2k8"},
	"w2k3":    {70, "winNetEnterprise64Guest", "w2k3"},
	"w2k":     {58, "win2000ServGuest", "w2k"},
	"wxp":     {67, "winXPProGuest", "wxp"},
	"solaris": {81, "solaris11_64Guest", "solaris"},
	"other":   {102, "otherGuest64", "other"},
}

// exportOS returns the OS a Proxmox ostype is exported as, for virtual
// hardware version hw: a Linux guest ID that version knows.
func exportOS(ostype string, hw int) (OS, bool) {
	os, ok := osTypes[ostype]
	if !ok {
		return osTypes["other"], ostype == ""
	}
	if ostype == "l26" {
		switch {
		case hw < 13:
			os.VMware = "other26xLinux64Guest"
		case hw < 14:
			os.VMware = "other3xLinux64Guest"
		}
	}
	return os, true
}

// cimOSTypes are pve-storage's (src/PVE/GuestImport/OVF.pm, $ostype_ids):
// the ostype Proxmox's own OVF import gives each CIM OsType.
var cimOSTypes = map[int]string{
	18: "wxp", 29: "solaris", 36: "l26", 58: "w2k", 67: "wxp", 69: "w2k3", 70: "w2k3", 71: "wxp",
	72: "wxp", 73: "wvista", 74: "wvista", 75: "wxp", 76: "w2k8", 77: "w2k8", 79: "l26", 80: "l26",
	81: "solaris", 82: "l26", 83: "l26", 84: "l26", 85: "l26", 87: "l26", 89: "l26", 90: "l26",
	91: "l26", 92: "l26", 93: "l26", 94: "l26", 95: "l26", 96: "l26", 97: "l24", 98: "l24",
	99: "l26", 100: "l26", 101: "l26", 103: "win7", 105: "win7", 106: "l26", 107: "l26", 108: "l26",
	109: "l26", 111: "win8", 112: "win8", 113: "win8", 114: "win8", 115: "win8", 116: "win10",
	117: "win8", 118: "win8", 119: "win10", 120: "win10", 121: "win10", 122: "win11", 123: "win11",
}

// vmwareOSPrefixes map VMware guest IDs (vmw:osType, without the
// "Guest" suffix) to Proxmox's ostype, as pve-storage's ESXi import does
// (src/PVE/Storage/ESXiPlugin.pm, %guest_types_windows and
// %guest_types_other) for the .vmx names of the same guests; the first
// matching prefix wins.
var vmwareOSPrefixes = []struct{ prefix, ostype string }{
	{"windows11", "win11"}, {"windows12", "win11"},
	{"windows2019srvnext", "win11"}, {"windows2022srvnext", "win11"},
	{"windows2019srv", "win10"}, {"windows9", "win10"},
	{"windows8", "win8"},
	{"windows7server", "w2k8"}, {"windows7srv", "w2k8"}, {"windows7", "win7"},
	{"winlonghorn", "w2k8"}, {"longhorn", "w2k8"},
	{"winvista", "wvista"},
	{"winnet", "w2k3"},
	{"winxp", "wxp"}, {"winnt", "wxp"},
	{"win2000", "w2k"},
	{"win31", "other"}, {"win95", "other"}, {"win98", "other"}, {"winme", "other"}, {"dos", "other"},
	{"solaris", "solaris"},
	{"freebsd", "other"}, {"darwin", "other"}, {"os2", "other"}, {"netware", "other"},
	{"openserver", "other"}, {"unixware", "other"}, {"ecomstation", "other"}, {"vmkernel", "other"},
	{"other", "other"}, // otherGuest, otherGuest64; the other…Linux ones are matched before
}

// importOS returns the Proxmox ostype of the guest an OVF describes: from
// its VMware guest ID where there is one (a Linux one, or one VMware
// does not list as anything else, is l26, as Proxmox's ESXi import has
// it), else from its CIM OsType (as Proxmox's OVF import has it), else
// other.
func importOS(id int, vmware string) string {
	if v := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(vmware), "Guest")); v != "" {
		if strings.Contains(v, "linux") {
			return "l26"
		}
		for _, p := range vmwareOSPrefixes {
			if strings.HasPrefix(v, p.prefix) {
				return p.ostype
			}
		}
		if _, ok := cimOSTypes[id]; !ok {
			return "l26"
		}
	}
	if t, ok := cimOSTypes[id]; ok {
		return t
	}
	return "other"
}

// isWindows reports whether a Proxmox ostype is a Windows one.
func isWindows(ostype string) bool {
	return strings.HasPrefix(ostype, "w")
}

// diskKey returns the disk key of bus and index (scsi3).
func diskKey(bus Bus, i int) string { return string(bus) + strconv.Itoa(i) }

// busSlots is how many disks of each bus Proxmox's configs hold (ide0-3,
// sata0-5, scsi0-30).
var busSlots = map[Bus]int{BusIDE: 4, BusSATA: 6, BusSCSI: 31}

// Where a Proxmox disk key sits on VMware's controllers, and back:
// IDE disk i is unit i%2 of IDE controller i/2 (ide2 is the secondary
// master); SATA disk i is port i of the one AHCI controller; SCSI disk i
// is on SCSI controller i/15, unit i%15 skipping 7, the unit VMware's
// SCSI controllers keep for themselves (15 disks a controller).
const scsiPerController = 15

// slot returns the controller number and unit of disk index i of bus.
func slot(bus Bus, i int) (number, unit int) {
	switch bus {
	case BusIDE:
		return i / 2, i % 2
	case BusSCSI:
		number, unit = i/scsiPerController, i%scsiPerController
		if unit >= 7 {
			unit++
		}
		return number, unit
	}
	return 0, i
}

// index returns the disk index of unit on controller number of bus: the
// inverse of slot (an index that is not one, such as SCSI unit 7, is
// taken for the one before it and so found taken or out of range).
func index(bus Bus, number, unit int) int {
	switch bus {
	case BusIDE:
		return number*2 + unit
	case BusSCSI:
		if unit > 7 {
			unit--
		}
		return number*scsiPerController + unit
	case BusSATA:
		return number*30 + unit
	}
	return -1
}

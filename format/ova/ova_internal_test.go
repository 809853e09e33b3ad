package ova

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
)

// rawDriver stands for the VMDK driver in tests of the container: each
// disk is its raw bytes.
var rawDriver = diskDriver{
	format: format.Format{Name: "raw", Create: raw.Create, Open: raw.Format.Open,
		OpenAt: func(r io.ReaderAt, size int64, _ format.OpenOptions) (format.Image, error) {
			return format.SingleDisk(readerSource{r, size}), nil
		}},
	settings: func(Bus) []format.Setting { return nil },
}

type readerSource struct {
	r    io.ReaderAt
	size int64
}

func (s readerSource) ReadAt(b []byte, off int64) (int, error) {
	return io.NewSectionReader(s.r, 0, s.size).ReadAt(b, off)
}
func (s readerSource) Size() int64  { return s.size }
func (s readerSource) Close() error { return nil }

// testConfig is a Proxmox VM's config with a disk on each bus, a CD-ROM
// drive, two NICs, UEFI with secure boot.
const testConfig = `bios: ovmf
boot: order=scsi0;sata1
cores: 2
sockets: 2
efidisk0: local-lvm:vm-100-disk-9,efitype=4m,pre-enrolled-keys=1,size=528K
ide0: local-lvm:vm-100-disk-3,size=1M
ide2: none,media=cdrom
memory: 3072
name: web server
net0: virtio=BC:24:11:00:00:01,bridge=vmbr0
net1: e1000e=BC:24:11:00:00:02,bridge=vmbr1,link_down=1
ostype: win10
sata1: local-lvm:vm-100-disk-2,size=1M
scsi0: local-lvm:vm-100-disk-0,size=2M
scsi9: local-lvm:vm-100-disk-4,size=1M
scsihw: virtio-scsi-single
virtio1: local-lvm:vm-100-disk-1,size=1M
#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:
`

var testDevices = []format.Device{
	{Name: "drive-efidisk0", Size: 540672},
	{Name: "drive-scsi0", Size: 2 << 20},
	{Name: "drive-virtio1", Size: 1 << 20},
	{Name: "drive-sata1", Size: 1 << 20},
	{Name: "drive-scsi9", Size: 1 << 20},
	{Name: "drive-ide0", Size: 1 << 20},
	{Name: "vmstate", Size: 4096},
	{Name: "disk", Size: 1 << 20},
}

func collect(notes *[]string) func(string) {
	return func(s string) { *notes = append(*notes, s) }
}

func hasNote(notes []string, sub string) bool {
	return slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, sub) })
}

// TestFromConfig checks the hardware a Proxmox config becomes: each disk
// on its controller and unit, VirtIO on a paravirtual SCSI controller of
// its own, the rest as the comments say.
func TestFromConfig(t *testing.T) {
	var notes []string
	h, exp, err := fromConfig([]byte(testConfig), testDevices, "ignored", 14, collect(&notes))
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "web server" || h.Sockets != 2 || h.Cores != 2 || h.MemoryMiB != 3072 || !h.EFI || !h.SecureBoot {
		t.Errorf("hardware %+v", h)
	}
	if h.OS != (OS{120, "windows9_64Guest", "win10"}) {
		t.Errorf("OS %+v", h.OS)
	}
	type placed struct {
		key  string
		bus  Bus
		num  int
		unit int
		sub  string
	}
	var got []placed
	for _, d := range h.Disks {
		c := h.Controllers[d.Controller]
		got = append(got, placed{d.Key, c.Bus, c.Number, d.Unit, c.SubType})
	}
	want := []placed{
		{"scsi0", BusSCSI, 0, 0, "VirtualSCSI"},
		{"sata1", BusSATA, 0, 1, "vmware.sata.ahci"},
		{"scsi9", BusSCSI, 0, 10, "VirtualSCSI"}, // unit 7 is the controller's
		{"ide0", BusIDE, 0, 0, "PIIX4"},
		{"virtio1", BusSCSI, 1, 1, "VirtualSCSI"},
		{"", BusSCSI, 0, 1, "VirtualSCSI"},
		{"ide2", BusIDE, 1, 0, "PIIX4"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("disks\n got %v\nwant %v", got, want)
	}
	if !slices.Equal(exp, exported{-1, 0, 4, 1, 2, 3, -1, 5}) {
		t.Errorf("exported %v", exp)
	}
	if h.Disks[5].Device != "disk" || h.Disks[0].Capacity != 2<<20 || !h.Disks[6].CDROM {
		t.Errorf("disks %+v", h.Disks)
	}
	if len(h.NICs) != 2 || h.NICs[0] != (NIC{Model: "virtio", MAC: "BC:24:11:00:00:01", Network: "vmbr0"}) ||
		h.NICs[1] != (NIC{Model: "e1000e", MAC: "BC:24:11:00:00:02", Network: "vmbr1", Disconnected: true}) {
		t.Errorf("NICs %+v", h.NICs)
	}
	for _, n := range []string{"drive-efidisk0: the EFI variables", "vmstate: the VM's saved RAM", "drive-virtio1: a VirtIO block disk",
		"disk is not a Proxmox disk name", "scsihw virtio-scsi-single becomes a VMware Paravirtual", "net0: a virtio NIC becomes a VMware VmxNet3"} {
		if !hasNote(notes, n) {
			t.Errorf("no note %q in %q", n, notes)
		}
	}
}

// TestFromConfigRefusals checks configs an OVF cannot describe.
func TestFromConfigRefusals(t *testing.T) {
	for _, c := range []struct{ conf, want string }{
		{"cores: 0\n", "cores"},
		{"sockets: 2\ncores: 600\n", "virtual CPUs"},
		{"memory: 8\n", "memory"},
		{"memory: lots\n", "memory"},
		{"scsihw: ahci\n", "scsihw"},
		{"net0: tulip=00:11:22:33:44:55\n", "NIC model"},
	} {
		_, _, err := fromConfig([]byte(c.conf), nil, "vm", 14, func(string) {})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error about %s", c.conf, err, c.want)
		}
	}
	// 61 SCSI disks need 5 controllers.
	var devs []format.Device
	for i := range 31 {
		devs = append(devs, format.Device{Name: fmt.Sprintf("drive-scsi%d", i), Size: 512}, format.Device{Name: fmt.Sprintf("x%d", i), Size: 512})
	}
	if _, _, err := fromConfig(nil, devs, "vm", 14, func(string) {}); err == nil || !strings.Contains(err.Error(), "SCSI controllers") {
		t.Errorf("62 SCSI disks: %v", err)
	}
	if _, _, err := fromConfig(nil, []format.Device{{Name: "drive-sata0", Size: 512}}, "vm", 9, func(string) {}); err == nil || !strings.Contains(err.Error(), "SATA") {
		t.Errorf("SATA on vmx-09: %v", err)
	}
	var notes []string
	h, _, err := fromConfig([]byte("memory: 1001\nostype: plan9\n"), nil, "vm", 12, collect(&notes))
	if err != nil || h.MemoryMiB != 1004 || h.OS.VMware != "otherGuest64" || !hasNote(notes, "rounded up to 1004") || !hasNote(notes, "plan9") {
		t.Errorf("memory 1001, ostype plan9: %+v, %v, %q", h, err, notes)
	}
	if h, _, _ := fromConfig([]byte("ostype: l26\n"), nil, "vm", 12, func(string) {}); h.OS.VMware != "other26xLinux64Guest" {
		t.Errorf("l26 on vmx-12: %s", h.OS.VMware)
	}
	// A disk key as a device's name (vmaconv create vm.ova sata3=disk.raw).
	h, _, err = fromConfig(nil, []format.Device{{Name: "sata3", Size: 512}}, "vm", 14, func(string) {})
	if err != nil || len(h.Disks) != 1 || h.Disks[0].Key != "sata3" || h.Controllers[0].Bus != BusSATA || h.Disks[0].Unit != 3 {
		t.Errorf("sata3: %+v, %v", h, err)
	}
}

// The OVF as a namespace-aware reader sees it: every element and
// attribute in the namespace DSP0243 and VMware's schema put it.
type strictEnvelope struct {
	XMLName    xml.Name `xml:"http://schemas.dmtf.org/ovf/envelope/1 Envelope"`
	References []struct {
		Href string `xml:"http://schemas.dmtf.org/ovf/envelope/1 href,attr"`
		ID   string `xml:"http://schemas.dmtf.org/ovf/envelope/1 id,attr"`
		Size string `xml:"http://schemas.dmtf.org/ovf/envelope/1 size,attr"`
	} `xml:"http://schemas.dmtf.org/ovf/envelope/1 References>File"`
	Disks []struct {
		ID       string `xml:"http://schemas.dmtf.org/ovf/envelope/1 diskId,attr"`
		Capacity string `xml:"http://schemas.dmtf.org/ovf/envelope/1 capacity,attr"`
		Units    string `xml:"http://schemas.dmtf.org/ovf/envelope/1 capacityAllocationUnits,attr"`
		FileRef  string `xml:"http://schemas.dmtf.org/ovf/envelope/1 fileRef,attr"`
		Format   string `xml:"http://schemas.dmtf.org/ovf/envelope/1 format,attr"`
	} `xml:"http://schemas.dmtf.org/ovf/envelope/1 DiskSection>Disk"`
	Networks []string `xml:"http://schemas.dmtf.org/ovf/envelope/1 NetworkSection>Network"`
	System   struct {
		ID   string `xml:"http://schemas.dmtf.org/ovf/envelope/1 id,attr"`
		Name string `xml:"http://schemas.dmtf.org/ovf/envelope/1 Name"`
		OS   struct {
			ID     string `xml:"http://schemas.dmtf.org/ovf/envelope/1 id,attr"`
			OSType string `xml:"http://www.vmware.com/schema/ovf osType,attr"`
		} `xml:"http://schemas.dmtf.org/ovf/envelope/1 OperatingSystemSection"`
		HW struct {
			System struct {
				Type string `xml:"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData VirtualSystemType"`
				ID   string `xml:"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData VirtualSystemIdentifier"`
			} `xml:"http://schemas.dmtf.org/ovf/envelope/1 System"`
			Items []struct {
				Required string `xml:"http://schemas.dmtf.org/ovf/envelope/1 required,attr"`
				Raw      []struct {
					XMLName xml.Name
					Value   string `xml:",chardata"`
				} `xml:",any"`
			} `xml:"http://schemas.dmtf.org/ovf/envelope/1 Item"`
			Configs []struct {
				Key   string `xml:"http://www.vmware.com/schema/ovf key,attr"`
				Value string `xml:"http://www.vmware.com/schema/ovf value,attr"`
			} `xml:"http://www.vmware.com/schema/ovf Config"`
		} `xml:"http://schemas.dmtf.org/ovf/envelope/1 VirtualHardwareSection"`
	} `xml:"http://schemas.dmtf.org/ovf/envelope/1 VirtualSystem"`
}

// TestOVFFields writes the OVF of testConfig and reads it with a
// namespace-aware parser, field by field; then reads it back with
// ParseOVF into the same hardware.
func TestOVFFields(t *testing.T) {
	h, exp, err := fromConfig([]byte(testConfig), testDevices, "vm", 14, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range exp {
		if k >= 0 {
			h.Disks[k].File = fmt.Sprintf("vm-disk%d.vmdk", i)
			h.Disks[k].FileSize = int64(1000 + i)
		}
	}
	ovf := h.OVF()
	var e strictEnvelope
	if err := xml.Unmarshal(ovf, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.References) != 6 || e.References[0].Href != "vm-disk1.vmdk" || e.References[0].ID != "file1" || e.References[0].Size != "1001" {
		t.Errorf("References %+v", e.References)
	}
	if len(e.Disks) != 6 || e.Disks[0].Capacity != "2" || e.Disks[0].Units != "byte * 2^20" || e.Disks[0].FileRef != "file1" ||
		e.Disks[0].ID != "vmdisk1" || e.Disks[0].Format != StreamOptimized {
		t.Errorf("Disks %+v", e.Disks)
	}
	s := e.System
	if s.ID != "vm" || s.Name != "web server" || s.OS.ID != "120" || s.OS.OSType != "windows9_64Guest" || s.HW.System.Type != "vmx-14" || s.HW.System.ID != "web server" {
		t.Errorf("VirtualSystem %s %s %+v %+v", s.ID, s.Name, s.OS, s.HW.System)
	}
	type kv = map[string]string
	var items []kv
	for _, it := range s.HW.Items {
		m := kv{}
		var order []string // the schema's: rasd elements alphabetically, then VMware's
		for _, r := range it.Raw {
			order = append(order, r.XMLName.Space+" "+r.XMLName.Local)
		}
		if !slices.IsSorted(order) {
			t.Errorf("item elements out of order: %q", order)
		}
		for _, r := range it.Raw {
			prefix := map[string]string{
				"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData": "rasd:",
				"http://www.vmware.com/schema/ovf": "vmw:",
			}[r.XMLName.Space]
			if prefix == "" {
				t.Errorf("item element %s in namespace %s", r.XMLName.Local, r.XMLName.Space)
			}
			m[prefix+r.XMLName.Local] = r.Value
		}
		if it.Required == "false" {
			m["required"] = "false"
		}
		items = append(items, m)
	}
	want := []kv{
		{"rasd:AllocationUnits": "hertz * 10^6", "rasd:Description": "Number of Virtual CPUs", "rasd:ElementName": "4 virtual CPU(s)", "rasd:InstanceID": "1", "rasd:ResourceType": "3", "rasd:VirtualQuantity": "4", "vmw:CoresPerSocket": "2"},
		{"rasd:AllocationUnits": "byte * 2^20", "rasd:Description": "Memory Size", "rasd:ElementName": "3072MB of memory", "rasd:InstanceID": "2", "rasd:ResourceType": "4", "rasd:VirtualQuantity": "3072"},
		{"rasd:Address": "0", "rasd:Description": "SCSI Controller", "rasd:ElementName": "SCSI controller 0", "rasd:InstanceID": "3", "rasd:ResourceSubType": "VirtualSCSI", "rasd:ResourceType": "6"},
		{"rasd:Address": "0", "rasd:Description": "SATA Controller", "rasd:ElementName": "SATA controller 0", "rasd:InstanceID": "4", "rasd:ResourceSubType": "vmware.sata.ahci", "rasd:ResourceType": "20"},
		{"rasd:Address": "0", "rasd:Description": "IDE Controller", "rasd:ElementName": "IDE 0", "rasd:InstanceID": "5", "rasd:ResourceType": "5"},
		{"rasd:Address": "1", "rasd:Description": "SCSI Controller", "rasd:ElementName": "SCSI controller 1", "rasd:InstanceID": "6", "rasd:ResourceSubType": "VirtualSCSI", "rasd:ResourceType": "6"},
		{"rasd:Address": "1", "rasd:Description": "IDE Controller", "rasd:ElementName": "IDE 1", "rasd:InstanceID": "7", "rasd:ResourceType": "5"},
		{"rasd:AddressOnParent": "0", "rasd:ElementName": "Hard disk 1", "rasd:HostResource": "ovf:/disk/vmdisk1", "rasd:InstanceID": "8", "rasd:Parent": "3", "rasd:ResourceType": "17"},
		{"rasd:AddressOnParent": "1", "rasd:ElementName": "Hard disk 2", "rasd:HostResource": "ovf:/disk/vmdisk2", "rasd:InstanceID": "9", "rasd:Parent": "4", "rasd:ResourceType": "17"},
		{"rasd:AddressOnParent": "10", "rasd:ElementName": "Hard disk 3", "rasd:HostResource": "ovf:/disk/vmdisk3", "rasd:InstanceID": "10", "rasd:Parent": "3", "rasd:ResourceType": "17"},
		{"rasd:AddressOnParent": "0", "rasd:ElementName": "Hard disk 4", "rasd:HostResource": "ovf:/disk/vmdisk4", "rasd:InstanceID": "11", "rasd:Parent": "5", "rasd:ResourceType": "17"},
		{"rasd:AddressOnParent": "1", "rasd:ElementName": "Hard disk 5", "rasd:HostResource": "ovf:/disk/vmdisk5", "rasd:InstanceID": "12", "rasd:Parent": "6", "rasd:ResourceType": "17"},
		{"rasd:AddressOnParent": "1", "rasd:ElementName": "Hard disk 6", "rasd:HostResource": "ovf:/disk/vmdisk6", "rasd:InstanceID": "13", "rasd:Parent": "3", "rasd:ResourceType": "17"},
		{"rasd:AddressOnParent": "0", "rasd:AutomaticAllocation": "false", "rasd:ElementName": "CD/DVD drive 1", "rasd:InstanceID": "14", "rasd:Parent": "7", "rasd:ResourceSubType": "vmware.cdrom.remotepassthrough", "rasd:ResourceType": "15", "required": "false"},
		{"rasd:AddressOnParent": "7", "rasd:AutomaticAllocation": "true", "rasd:Connection": "vmbr0", "rasd:Description": `VmxNet3 ethernet adapter on "vmbr0"`, "rasd:ElementName": "Network adapter 1", "rasd:InstanceID": "15", "rasd:ResourceSubType": "VmxNet3", "rasd:ResourceType": "10"},
		{"rasd:AddressOnParent": "8", "rasd:AutomaticAllocation": "false", "rasd:Connection": "vmbr1", "rasd:Description": `E1000e ethernet adapter on "vmbr1"`, "rasd:ElementName": "Network adapter 2", "rasd:InstanceID": "16", "rasd:ResourceSubType": "E1000e", "rasd:ResourceType": "10"},
	}
	if len(items) != len(want) {
		t.Fatalf("%d items, want %d: %v", len(items), len(want), items)
	}
	for i := range want {
		if fmt.Sprint(items[i]) != fmt.Sprint(want[i]) {
			t.Errorf("item %d\n got %v\nwant %v", i, items[i], want[i])
		}
	}
	if fmt.Sprint(s.HW.Configs) != "[{firmware efi} {bootOptions.efiSecureBootEnabled true}]" {
		t.Errorf("vmw:Config %+v", s.HW.Configs)
	}
	if len(e.Networks) != 2 {
		t.Errorf("networks %q", e.Networks)
	}

	// Back: the same hardware, the VirtIO disk now a SCSI one.
	var notes []string
	back, err := ParseOVF(ovf, collect(&notes))
	if err != nil {
		t.Fatal(err)
	}
	if back.Name != h.Name || back.CPUs() != 4 || back.Cores != 2 || back.MemoryMiB != 3072 || !back.EFI || !back.SecureBoot || back.OS.Proxmox != "win10" || back.Version != 14 {
		t.Errorf("back %+v", back)
	}
	var keys []string
	for _, d := range back.Disks {
		keys = append(keys, fmt.Sprintf("%s:%s:%d:%d", d.Key, d.File, d.Capacity, d.FileSize))
	}
	wantKeys := []string{"scsi0:vm-disk1.vmdk:2097152:1001", "sata1:vm-disk3.vmdk:1048576:1003", "scsi9:vm-disk4.vmdk:1048576:1004",
		"ide0:vm-disk5.vmdk:1048576:1005", "scsi16:vm-disk2.vmdk:1048576:1002", "scsi1:vm-disk7.vmdk:1048576:1007", "ide2::-1:-1"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("disks back\n got %q\nwant %q", keys, wantKeys)
	}
	if len(back.NICs) != 2 || back.NICs[0].Model != "vmxnet3" || back.NICs[1].Model != "e1000e" || !back.NICs[1].Disconnected || back.NICs[1].Network != "vmbr1" {
		t.Errorf("NICs back %+v", back.NICs)
	}
	if len(notes) != 0 {
		t.Errorf("notes reading back: %q", notes)
	}
}

// TestConfig checks the qemu-server.conf an OVF's hardware becomes: what
// Proxmox's restore needs, nothing to add.
func TestConfig(t *testing.T) {
	h, exp, err := fromConfig([]byte(testConfig), testDevices, "vm", 14, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range exp {
		if k >= 0 {
			h.Disks[k].File = "x.vmdk"
		}
	}
	back, err := ParseOVF(h.OVF(), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	conf := back.Config([]byte("seed"))
	want := `# imported by vmaconv from the OVF of web server
# UEFI (bios: ovmf) without the EFI variables an OVA does not hold: Proxmox starts the VM with temporary ones until it gets an EFI disk (qm set VMID --efidisk0 STORAGE:1,efitype=4m)
bios: ovmf
boot: order=scsi0;sata1;scsi9;ide0;scsi16;scsi1
cores: 2
ide0: local:ova-disk-3,size=1M
ide2: none,media=cdrom
memory: 3072
name: web-server
net0: vmxnet3=BC:24:11:00:6D:9A,bridge=vmbr0
net1: e1000e=BC:24:11:EC:11:0B,bridge=vmbr1,link_down=1
ostype: win10
sata1: local:ova-disk-1,size=1M
scsi0: local:ova-disk-0,size=2M
scsi1: local:ova-disk-5,size=1M
scsi16: local:ova-disk-4,size=1M
scsi9: local:ova-disk-2,size=1M
scsihw: pvscsi
sockets: 2
#qmdump#map:scsi0:drive-scsi0:::
#qmdump#map:sata1:drive-sata1:::
#qmdump#map:scsi9:drive-scsi9:::
#qmdump#map:ide0:drive-ide0:::
#qmdump#map:scsi16:drive-scsi16:::
#qmdump#map:scsi1:drive-scsi1:::
`
	if string(conf) != want {
		t.Errorf("config\n%s\nwant\n%s", conf, want)
	}
	// What Proxmox's restore checks: every device mapped, one to one,
	// every mapped key has its line.
	var devs []vma.Device
	for i, d := range back.Disks {
		if !d.CDROM {
			devs = append(devs, vma.Device{ID: i + 1, Name: d.Device, Size: d.Capacity})
		}
	}
	c, err := vma.CompleteConfig(conf, devs, "")
	if err != nil || len(c.Added) != 0 || len(c.Unmapped) != 0 || len(vma.UnattachedKeys(conf)) != 0 {
		t.Errorf("CompleteConfig: %+v, %v; unattached %v", c, err, vma.UnattachedKeys(conf))
	}
	if p := vma.RestoreProblems(&vma.Header{Configs: []format.Config{{Name: vma.ConfigName, Data: conf}}, Devices: devs}); len(p) != 1 || !strings.Contains(p[0], "no storage") {
		t.Errorf("restore problems %q", p)
	}
}

// TestParseLimits checks what an OVF may have more of than a Proxmox VM:
// NICs past net31 are left out (said in the config), CD-ROM drives
// without a free key too (noted), and disks without one are an error.
func TestParseLimits(t *testing.T) {
	h := &Hardware{Name: "many", Sockets: 1, Cores: 1, MemoryMiB: 512, Version: 14, OS: osTypes["l26"],
		Controllers: []Controller{{Bus: BusIDE}}}
	for range 40 {
		h.NICs = append(h.NICs, NIC{Model: "e1000", Network: "VM Network"})
	}
	for i := range 36 { // ide0-3, then scsi0-30, then none left
		h.Disks = append(h.Disks, Disk{Key: fmt.Sprintf("cd%d", i), CDROM: true, Unit: i % 2})
	}
	var notes []string
	back, err := ParseOVF(h.OVF(), collect(&notes))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(back.Config(nil))
	if len(back.NICs) != 32 || !strings.Contains(conf, "\n# 8 more network adapters of the OVF are left out") || !strings.Contains(conf, "\nnet31: ") {
		t.Errorf("NICs %d, config\n%s", len(back.NICs), conf)
	}
	if len(back.Disks) != 35 || back.Disks[4].Key != "scsi0" || !hasNote(notes, "a CD-ROM drive: no free disk key left for it: left out") {
		t.Errorf("%d CD-ROM drives, notes %q", len(back.Disks), notes)
	}
	h.NICs, h.Disks = nil, nil
	h.Controllers = []Controller{{Bus: BusSATA, SubType: "vmware.sata.ahci"}}
	for i := range 42 {
		h.Disks = append(h.Disks, Disk{Key: "x", Device: "x", Unit: i, Capacity: 512, File: "d.vmdk", FileSize: -1})
	}
	if _, err := ParseOVF(h.OVF(), func(string) {}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "more disks than a Proxmox VM holds") {
		t.Errorf("42 disks: %v", err)
	}
}

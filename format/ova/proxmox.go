package ova

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
)

// The mapping between Proxmox VM configs (qemu-server.conf) and the
// virtual hardware of an OVF: what an archive exported as an OVA becomes
// (fromConfig), and the config an OVA imported into an archive gets
// (Hardware.Config). Proxmox's own OVF and ESXi imports (pve-storage
// src/PVE/GuestImport/OVF.pm, src/PVE/Storage/ESXiPlugin.pm) are the
// model for the way in.

// settings returns a Proxmox config's own settings (before any section:
// a snapshot, [PENDING]), key to value.
func settings(conf []byte) map[string]string {
	s := map[string]string{}
	for _, line := range strings.Split(string(conf), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			break
		}
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if ok {
			s[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return s
}

// property splits a Proxmox property string (model=MAC,bridge=vmbr0) into
// its items, the first bare one under "" (a disk's volume).
func property(v string) map[string]string {
	p := map[string]string{}
	for i, item := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(item, "=")
		switch {
		case !ok && i == 0:
			p[""] = item
		case ok:
			p[k] = val
		}
	}
	return p
}

// count parses a config's positive integer setting (cores, sockets),
// def if it is absent; at most limit.
func count(s map[string]string, key string, def, limit int) (int, error) {
	v, ok := s[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > limit {
		return 0, fmt.Errorf("%s: %s: %q: want 1 to %d", vma.ConfigName, key, v, limit)
	}
	return n, nil
}

// Bounds of what an OVF describes, as VMware's largest VMs: vCPUs and
// memory (24 TiB).
const (
	maxCPUs      = 960
	maxMemoryMiB = 24 << 20
)

// scsiModels map Proxmox's scsihw to VMware's SCSI controller models
// (rasd:ResourceSubType), with a note where the guest sees another
// device.
var scsiModels = map[string]struct{ model, note string }{
	"lsi":                {"lsilogic", ""},
	"lsi53c810":          {"lsilogic", "scsihw lsi53c810 becomes an LSI Logic (53C1030) controller"},
	"megasas":            {"lsilogicsas", "scsihw megasas becomes an LSI Logic SAS controller: the guest needs its driver"},
	"pvscsi":             {"VirtualSCSI", ""},
	"virtio-scsi-pci":    {"VirtualSCSI", "scsihw virtio-scsi-pci becomes a VMware Paravirtual SCSI controller: the guest needs its driver (Linux has one; Windows gets it with VMware Tools)"},
	"virtio-scsi-single": {"VirtualSCSI", "scsihw virtio-scsi-single becomes a VMware Paravirtual SCSI controller: the guest needs its driver (Linux has one; Windows gets it with VMware Tools)"},
}

// nicModels map Proxmox NIC models to VMware's (rasd:ResourceSubType).
var nicModels = map[string]string{
	"e1000": "E1000", "e1000-82540em": "E1000", "e1000-82544gc": "E1000", "e1000-82545em": "E1000",
	"e1000e": "E1000e", "vmxnet3": "VmxNet3",
}

// nicModelRE matches the models of Proxmox's net lines
// (src/PVE/QemuServer/Network.pm, $nic_model_list).
var nicModelRE = regexp.MustCompile(`^(?:e1000(?:-8254[045][a-z]{2})?|e1000e|i8255[179][a-z]*|ne2k_(?:isa|pci)|pcnet|rtl8139|virtio|vmxnet3)$`)

// bridgeRE matches the names of Proxmox's bridges.
var bridgeRE = regexp.MustCompile(`^vmbr[0-9]{1,4}$`)

// macRE matches a unicast MAC address as configs write them.
var macRE = regexp.MustCompile(`^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$`)

// exported is what fromConfig makes of one device of an archive: the
// disk of the Hardware it becomes, or -1 if it is left out.
type exported []int

// fromConfig describes the VM whose Proxmox config is conf (nil: none
// was given), with the archive's devices devs, as the virtual hardware of
// an OVF of hardware version hw: the disks on their controllers,
// VirtIO disks on a VMware Paravirtual SCSI controller of their own, the
// NICs as the VMware models nearest them, EFI firmware for bios: ovmf
// or an EFI disk. A vmstate stream, the EFI disk and a TPM state are no
// disks of the OVF, and are left out (said). name is the VM's name when
// the config has none. note is told what changes on the way.
func fromConfig(conf []byte, devs []format.Device, name string, hw int, note func(string)) (*Hardware, exported, error) {
	notef := func(f string, args ...any) { note(fmt.Sprintf(f, args...)) }
	s := settings(conf)
	h := &Hardware{Name: cleanName(s["name"]), Version: hw}
	if h.Name == "" {
		h.Name = cleanName(name)
	}
	var err error
	if h.Sockets, err = count(s, "sockets", 1, 64); err != nil {
		return nil, nil, err
	}
	if h.Cores, err = count(s, "cores", 1, maxCPUs); err != nil {
		return nil, nil, err
	}
	if h.CPUs() > maxCPUs {
		return nil, nil, fmt.Errorf("%s: %d sockets of %d cores: over the %d virtual CPUs VMware gives a VM", vma.ConfigName, h.Sockets, h.Cores, maxCPUs)
	}
	h.MemoryMiB = 512 // qemu-server's default
	if v, ok := s["memory"]; ok {
		p := property(v)
		m := p[""]
		if m == "" {
			m = p["current"]
		}
		n, err := strconv.ParseInt(m, 10, 64)
		if err != nil || n < 16 || n > maxMemoryMiB {
			return nil, nil, fmt.Errorf("%s: memory: %q: want 16 to %d MiB", vma.ConfigName, v, maxMemoryMiB)
		}
		h.MemoryMiB = n
	}
	if h.MemoryMiB%4 != 0 {
		notef("memory: %d MiB rounded up to %d: VMware gives memory in multiples of 4 MiB", h.MemoryMiB, (h.MemoryMiB+3)&^3)
		h.MemoryMiB = (h.MemoryMiB + 3) &^ 3
	}
	ostype, ok := exportOS(s["ostype"], hw)
	if !ok {
		notef("ostype %q: exported as other (64-bit)", s["ostype"])
	}
	h.OS = ostype

	hasDev := func(name string) bool {
		return slices.ContainsFunc(devs, func(d format.Device) bool { return d.Name == name })
	}
	h.EFI = s["bios"] == "ovmf" || hasDev("drive-efidisk0")
	if h.EFI {
		h.SecureBoot = property(s["efidisk0"])["pre-enrolled-keys"] == "1"
	}

	scsi := scsiModels["lsi"] // qemu-server's default scsihw
	if v, ok := s["scsihw"]; ok {
		m, known := scsiModels[v]
		if !known {
			return nil, nil, fmt.Errorf("%s: scsihw %q is not a SCSI controller Proxmox has", vma.ConfigName, v)
		}
		scsi = m
	}

	b := &hwBuilder{h: h, ctrl: map[ctrlID]int{}, used: map[ctrlID]map[int]bool{}}
	out := make(exported, len(devs))
	usedSCSI := false
	var virtio, others []int // devices placed after the disks of known keys
	for i, d := range devs {
		out[i] = -1
		key, ok := vma.DiskKey(d.Name)
		if n, err := vma.NormalizeDeviceName(d.Name); !ok && err == nil {
			key, ok = vma.DiskKey(n) // a disk key as a name (create scsi0=disk.raw)
		}
		switch {
		case d.Name == vma.VMStateName:
			notef("%s: the VM's saved RAM is no disk of an OVA: left out (the VM starts powered off)", d.Name)
			continue
		case key == "efidisk0":
			notef("%s: the EFI variables are not exported (an OVA holds none): the VM gets UEFI firmware with fresh ones", d.Name)
			continue
		case key == "tpmstate0":
			notef("%s: the TPM state is not exported (VMware keeps a vTPM only in an encrypted VM): add a vTPM after the import", d.Name)
			continue
		case !ok:
			others = append(others, i)
			continue
		case strings.HasPrefix(key, "virtio"):
			virtio = append(virtio, i)
			continue
		}
		bus := Bus(strings.TrimRight(key, "0123456789"))
		n, _ := strconv.Atoi(key[len(bus):])
		if bus == BusSCSI {
			usedSCSI = true
		}
		out[i] = b.disk(bus, scsi.model, n, key, d)
	}
	if usedSCSI && scsi.note != "" {
		note(scsi.note)
	}
	// VirtIO disks: on VMware Paravirtual SCSI controllers after the
	// SCSI ones, each at the slot its number gives.
	first := b.scsiControllers()
	for _, i := range virtio {
		key, _ := vma.DiskKey(devs[i].Name)
		n, _ := strconv.Atoi(strings.TrimPrefix(key, "virtio"))
		number, unit := slot(BusSCSI, n)
		out[i] = b.add(ctrlID{BusSCSI, first + number}, "VirtualSCSI", unit, Disk{Key: key, Device: devs[i].Name, Capacity: devs[i].Size})
		notef("%s: a VirtIO block disk becomes a disk on a VMware Paravirtual SCSI controller: the guest needs its driver to boot from it (Linux has one; Windows gets it with VMware Tools)", devs[i].Name)
	}
	// Devices that are no Proxmox disk: on the first SCSI controller's
	// free units.
	for _, i := range others {
		out[i] = b.free(scsi.model, Disk{Device: devs[i].Name, Capacity: devs[i].Size})
		notef("%s is not a Proxmox disk name: exported as a SCSI disk", devs[i].Name)
	}
	if n := b.scsiControllers(); n > 4 {
		return nil, nil, format.Unsupported("the disks need %d SCSI controllers, VMware gives a VM 4", n)
	}
	// CD-ROM drives, empty, where the config has them.
	for _, k := range slices.Sorted(maps.Keys(s)) {
		bus := Bus(strings.TrimRight(k, "0123456789"))
		n, err := strconv.Atoi(k[len(bus):])
		if err != nil || busSlots[bus] == 0 || n >= busSlots[bus] || property(s[k])["media"] != "cdrom" {
			continue
		}
		b.disk(bus, scsi.model, n, k, format.Device{})
	}
	if h.Version < 10 && slices.ContainsFunc(h.Controllers, func(c Controller) bool { return c.Bus == BusSATA }) {
		return nil, nil, format.Unsupported("hwversion %d: SATA controllers need virtual hardware version 10 or later", h.Version)
	}

	nets, err := nics(s, notef)
	if err != nil {
		return nil, nil, err
	}
	h.NICs = nets
	return h, out, nil
}

// nics returns the network adapters of a config's net lines, in order.
func nics(s map[string]string, notef func(string, ...any)) ([]NIC, error) {
	var keys []int
	for k := range s {
		if n, err := strconv.Atoi(strings.TrimPrefix(k, "net")); err == nil && strings.HasPrefix(k, "net") && n >= 0 && n < 32 {
			keys = append(keys, n)
		}
	}
	slices.Sort(keys)
	var out []NIC
	for _, n := range keys {
		key := "net" + strconv.Itoa(n)
		nic := NIC{Network: "VM Network"}
		model := ""
		for i, item := range strings.Split(s[key], ",") {
			k, v, _ := strings.Cut(item, "=")
			switch {
			case i == 0 && nicModelRE.MatchString(k):
				model, nic.MAC = k, v
			case k == "model":
				model = v
			case k == "macaddr":
				nic.MAC = v
			case k == "bridge" && v != "":
				nic.Network = cleanName(v)
			case k == "link_down":
				nic.Disconnected = v == "1"
			}
		}
		if !nicModelRE.MatchString(model) {
			return nil, fmt.Errorf("%s: %s: %q is not a NIC model Proxmox has", vma.ConfigName, key, model)
		}
		nic.Model = model
		if _, ok := nicModels[model]; !ok {
			to := "E1000"
			if model == "virtio" {
				to = "VmxNet3"
			}
			notef("%s: a %s NIC becomes a VMware %s (the guest needs its driver)", key, model, to)
		}
		out = append(out, nic)
	}
	return out, nil
}

// ctrlID names a controller: its bus and number.
type ctrlID struct {
	bus    Bus
	number int
}

// hwBuilder places disks on controllers, adding controllers as needed.
type hwBuilder struct {
	h    *Hardware
	ctrl map[ctrlID]int          // index in h.Controllers
	used map[ctrlID]map[int]bool // units taken
}

// disk places the disk with key (bus and index n) at its slot.
func (b *hwBuilder) disk(bus Bus, scsiModel string, n int, key string, d format.Device) int {
	number, unit := slot(bus, n)
	model := map[Bus]string{BusSATA: "vmware.sata.ahci", BusIDE: "PIIX4", BusSCSI: scsiModel}[bus]
	disk := Disk{Key: key, Device: d.Name, Capacity: d.Size, CDROM: d.Name == "", FileSize: -1}
	return b.add(ctrlID{bus, number}, model, unit, disk)
}

// free places a disk at the first free unit of a SCSI controller.
func (b *hwBuilder) free(scsiModel string, d Disk) int {
	for i := 0; ; i++ {
		number, unit := slot(BusSCSI, i)
		id := ctrlID{BusSCSI, number}
		if !b.used[id][unit] {
			return b.add(id, scsiModel, unit, d)
		}
	}
}

// add puts disk d at unit of the controller id (of model), and returns
// its index among the disks.
func (b *hwBuilder) add(id ctrlID, model string, unit int, d Disk) int {
	c, ok := b.ctrl[id]
	if !ok {
		c = len(b.h.Controllers)
		b.ctrl[id] = c
		b.used[id] = map[int]bool{}
		b.h.Controllers = append(b.h.Controllers, Controller{Bus: id.bus, Number: id.number, SubType: model})
	}
	b.used[id][unit] = true
	d.Controller, d.Unit = c, unit
	if d.FileSize == 0 {
		d.FileSize = -1
	}
	b.h.Disks = append(b.h.Disks, d)
	return len(b.h.Disks) - 1
}

// scsiControllers returns how many SCSI controllers are needed: one past
// the highest number used.
func (b *hwBuilder) scsiControllers() int {
	n := 0
	for id := range b.ctrl {
		if id.bus == BusSCSI {
			n = max(n, id.number+1)
		}
	}
	return n
}

// cleanName keeps the printable characters of a name from a config or
// an OVF (and turns the others into '_'), at most 128 of them.
func cleanName(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == 128 {
			break
		}
		if !unicode.IsPrint(r) {
			r = '_'
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// dnsName turns a VM's name into one Proxmox takes (a DNS name), as its
// ESXi import does: white space becomes '-', then only letters, digits,
// '-' and '.' are kept, without leading or trailing '-' and '.'.
func dnsName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			b.WriteByte('-')
		case r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '.'):
			b.WriteRune(r)
		}
	}
	n := strings.Trim(b.String(), "-.")
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-.")
	}
	return n
}

// Config returns the qemu-server.conf of an archive made of the VM: its
// name, CPUs, memory, firmware, guest, SCSI controller model (scsihw),
// disks and CD-ROM drives under their keys, NICs (on bridge vmbr0, or the
// one their network names), boot order (the disks in the OVF's order),
// and a #qmdump#map line for each disk, naming no storage (qmrestore
// --storage chooses it). The disks' volumes are placeholders, replaced by
// the restore. seed makes the MAC addresses of NICs that have none
// (Proxmox's prefix BC:24:11 and three bytes of sha256(seed, NIC
// number)): the same package gives the same ones, as a backup restored
// twice does. What the VM loses on the way (EFI variables, SCSI models,
// NIC models) is said in comment lines at the top, which Proxmox shows
// as the VM's notes.
func (h *Hardware) Config(seed []byte) []byte {
	remarks := append([]string(nil), h.remarks...)
	notef := func(f string, args ...any) { remarks = append(remarks, fmt.Sprintf(f, args...)) }
	set := map[string]string{
		"cores":  strconv.Itoa(h.Cores),
		"memory": strconv.FormatInt(h.MemoryMiB, 10),
		"ostype": h.OS.Proxmox,
	}
	if h.Sockets > 1 {
		set["sockets"] = strconv.Itoa(h.Sockets)
	}
	if n := dnsName(h.Name); n != "" {
		set["name"] = n
	}
	if h.EFI {
		set["bios"] = "ovmf"
		notef("UEFI (bios: ovmf) without the EFI variables an OVA does not hold: Proxmox starts the VM with temporary ones until it gets an EFI disk (qm set VMID --efidisk0 STORAGE:1,efitype=4m)")
	}
	scsihw := ""
	var boot, mapLines, others []string
	vol := 0
	for _, d := range h.Disks {
		if d.CDROM {
			set[d.Key] = "none,media=cdrom"
			continue
		}
		if d.Controller >= 0 {
			if c := h.Controllers[d.Controller]; c.Bus == BusSCSI {
				hw := "lsi"
				switch m := strings.ToLower(c.SubType); m {
				case "virtualscsi":
					hw = "pvscsi"
				case "virtioscsi", "virtio-scsi":
					hw = "virtio-scsi-single"
				}
				if scsihw == "" {
					scsihw = hw
				} else if hw != scsihw && !slices.Contains(others, hw) {
					others = append(others, hw)
				}
			}
		}
		set[d.Key] = fmt.Sprintf("local:ova-disk-%d,size=%s", vol, vma.FormatSize(d.Capacity))
		vol++
		boot = append(boot, d.Key)
		mapLines = append(mapLines, vma.MapLine{VirtDev: d.Key, DevName: d.Device}.String())
	}
	if len(others) > 0 {
		notef("the OVF's SCSI controllers are of several models, a Proxmox VM's all of one: scsihw %s (the first disk's) for the disks of %s controllers too", scsihw, strings.Join(others, ", "))
	}
	if h.EFI && (scsihw == "" || scsihw == "lsi") && slices.ContainsFunc(h.Disks, func(d Disk) bool { return strings.HasPrefix(d.Key, "scsi") }) {
		// As Proxmox's ESXi import: OVMF has no LSI driver.
		scsihw = "virtio-scsi-single"
		if isWindows(h.OS.Proxmox) {
			scsihw = "pvscsi"
		}
		notef("scsihw %s, not lsi: OVMF has no driver for LSI controllers", scsihw)
	}
	if scsihw == "" && h.OS.Proxmox == "l26" {
		scsihw = "virtio-scsi-single"
	}
	if scsihw != "" {
		set["scsihw"] = scsihw
	}
	if len(boot) > 0 {
		set["boot"] = "order=" + strings.Join(boot, ";")
	}
	for i, n := range h.NICs {
		mac := n.MAC
		if !macRE.MatchString(mac) || strings.IndexByte("13579bBdDfF", mac[1]) >= 0 { // none, or multicast
			sum := sha256.Sum256(append(append([]byte(nil), seed...), byte(i)))
			mac = fmt.Sprintf("BC:24:11:%02X:%02X:%02X", sum[0], sum[1], sum[2])
		}
		bridge := "vmbr0"
		if bridgeRE.MatchString(n.Network) {
			bridge = n.Network // an OVA vmaconv wrote names Proxmox's bridges
		}
		line := fmt.Sprintf("%s=%s,bridge=%s", n.Model, strings.ToUpper(mac), bridge)
		if n.Disconnected {
			line += ",link_down=1"
		}
		set["net"+strconv.Itoa(i)] = line
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# imported by vmaconv from the OVF of %s\n", cleanName(h.Name))
	for _, r := range remarks {
		fmt.Fprintf(&b, "# %s\n", r)
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&b, "%s: %s\n", k, set[k])
	}
	for _, m := range mapLines {
		b.WriteString(m + "\n")
	}
	return []byte(b.String())
}

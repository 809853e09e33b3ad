package vma

import (
	"bytes"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What Proxmox VE's restore (qmrestore, qemu-server's restore_vma_archive)
// needs from an archive, as its code parses it; docs/proxmox-restore.md
// cites the sources.

// ConfigName is the config blob qmrestore reads; without it a restore
// dies ("unable to read qemu-server.conf").
const ConfigName = "qemu-server.conf"

// diskKeyRE matches the disk keys of a VM config that a backup holds, with
// qemu-server's limits (ide0-3, sata0-5, scsi0-30, virtio0-15).
var diskKeyRE = regexp.MustCompile(`^(?:ide[0-3]|sata[0-5]|scsi(?:[12]?[0-9]|30)|virtio(?:1[0-5]|[0-9])|efidisk0|tpmstate0)$`)

// DiskKey returns the config key of a device vzdump names: "drive-scsi0"
// is scsi0, "drive-tpmstate0-backup" is tpmstate0.
func DiskKey(device string) (string, bool) {
	if device == "drive-tpmstate0-backup" {
		return "tpmstate0", true
	}
	key, ok := strings.CutPrefix(device, "drive-")
	if !ok || !diskKeyRE.MatchString(key) || key == "tpmstate0" {
		return "", false
	}
	return key, true
}

// DeviceName returns the device name vzdump gives the disk with config key
// key: drive-<key>, and drive-tpmstate0-backup for tpmstate0.
func DeviceName(key string) string {
	if key == "tpmstate0" {
		return "drive-tpmstate0-backup"
	}
	return "drive-" + key
}

// NormalizeDeviceName returns the device name for a disk given as a
// device name ("drive-scsi0") or as its config key ("scsi0"). Anything
// else, VMStateName included, is an error that lists what is accepted.
func NormalizeDeviceName(s string) (string, error) {
	if _, ok := DiskKey(s); ok {
		return s, nil
	}
	if diskKeyRE.MatchString(s) {
		return DeviceName(s), nil
	}
	if s == VMStateName {
		return "", fmt.Errorf("%q names a RAM-state stream, not a disk", s)
	}
	return "", fmt.Errorf("%q is not a Proxmox disk: use drive-<key> or <key> with a key of ide0-3, sata0-5, scsi0-30, virtio0-15, efidisk0 or tpmstate0 (drive-tpmstate0-backup)", s)
}

// mapLineRE is qemu-server's parse of a backup hint:
// #qmdump#map:<virtdev>:<devname>:<storeid>:<format>:
var mapLineRE = regexp.MustCompile(`^#qmdump#map:(\S+):(\S+):(\S*):(\S*):$`)

// MapLine is a "#qmdump#map" line of a config: it tells qmrestore which
// disk key (VirtDev) archive device DevName restores to; an empty StoreID
// means the storage given to qmrestore, an empty Format raw.
type MapLine struct {
	VirtDev, DevName, StoreID, Format string
}

// ParseMapLines returns the map lines of a config, as qemu-server reads
// them.
func ParseMapLines(conf []byte) []MapLine {
	var out []MapLine
	for _, line := range strings.Split(string(conf), "\n") {
		if m := mapLineRE.FindStringSubmatch(line); m != nil {
			out = append(out, MapLine{m[1], m[2], m[3], m[4]})
		}
	}
	return out
}

// DropMapLines returns conf without the map lines for devices not in
// keep (a config carried into an archive that holds fewer devices), and
// the lines dropped.
func DropMapLines(conf []byte, keep []Device) ([]byte, []MapLine) {
	have := map[string]bool{}
	for _, d := range keep {
		have[d.Name] = true
	}
	var out []string
	var dropped []MapLine
	for _, line := range strings.Split(string(conf), "\n") {
		if m := mapLineRE.FindStringSubmatch(line); m != nil && !have[m[2]] {
			dropped = append(dropped, MapLine{m[1], m[2], m[3], m[4]})
			continue
		}
		out = append(out, line)
	}
	return []byte(strings.Join(out, "\n")), dropped
}

// CompleteConfig makes conf (a qemu-server.conf) restorable with the
// archive's devices: it checks the map lines present (each must name a
// device of the archive and a disk key) and adds one for every disk
// without one, before the first section ("[snapshot]"), as vzdump writes
// them. It returns the config and the map lines it added. Devices that are
// not Proxmox disks (no disk key) cannot be mapped: they are returned in
// unmapped.
func CompleteConfig(conf []byte, devs []Device) (out []byte, added []MapLine, unmapped []string, err error) {
	mapped := map[string]bool{}
	have := map[string]bool{}
	for _, d := range devs {
		have[d.Name] = true
	}
	for _, m := range ParseMapLines(conf) {
		if !have[m.DevName] {
			return nil, nil, nil, fmt.Errorf("%s maps %s to device %s, which the archive does not hold (qmrestore: \"archive does not contain data for drive '%s'\")", ConfigName, m.VirtDev, m.DevName, m.VirtDev)
		}
		if !diskKeyRE.MatchString(m.VirtDev) {
			return nil, nil, nil, fmt.Errorf("%s maps device %s to %q, which is not a disk key", ConfigName, m.DevName, m.VirtDev)
		}
		mapped[m.DevName] = true
	}
	var lines []string
	for _, d := range devs {
		if d.IsVMState() || mapped[d.Name] {
			continue
		}
		key, ok := DiskKey(d.Name)
		if !ok {
			unmapped = append(unmapped, d.Name)
			continue
		}
		m := MapLine{VirtDev: key, DevName: d.Name}
		added = append(added, m)
		lines = append(lines, m.String())
	}
	if len(lines) == 0 {
		return conf, nil, unmapped, nil
	}
	// Before the first section, at the end of the VM's own settings.
	text := string(conf)
	at := len(text)
	for i := 0; i < len(text); {
		end := strings.IndexByte(text[i:], '\n')
		if end < 0 {
			end = len(text) - i
		}
		if strings.HasPrefix(text[i:i+end], "[") {
			at = i
			break
		}
		i += end + 1
	}
	head := text[:at]
	if head != "" && !strings.HasSuffix(head, "\n") {
		head += "\n"
	}
	return []byte(head + strings.Join(lines, "\n") + "\n" + text[at:]), added, unmapped, nil
}

// String returns the line as vzdump writes it.
func (m MapLine) String() string {
	return fmt.Sprintf("#qmdump#map:%s:%s:%s:%s:", m.VirtDev, m.DevName, m.StoreID, m.Format)
}

// GenerateConfig returns a minimal qemu-server.conf that restores devs as
// the disks of VM vmid: each disk under its config key with its size, a
// boot order from the first bootable disk, what the disks need (OVMF for
// an EFI disk, a SCSI controller), and the map lines. Devices that are not
// Proxmox disks are left out.
func GenerateConfig(vmid int, name string, devs []Device) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# written by vmaconv: a minimal configuration; adjust it after the restore\n")
	var keys []string
	byKey := map[string]Device{}
	for _, d := range devs {
		if key, ok := DiskKey(d.Name); ok {
			keys = append(keys, key)
			byKey[key] = d
		}
	}
	boot := ""
	for _, k := range keys {
		if k != "efidisk0" && k != "tpmstate0" {
			boot = k
			break
		}
	}
	// Settings in sorted key order, as Proxmox writes a config.
	settings := map[string]string{"cores": "1", "memory": "2048", "ostype": "other"}
	if _, ok := byKey["efidisk0"]; ok {
		settings["bios"] = "ovmf"
	}
	if boot != "" {
		settings["boot"] = "order=" + boot
	}
	if name != "" {
		settings["name"] = name
	}
	for i, k := range keys {
		opts := ""
		switch k {
		case "efidisk0":
			opts = ",efitype=4m"
		case "tpmstate0":
			opts = ",version=v2.0"
		}
		settings[k] = fmt.Sprintf("local:vm-%d-disk-%d%s,size=%s", vmid, i, opts, FormatSize(byKey[k].Size))
		if strings.HasPrefix(k, "scsi") {
			settings["scsihw"] = "virtio-scsi-single"
		}
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s: %s\n", k, settings[k])
	}
	for _, k := range keys {
		b.WriteString(MapLine{VirtDev: k, DevName: byKey[k].Name}.String() + "\n")
	}
	return b.Bytes()
}

// FormatSize writes a disk size as Proxmox configs do: with the largest
// unit (T, G, M, K) that divides it, else in bytes.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		n int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// diskLineRE is qemu-server's restore_update_config_line: the disk lines
// whose volume a restore replaces.
var diskLineRE = regexp.MustCompile(`^((ide|scsi|virtio|sata|efidisk|tpmstate)\d+):\s*(\S+)\s*$`)

// UnattachedKeys returns the disk keys a config maps (#qmdump#map) but
// has no disk line for in its own settings (before any section): Proxmox
// restores those disks but does not attach them to the VM.
func UnattachedKeys(conf []byte) []string {
	lines := map[string]bool{}
	for _, k := range ConfigDiskKeys(conf) {
		lines[k] = true
	}
	var out []string
	for _, m := range ParseMapLines(conf) {
		if !lines[m.VirtDev] {
			out = append(out, m.VirtDev)
		}
	}
	return out
}

// ConfigDiskKeys returns the disk keys (scsi0, efidisk0, …) that a VM
// config's own settings (before any snapshot or pending section) give a
// volume, in the order they appear.
func ConfigDiskKeys(conf []byte) []string {
	var keys []string
	for _, line := range strings.Split(string(conf), "\n") {
		if strings.HasPrefix(line, "[") {
			break
		}
		if m := diskLineRE.FindStringSubmatch(line); m != nil {
			keys = append(keys, m[1])
		}
	}
	return keys
}

// RestoreProblems lists why Proxmox's restore would refuse an archive
// with this header (no qemu-server.conf, a device without a map line, a
// map line for a device it does not hold); none means it would restore.
func RestoreProblems(h *Header) []string {
	var p []string
	conf, ok := h.Config(ConfigName)
	if !ok {
		return append(p, "no qemu-server.conf (qmrestore: \"unable to read qemu-server.conf\")")
	}
	mapped := map[string]bool{}
	for _, m := range ParseMapLines(conf.Data) {
		if _, ok := h.Device(m.DevName); !ok {
			p = append(p, fmt.Sprintf("a map line for %s, which the archive does not hold (qmrestore: \"archive does not contain data for drive '%s'\")", m.DevName, m.VirtDev))
		}
		mapped[m.DevName] = true
	}
	for _, d := range h.Devices {
		if !mapped[d.Name] {
			p = append(p, fmt.Sprintf("no #qmdump#map line for %s (qmrestore: \"found no device mapping information for device '%s'\")", d.Name, d.Name))
		}
	}
	return p
}

// archiveNameRE is pve-storage's archive_info: the names Proxmox accepts
// at all.
var archiveNameRE = regexp.MustCompile(`^vzdump-(lxc|openvz|qemu)-.+\.(tgz|(tar|vma)(\.(gz|lzo|zst|bz2))?)$`)

// stdNameRE is its "standard name", which gives the VMID and the backup
// time to the GUI and to pruning.
var stdNameRE = regexp.MustCompile(`^vzdump-qemu-[1-9][0-9]{2,8}-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}\.vma(\.(gz|lzo|zst|bz2))?$`)

// CheckArchiveName says whether Proxmox accepts a backup file's name
// (ok), and whether it is the standard name vzdump gives (std).
func CheckArchiveName(file string) (ok, std bool) {
	base := path.Base(file)
	return archiveNameRE.MatchString(base), stdNameRE.MatchString(base)
}

// ArchiveName returns the name vzdump gives a backup of VM vmid made at
// t (in t's location, local time for vzdump): vzdump-qemu-<vmid>-
// YYYY_MM_DD-HH_MM_SS.vma, then ext (".zst", ".gz" or "").
func ArchiveName(vmid int, t time.Time, ext string) string {
	return fmt.Sprintf("vzdump-qemu-%d-%s.vma%s", vmid, t.Format("2006_01_02-15_04_05"), ext)
}

// ValidVMID reports whether n is a VMID Proxmox names backups with
// (100 to 999999999).
func ValidVMID(n int) bool { return n >= 100 && n <= 999999999 }

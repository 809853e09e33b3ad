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

// mapLineRE is qemu-server's parse of a backup hint
// (src/PVE/QemuServer.pm:6612 at e6352be6):
// #qmdump#map:<virtdev>:<devname>:<storeid>:<format>:
var mapLineRE = regexp.MustCompile(`^#qmdump#map:(\S+):(\S+):(\S*):(\S*):$`)

// MapLine is a "#qmdump#map" line of a config: it tells qmrestore which
// disk key (VirtDev) archive device DevName restores to, on which storage
// (StoreID) and in which format; an empty StoreID means the storage given
// to qmrestore, or "local" without one; an empty Format raw.
type MapLine struct {
	VirtDev, DevName, StoreID, Format string
}

// ParseMapLines returns the map lines of a config, as qemu-server reads
// them: every line, in sections too.
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

// mappingProblems checks that map lines pair devices and disk keys one
// to one: qemu-server keeps one volume per disk key and one disk key per
// device (src/PVE/QemuServer.pm:6613-6631), and vma extract one path per
// device (the last map line wins). A device mapped to two keys is
// written into one of the two volumes allocated for it, the other is
// attached empty; a key mapped from two devices gets the last one, and
// vma extract dies on the other ("no device name mapping for …").
// Repeating the same line changes nothing.
func mappingProblems(lines []MapLine) []string {
	var p []string
	keyOf := map[string]string{} // device -> key
	devOf := map[string]string{} // key -> device
	for _, m := range lines {
		if k, ok := keyOf[m.DevName]; ok && k != m.VirtDev {
			p = append(p, fmt.Sprintf("%s is mapped to both %s and %s (qmrestore writes it into one volume and attaches an empty one as the other)", m.DevName, k, m.VirtDev))
		}
		if d, ok := devOf[m.VirtDev]; ok && d != m.DevName {
			p = append(p, fmt.Sprintf("%s is mapped from both %s and %s (qmrestore keeps one: vma extract: \"no device name mapping for %s\")", m.VirtDev, d, m.DevName, d))
		}
		keyOf[m.DevName], devOf[m.VirtDev] = m.VirtDev, m.DevName
	}
	return p
}

// A Completion is a config made restorable by CompleteConfig.
type Completion struct {
	Config []byte
	// Added are the map lines added, one per disk that had none.
	Added []MapLine
	// Retargeted are map lines present whose storage was replaced by the
	// one asked for, as they now read.
	Retargeted []MapLine
	// Unmapped are devices that are not Proxmox disks (no disk key): no
	// map line can name them.
	Unmapped []string
}

// CompleteConfig makes conf (a qemu-server.conf) restorable with the
// archive's devices: it checks the map lines present (each must name a
// device of the archive and a disk key, devices and keys one to one) and
// adds one for every disk without one, before the first section
// ("[snapshot]", "[PENDING]", …), after the VM's own settings, where
// vzdump writes them. An added line takes its storage and format from
// the disk's line in the VM's own settings, as vzdump does (see
// DiskLine). A non-empty storage replaces the storage of every map line,
// present ones included (qmrestore --storage does the same on restore).
func CompleteConfig(conf []byte, devs []Device, storage string) (Completion, error) {
	have := map[string]bool{}
	for _, d := range devs {
		have[d.Name] = true
	}
	present := ParseMapLines(conf)
	mapped := map[string]bool{}
	for _, m := range present {
		if !have[m.DevName] {
			return Completion{}, fmt.Errorf("%s maps %s to device %s, which the archive does not hold (qmrestore: \"archive does not contain data for drive '%s'\")", ConfigName, m.VirtDev, m.DevName, m.VirtDev)
		}
		if !diskKeyRE.MatchString(m.VirtDev) {
			return Completion{}, fmt.Errorf("%s maps device %s to %q, which is not a disk key", ConfigName, m.DevName, m.VirtDev)
		}
		mapped[m.DevName] = true
	}
	var c Completion
	disks := map[string]DiskLine{}
	for _, l := range ConfigDisks(conf) {
		disks[l.Key] = l
	}
	taken := map[string]bool{} // disk keys mapped
	for _, m := range present {
		taken[m.VirtDev] = true
	}
	var lines []MapLine
	for _, d := range devs {
		if d.IsVMState() || mapped[d.Name] {
			continue
		}
		key, ok := DiskKey(d.Name)
		if !ok {
			c.Unmapped = append(c.Unmapped, d.Name)
			continue
		}
		m := MapLine{VirtDev: key, DevName: d.Name}
		if l, ok := disks[key]; ok { // a CD-ROM line gives none
			m.StoreID, m.Format = l.StoreID, l.Format
		}
		if storage != "" {
			m.StoreID = storage
		}
		lines = append(lines, m)
	}
	if p := mappingProblems(append(present, lines...)); len(p) > 0 {
		return Completion{}, fmt.Errorf("%s: %s", ConfigName, p[0])
	}
	text := string(conf)
	if storage != "" {
		text, c.Retargeted = setMapStorage(text, storage)
	}
	c.Added = lines
	c.Config = []byte(text)
	if len(lines) == 0 {
		return c, nil
	}
	var add strings.Builder
	for _, m := range lines {
		add.WriteString(m.String() + "\n")
	}
	head, rest := splitSections(text)
	if head != "" && !strings.HasSuffix(head, "\n") {
		head += "\n"
	}
	c.Config = []byte(head + add.String() + rest)
	return c, nil
}

// setMapStorage gives every map line of text the storage, and returns
// the lines it changed.
func setMapStorage(text, storage string) (string, []MapLine) {
	var changed []MapLine
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		if m := mapLineRE.FindStringSubmatch(line); m != nil && m[3] != storage {
			ml := MapLine{m[1], m[2], storage, m[4]}
			lines[i] = ml.String()
			changed = append(changed, ml)
		}
	}
	return strings.Join(lines, "\n"), changed
}

// splitSections splits a VM config into its own settings (head) and its
// sections (rest, from the first line that starts with "[": a snapshot,
// [PENDING] or [special:cloudinit]).
func splitSections(text string) (head, rest string) {
	for i := 0; i < len(text); {
		if text[i] == '[' {
			return text[:i], text[i:]
		}
		end := strings.IndexByte(text[i:], '\n')
		if end < 0 {
			break
		}
		i += end + 1
	}
	return text, ""
}

// String returns the line as vzdump writes it.
func (m MapLine) String() string {
	return fmt.Sprintf("#qmdump#map:%s:%s:%s:%s:", m.VirtDev, m.DevName, m.StoreID, m.Format)
}

// GenerateConfig returns a minimal qemu-server.conf that restores devs as
// the disks of VM vmid: each disk under its config key with its size, a
// boot order from the first bootable disk, what the disks need (OVMF for
// an EFI disk, a SCSI controller), and the map lines, which name storage
// (empty: the storage given to qmrestore). Devices that are not Proxmox
// disks are left out.
func GenerateConfig(vmid int, name, storage string, devs []Device) []byte {
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
	// The disk lines' volumes are replaced on restore; they name the
	// storage the restore falls back to.
	store := storage
	if store == "" {
		store = "local"
	}
	for i, k := range keys {
		opts := ""
		switch k {
		case "efidisk0":
			opts = ",efitype=4m"
		case "tpmstate0":
			opts = ",version=v2.0"
		}
		settings[k] = fmt.Sprintf("%s:vm-%d-disk-%d%s,size=%s", store, vmid, i, opts, FormatSize(byKey[k].Size))
		if strings.HasPrefix(k, "scsi") {
			settings["scsihw"] = "virtio-scsi-single"
		}
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s: %s\n", k, settings[k])
	}
	for _, k := range keys {
		b.WriteString(MapLine{VirtDev: k, DevName: byKey[k].Name, StoreID: storage}.String() + "\n")
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

// diskLineRE is qemu-server's restore_update_config_line
// (src/PVE/QemuServer.pm:6734): the disk lines whose volume a restore
// replaces.
var diskLineRE = regexp.MustCompile(`^((ide|scsi|virtio|sata|efidisk|tpmstate)\d+):\s*(\S+)\s*$`)

// volumeIDRE is pve-storage's parse_volume_id (src/PVE/Storage/Plugin.pm:423
// at 0c56bad): <storage>:<volume name>.
var volumeIDRE = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)

// storageIDRE is a storage ID as Proxmox accepts one (the storage part
// of volumeIDRE).
var storageIDRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)

// ValidStorageID reports whether s is a storage ID Proxmox accepts
// (local, local-lvm, …).
func ValidStorageID(s string) bool { return storageIDRE.MatchString(s) }

// volumeFormatRE gives a volume's format from its name: what the storage
// plugins' parse_volname return (pve-storage 0c56bad): a directory
// storage's volume is <vmid>/<name>.raw, .qcow2 or .vmdk
// (src/PVE/Storage/Plugin.pm:787, parse_name_dir), an LVM volume is
// qcow2 if its name ends in .qcow2 (LVMPlugin.pm:529), and the other
// block storages (LVM-thin, RBD, ZFS, iSCSI) are raw
// (LvmThinPlugin.pm:69, RBDPlugin.pm:513, ZFSPoolPlugin.pm:145,
// ISCSIPlugin.pm:372).
var volumeFormatRE = regexp.MustCompile(`\.(raw|qcow2|vmdk)$`)

// A DiskLine is a disk's line in a VM config's own settings, read as
// vzdump reads it to write the disk's map line (qemu-server e6352be6,
// src/PVE/VZDump/QemuServer.pm:97-170): the storage is the volume ID's
// prefix (parse_volume_id), the format the storage plugin's (qcow2, vmdk
// or raw from the volume name, raw for block storages; see
// volumeFormatRE). For a path (/dev/sdb, /mnt/x.qcow2) vzdump writes no
// storage and the format qemu-img finds; the name gives it here (raw
// unless it ends in .qcow2 or .vmdk).
type DiskLine struct {
	Key      string // the disk key: scsi0, efidisk0, …
	Volume   string // the drive's file: a volume ID, a path, "none" or "cdrom"
	StoreID  string // the volume ID's storage; empty for anything else
	Format   string // raw, qcow2 or vmdk; empty for "none" and "cdrom"
	CDROM    bool   // media=cdrom: vzdump never backs it up (QemuConfig.pm:189)
	NoBackup bool   // backup=0: a restore comments the line out (QemuServer.pm:6738-6739)
}

// ConfigDisks returns the disk lines of a VM config's own settings
// (before any section), in the order they appear.
func ConfigDisks(conf []byte) []DiskLine {
	var out []DiskLine
	head, _ := splitSections(string(conf))
	for _, line := range strings.Split(head, "\n") {
		m := diskLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		l := DiskLine{Key: m[1]}
		// A property string whose default key is file (volume is its
		// alias): qemu-server src/PVE/QemuServer/Drive.pm:166-173.
		for _, item := range strings.Split(m[3], ",") {
			k, v, ok := strings.Cut(item, "=")
			switch {
			case !ok && l.Volume == "":
				l.Volume = item
			case k == "file" || k == "volume":
				l.Volume = v
			case k == "media":
				l.CDROM = v == "cdrom"
			case k == "backup":
				l.NoBackup = slices.Contains([]string{"0", "off", "no", "false"}, strings.ToLower(v))
			}
		}
		switch v := l.Volume; {
		case l.CDROM || v == "none" || v == "cdrom":
		case strings.HasPrefix(v, "/"):
			l.Format = volumeFormat(v)
		default:
			if id := volumeIDRE.FindStringSubmatch(v); id != nil {
				l.StoreID, l.Format = id[1], volumeFormat(id[2])
			}
		}
		out = append(out, l)
	}
	return out
}

// volumeFormat is the format a volume's name says: qcow2, vmdk or raw.
func volumeFormat(name string) string {
	if m := volumeFormatRE.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return "raw"
}

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
	for _, l := range ConfigDisks(conf) {
		keys = append(keys, l.Key)
	}
	return keys
}

// RestoreProblems lists why Proxmox's restore, with its defaults (no
// storage chosen), would refuse an archive with this header or restore
// it wrong (no qemu-server.conf, a device without a map line, a map line
// for a device it does not hold, devices and disk keys not mapped one to
// one, map lines that name no storage); none means it would restore.
func RestoreProblems(h *Header) []string {
	var p []string
	conf, ok := h.Config(ConfigName)
	if !ok {
		return append(p, "no qemu-server.conf (qmrestore: \"unable to read qemu-server.conf\")")
	}
	lines := ParseMapLines(conf.Data)
	mapped := map[string]bool{}
	var nostore []string
	for _, m := range lines {
		if _, ok := h.Device(m.DevName); !ok {
			p = append(p, fmt.Sprintf("a map line for %s, which the archive does not hold (qmrestore: \"archive does not contain data for drive '%s'\")", m.DevName, m.VirtDev))
		}
		if m.StoreID == "" && !slices.Contains(nostore, m.DevName) {
			nostore = append(nostore, m.DevName)
		}
		mapped[m.DevName] = true
	}
	p = append(p, mappingProblems(lines)...)
	for _, d := range h.Devices {
		if !mapped[d.Name] {
			p = append(p, fmt.Sprintf("no #qmdump#map line for %s (qmrestore: \"found no device mapping information for device '%s'\")", d.Name, d.Name))
		}
	}
	if len(nostore) > 0 {
		p = append(p, fmt.Sprintf("no storage in the map lines of %s: qmrestore then uses storage local, which takes no disk images on a default install (\"Content type 'images' is not available on storage 'local'\"); restore with qmrestore --storage NAME, or choose a storage in the GUI", strings.Join(nostore, ", ")))
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

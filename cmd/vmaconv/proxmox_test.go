package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// The rules of Proxmox's restore, ported from its source independently of
// format/vma's helpers (docs/proxmox-restore.md cites them): pve-storage
// 0c56bad (9.1.7) and qemu-server e6352be6 (9.2.6), file:line given with
// each rule. The regular expressions are Perl's, as written there.
var (
	// src/PVE/Storage.pm archive_info, with $BACKUP_EXT_RE_2.
	pveArchiveRE = regexp.MustCompile(`^(vzdump-(lxc|openvz|qemu)-.+\.(tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?))$`)
	pveStdNameRE = regexp.MustCompile(`^(vzdump-qemu-([1-9][0-9]{2,8})-(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2}))\.vma(?:\.(?:gz|lzo|zst|bz2))?$`)
	// src/PVE/QemuServer.pm:7705, the DEV lines of vma extract -v.
	pveDevRE = regexp.MustCompile(`^DEV:\sdev_id=(\d+)\ssize:\s(\d+)\sdevname:\s(\S+)$`)
	// src/PVE/QemuServer.pm:6612, $parse_backup_hints.
	pveMapRE = regexp.MustCompile(`^\#qmdump\#map:(\S+):(\S+):(\S*):(\S*):$`)
	// src/PVE/QemuServer.pm:6632, the drives it checks for cloud-init.
	pveHintDriveRE = regexp.MustCompile(`^((?:ide|sata|scsi)\d+):\s*(.*)\s*$`)
	// src/PVE/QemuServer/Drive.pm:758 and 33, drive_is_cloudinit.
	pveCloudinitRE = regexp.MustCompile(`[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow|qcow2|qed|vmdk|cloop))?$`)
	// src/PVE/QemuServer.pm:6734, restore_update_config_line.
	pveDiskRE = regexp.MustCompile(`^((ide|scsi|virtio|sata|efidisk|tpmstate)\d+):\s*(\S+)\s*$`)
	// pve-storage src/PVE/Storage/Plugin.pm:423, parse_volume_id.
	pveVolumeIDRE = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_\.]*[a-z0-9]):(.+)$`)
)

// pveStorage is a storage of /etc/pve/storage.cfg, as a restore sees it.
type pveStorage struct {
	images  bool     // its content includes images ($check_storage)
	formats []string // the formats it allocates, its default first (get_formats)
}

// stockStorages is storage.cfg as Proxmox's installer writes it: local, a
// directory for ISOs, templates and backups (no images), and local-lvm,
// an LVM-thin pool for disks (pve-storage src/PVE/Storage/DirPlugin.pm:40,
// LvmThinPlugin.pm), and storages of the kinds the tests' configs name.
func stockStorages(more ...string) map[string]pveStorage {
	dir := []string{"raw", "qcow2", "vmdk", "subvol"}
	all := map[string]pveStorage{
		"local":     {false, dir},
		"local-lvm": {true, []string{"raw"}},
		"mydir":     {true, dir},                      // a directory storage for images
		"myfs":      {true, dir},                      // CephFS, NFS, …: a directory too
		"rbdkvm":    {true, []string{"raw"}},          // RBD
		"san":       {true, []string{"raw", "qcow2"}}, // LVM, which takes qcow2 since PVE 9
		"local-zfs": {true, []string{"raw", "subvol"}},
	}
	return all
}

// pveOpts are qmrestore's options and the host it runs on.
type pveOpts struct {
	storage  *string // qmrestore --storage, when given ("" too)
	storages map[string]pveStorage
	vmid     int
}

// pveDev is $devinfo's entry for an archive device, shared (by reference,
// as in Perl) with $virtdev_hash.
type pveDev struct {
	devname, virtdev, storeid, format, volid string
	cloudinit                                bool
}

// pveRestore is what a restore did: the VM's new config and, for every
// volume it allocated, the archive device written into it ("" if none).
type pveRestore struct {
	std     bool              // the archive has vzdump's standard name
	config  string            // the restored VM's config
	volumes map[string]string // volume ID -> device written into it
}

// lines splits a file as Perl's <$fh> reads it: each line with its
// newline.
func lines(s string) []string {
	out := strings.SplitAfter(s, "\n")
	if out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// perlLine is a line as Perl's $ sees it: before its final newline.
func perlLine(line string) string { return strings.TrimSuffix(line, "\n") }

// qmrestore runs Proxmox's restore of an archive file on a stock host,
// without --storage: the first error it would die with, whether the name
// is vzdump's, and the devices restored but not attached to the VM.
func qmrestore(t *testing.T, path string) (std bool, unattached []string, err error) {
	t.Helper()
	r, err := restoreVMA(t, path, pveOpts{})
	if err != nil {
		return false, nil, err
	}
	unattached, empty := r.check()
	if len(empty) > 0 {
		return r.std, unattached, fmt.Errorf("volumes %v allocated and left empty", empty)
	}
	return r.std, unattached, nil
}

// restoreVMA runs what Proxmox's restore of an archive file does before and
// around vma extract, from restore_vma_archive (src/PVE/QemuServer.pm:7541):
// the file name, the DEV lines, qemu-server.conf, $parse_backup_hints
// (6599), the check that every device is mapped (7638), the volumes'
// allocation ($restore_allocate_devices, 6663), the map handed to vma
// extract (7671; vma extract keeps the last line per device and dies on a
// device without one) and restore_update_config_line (6700). It returns
// the first error Proxmox would die with.
func restoreVMA(t *testing.T, path string, o pveOpts) (*pveRestore, error) {
	t.Helper()
	if o.storages == nil {
		o.storages = stockStorages()
	}
	if o.vmid == 0 {
		o.vmid = 100
	}
	base := filepath.Base(path)
	if !pveArchiveRE.MatchString(base) {
		return nil, fmt.Errorf("ERROR: couldn't determine archive info from '%s'", path)
	}
	res := &pveRestore{std: pveStdNameRE.MatchString(base), volumes: map[string]string{}}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dr, _, err := compress.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	rd, err := vma.NewReader(dr)
	if err != nil {
		t.Fatal(err)
	}
	h := rd.Header()
	devinfo := map[string]*pveDev{}
	var order []string
	for _, d := range h.Devices {
		line := fmt.Sprintf("DEV: dev_id=%d size: %d devname: %s", d.ID, d.Size, d.Name) // vma extract -v
		m := pveDevRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("the DEV line %q does not parse", line)
		}
		devinfo[m[3]] = &pveDev{}
		order = append(order, m[3])
	}
	conf, ok := h.Config("qemu-server.conf")
	if !ok {
		return nil, fmt.Errorf("unable to read qemu-server.conf")
	}
	storageConfig := func(storeid string) (pveStorage, error) { // src/PVE/Storage.pm:252
		if storeid == "" {
			return pveStorage{}, fmt.Errorf("no storage ID specified")
		}
		s, ok := o.storages[storeid]
		if !ok {
			return s, fmt.Errorf("storage '%s' does not exist", storeid)
		}
		return s, nil
	}
	checkStorage := func(storeid string) error { // QemuServer.pm:6602
		s, err := storageConfig(storeid)
		if err != nil {
			return err
		}
		if !s.images {
			return fmt.Errorf("Content type 'images' is not available on storage '%s'", storeid)
		}
		return nil
	}
	// $parse_backup_hints: every line, sections included.
	virtdevHash := map[string]*pveDev{}
	for _, line := range lines(string(conf.Data)) {
		if m := pveMapRE.FindStringSubmatch(perlLine(line)); m != nil {
			virtdev, devname, storeid, format := m[1], m[2], m[3], m[4]
			d := devinfo[devname]
			if d == nil {
				return nil, fmt.Errorf("archive does not contain data for drive '%s'", virtdev)
			}
			if o.storage != nil {
				storeid = *o.storage
				if storeid == "" {
					storeid = "local"
				}
			} else if storeid == "" {
				storeid = "local"
			}
			if format == "" {
				format = "raw"
			}
			d.devname, d.virtdev, d.format, d.storeid = devname, virtdev, format, storeid
			if err := checkStorage(storeid); err != nil {
				return nil, err
			}
			virtdevHash[virtdev] = d
		} else if m := pveHintDriveRE.FindStringSubmatch(perlLine(line)); m != nil {
			file := driveFile(m[2])
			if !pveCloudinitRE.MatchString(file) {
				continue
			}
			id := pveVolumeIDRE.FindStringSubmatch(file)
			if id == nil {
				return nil, fmt.Errorf("unable to parse volume ID '%s'", file)
			}
			storeid := id[1]
			if o.storage != nil {
				storeid = *o.storage
			}
			if err := checkStorage(storeid); err != nil {
				return nil, err
			}
			virtdevHash[m[1]] = &pveDev{storeid: storeid, format: "raw", cloudinit: true}
		}
	}
	for _, name := range order {
		if devinfo[name].virtdev == "" {
			return nil, fmt.Errorf("found no device mapping information for device '%s'", name)
		}
	}
	// $restore_allocate_devices: a volume per disk key, in sorted order,
	// in the format asked for if the storage has it, else its default
	// (pve-storage Storage.pm:1670 resolve_format_hint).
	volmap := map[string]string{}
	for n, virtdev := range slices.Sorted(maps.Keys(virtdevHash)) {
		d := virtdevHash[virtdev]
		s, err := storageConfig(d.storeid)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(s.formats, d.format) {
			d.format = s.formats[0]
		}
		if d.cloudinit { // regenerated, not restored
			d.volid = fmt.Sprintf("%s:vm-%d-cloudinit", d.storeid, o.vmid)
		} else {
			d.volid = fmt.Sprintf("%s:vm-%d-disk-%d.%s", d.storeid, o.vmid, n, d.format)
			res.volumes[d.volid] = ""
		}
		volmap[virtdev] = d.volid
	}
	// The map vma extract reads: a line per disk key, the last one per
	// device wins (g_hash_table_insert).
	devmap := map[string]string{}
	for _, virtdev := range slices.Sorted(maps.Keys(virtdevHash)) {
		if d := virtdevHash[virtdev]; !d.cloudinit {
			devmap[d.devname] = d.volid
		}
	}
	for _, name := range order {
		if name == vma.VMStateName {
			continue // vma extract writes it to vmstate.bin
		}
		volid, ok := devmap[name]
		if !ok {
			return nil, fmt.Errorf("vma extract: no device name mapping for %s", name)
		}
		res.volumes[volid] = name
	}
	var b strings.Builder
	for _, line := range lines(string(conf.Data)) {
		b.WriteString(pveUpdateConfigLine(volmap, line))
	}
	res.config = b.String()
	return res, nil
}

// driveFile is a drive's file: its property string's default key, or
// file= or its alias volume= (src/PVE/QemuServer/Drive.pm:166-173).
func driveFile(value string) string {
	file, _ := parseDrive(value)
	return file
}

// parseDrive splits a drive's property string into its file and its
// other options.
func parseDrive(value string) (file string, opts map[string]string) {
	opts = map[string]string{}
	for _, item := range strings.Split(value, ",") {
		k, v, ok := strings.Cut(item, "=")
		switch {
		case !ok:
			file = item
		case k == "file" || k == "volume":
			file = v
		default:
			opts[k] = v
		}
	}
	return file, opts
}

// pveUpdateConfigLine is restore_update_config_line
// (src/PVE/QemuServer.pm:6700) without what needs --unique or a 1.x
// config: map lines, #vzdump#, lock:, unused and parent: lines dropped; a
// disk line with backup=0 commented out; a mapped disk line given its new
// volume, its format dropped, printed as print_property_string prints it
// (the file, then the options in key order); a vmgenid regenerated.
func pveUpdateConfigLine(volmap map[string]string, line string) string {
	for _, prefix := range []string{"#qmdump#", "#vzdump#", "lock:", "parent:"} {
		if strings.HasPrefix(line, prefix) {
			return ""
		}
	}
	if regexp.MustCompile(`^unused\d+:`).MatchString(line) {
		return ""
	}
	if m := pveDiskRE.FindStringSubmatch(perlLine(line)); m != nil {
		virtdev := m[1]
		_, opts := parseDrive(m[3])
		if b, ok := opts["backup"]; ok && slices.Contains([]string{"0", "off", "no", "false"}, strings.ToLower(b)) {
			return "#" + line
		}
		volid, ok := volmap[virtdev]
		if !ok {
			return line
		}
		delete(opts, "format")
		value := volid
		for _, k := range slices.Sorted(maps.Keys(opts)) {
			value += "," + k + "=" + opts[k]
		}
		return virtdev + ": " + value + "\n"
	}
	if v, ok := strings.CutPrefix(line, "vmgenid: "); ok && perlLine(v) != "0" {
		return "vmgenid: (regenerated)\n"
	}
	return line
}

// check returns the devices of restored volumes that no disk line of the new
// config uses, and those allocated but left empty.
func (r *pveRestore) check() (unattached, empty []string) {
	used := map[string]bool{}
	for _, line := range lines(r.config) {
		if m := pveDiskRE.FindStringSubmatch(perlLine(line)); m != nil {
			used[driveFile(m[3])] = true
		}
	}
	for _, volid := range slices.Sorted(maps.Keys(r.volumes)) {
		switch {
		case r.volumes[volid] == "":
			empty = append(empty, volid)
		case !used[volid]:
			unattached = append(unattached, r.volumes[volid])
		}
	}
	return unattached, empty
}

// TestProxmoxRestorable: archives vmaconv writes in every mode pass
// Proxmox's restore rules: an image into a directory (a generated config,
// vzdump's name), compressed; with a config of the user's under another
// name; several disks with create, TPM state among them; a repack of
// Proxmox's own archive, whose config lacks map lines; one device of an
// archive repacked alone. With --storage, or the storage of the config's
// disk lines, the stock host restores them as they are; without, once a
// storage is given.
func TestProxmoxRestorable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("d.raw"), testutil.GenDisk(1, 3<<20+1000, "mixed"), 0o644)
	os.WriteFile(at("efi.raw"), testutil.GenDisk(2, 540672, "data"), 0o644)
	os.WriteFile(at("100.conf"), []byte("name: mine\nmemory: 1024\nscsi0: local-lvm:vm-100-disk-0,size=4M\n[snap]\nscsi0: local-lvm:vm-100-disk-0,size=4M\n"), 0o644)
	for _, d := range []string{"bk", "bk2", "bk3"} {
		os.Mkdir(at(d), 0o755)
	}
	only := func(d string) string {
		t.Helper()
		es, err := os.ReadDir(at(d))
		if err != nil || len(es) != 1 {
			t.Fatalf("%s holds %v (%v)", d, es, err)
		}
		return filepath.Join(at(d), es[0].Name())
	}
	vmaconv(t, "-f", "raw", at("d.raw"), at("bk")+"/", "--vmid", "123", "--compress", "zstd", "--storage", "local-lvm")
	gen := only("bk")
	named := at("vzdump-qemu-100-2024_06_10-06_13_20.vma")
	vmaconv(t, "-f", "raw", at("d.raw"), named, "-c", "qemu-server.conf="+at("100.conf"))
	several := at("vzdump-qemu-999-2024_06_10-06_13_20.vma.gz")
	vmaconv(t, "create", several, "-f", "raw", "scsi0="+at("d.raw"), "drive-efidisk0="+at("efi.raw"), "tpmstate0="+at("efi.raw"), "virtio15="+at("d.raw"))
	cases := map[string]bool{gen: true, named: true, several: false} // path -> restores without --storage
	if golden, err := testutil.FindGolden(t); err == nil {
		vmaconv(t, filepath.Join(golden, "case2.vma"), at("bk2"), "--vmid", "102")
		cases[only("bk2")] = true // its config names local-lvm for its disks
		vmaconv(t, filepath.Join(golden, "case2.vma")+":efidisk0", at("bk3"), "--vmid", "102")
		cases[only("bk3")] = true
	}
	lvm := "local-lvm"
	for path, plain := range cases {
		if _, err := restoreVMA(t, path, pveOpts{}); plain && err != nil || !plain && (err == nil || !strings.Contains(err.Error(), "Content type 'images' is not available on storage 'local'")) {
			t.Errorf("%s: Proxmox's restore without --storage: %v", filepath.Base(path), err)
		}
		r, err := restoreVMA(t, path, pveOpts{storage: &lvm})
		if err != nil {
			t.Errorf("%s: Proxmox's restore would fail: %v", filepath.Base(path), err)
			continue
		}
		if !r.std {
			t.Errorf("%s: not vzdump's standard name", filepath.Base(path))
		}
		unattached, empty := r.check()
		if len(unattached) > 0 || len(empty) > 0 {
			t.Errorf("%s: disks %v restored without a disk line, volumes %v left empty", filepath.Base(path), unattached, empty)
		}
	}
	// And what vmaconv refuses or warns about, Proxmox would refuse.
	plain := at("plain.vma")
	vmaconv(t, "-f", "raw", at("d.raw"), plain)
	if _, err := restoreVMA(t, plain, pveOpts{storage: &lvm}); err == nil || !strings.Contains(err.Error(), "couldn't determine archive info") {
		t.Errorf("plain.vma: %v", err)
	}
}

// TestProxmoxRestoreRules replays Proxmox's restore (restoreVMA) over
// archives vmaconv writes with each kind of config: generated, given with
// storage volumes of every kind, with paths, with CD-ROM and unused
// lines, with a cloud-init drive, with backup=0, and --storage over each.
// For each: the map lines written, what qmrestore on a stock host does
// without --storage and with one, that every device lands in a volume of
// its own and which end up unattached, and the notes that say so.
func TestProxmoxRestoreRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("d.raw"), testutil.GenDisk(3, 70000, "data"), 0o644)
	kinds := `bios: ovmf
boot: order=scsi0
efidisk0: local-zfs:vm-100-disk-6,efitype=4m,size=528K
ide2: local-lvm:vm-100-cloudinit,media=cdrom
name: kinds
sata0: san:vm-100-disk-4.qcow2,size=70000
scsi0: local-lvm:vm-100-disk-0,discard=on,format=raw,size=70000
scsi1: mydir:100/vm-100-disk-1.qcow2,size=70000
scsi2: file=myfs:100/vm-100-disk-2.vmdk,size=70000
tpmstate0: local-lvm:vm-100-disk-5,size=4M,version=v2.0
unused0: local-lvm:vm-100-disk-9
virtio0: rbdkvm:vm-100-disk-3,size=70000
vmgenid: 8e2a3c4d-0000-4000-8000-000000000001
[PENDING]
scsi3: mydir:100/vm-100-disk-7.qcow2,size=70000
`
	os.WriteFile(at("kinds.conf"), []byte(kinds), 0o644)
	os.WriteFile(at("paths.conf"), []byte("scsi0: /dev/disk/by-id/ata-ST1000,size=70000\nscsi1: /mnt/images/old.qcow2,size=70000\n"), 0o644)
	os.WriteFile(at("cdrom.conf"), []byte("ide0: local:iso/debian.iso,media=cdrom\nide2: none,media=cdrom\nscsi0: local-lvm:vm-100-disk-0,size=70000\nunused0: mydir:100/vm-100-disk-1.qcow2\nunused1: local-lvm:vm-100-disk-2\n"), 0o644)
	os.WriteFile(at("nobackup.conf"), []byte("scsi0: local-lvm:vm-100-disk-0,size=70000\nscsi4: local-lvm:vm-100-disk-4,backup=0,size=70000\n"), 0o644)
	lvm := "local-lvm"
	allKinds := []string{"scsi0=" + at("d.raw"), "scsi1=" + at("d.raw"), "scsi2=" + at("d.raw"), "virtio0=" + at("d.raw"), "sata0=" + at("d.raw"), "efidisk0=" + at("d.raw"), "tpmstate0=" + at("d.raw")}
	noStorage := "names no storage for "
	for _, tc := range []struct {
		name       string
		args       []string // after create ARCHIVE
		maps       []string
		notes      []string // each in stderr
		plain      string   // qmrestore's error without --storage; "" if it restores
		storage    *string  // qmrestore --storage for the second restore
		unattached []string // devices restored without a disk line
	}{
		{name: "generated", args: []string{"scsi0=" + at("d.raw"), "efidisk0=" + at("d.raw")},
			maps:  []string{"#qmdump#map:scsi0:drive-scsi0:::", "#qmdump#map:efidisk0:drive-efidisk0:::"},
			notes: []string{noStorage + "drive-scsi0, drive-efidisk0 (no --storage given)"},
			plain: "Content type 'images' is not available on storage 'local'", storage: &lvm},
		{name: "generated --storage", args: []string{"scsi0=" + at("d.raw"), "--storage", "local-lvm"},
			maps: []string{"#qmdump#map:scsi0:drive-scsi0:local-lvm::"}},
		{name: "every kind of volume", args: append(slices.Clone(allKinds), "-c", "qemu-server.conf="+at("kinds.conf")),
			maps: []string{"#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:", "#qmdump#map:scsi1:drive-scsi1:mydir:qcow2:",
				"#qmdump#map:scsi2:drive-scsi2:myfs:vmdk:", "#qmdump#map:virtio0:drive-virtio0:rbdkvm:raw:",
				"#qmdump#map:sata0:drive-sata0:san:qcow2:", "#qmdump#map:efidisk0:drive-efidisk0:local-zfs:raw:",
				"#qmdump#map:tpmstate0:drive-tpmstate0-backup:local-lvm:raw:"}},
		{name: "every kind of volume --storage", args: append(slices.Clone(allKinds), "-c", "qemu-server.conf="+at("kinds.conf"), "--storage", "mydir"),
			maps: []string{"#qmdump#map:scsi0:drive-scsi0:mydir:raw:", "#qmdump#map:scsi1:drive-scsi1:mydir:qcow2:",
				"#qmdump#map:scsi2:drive-scsi2:mydir:vmdk:", "#qmdump#map:virtio0:drive-virtio0:mydir:raw:",
				"#qmdump#map:sata0:drive-sata0:mydir:qcow2:", "#qmdump#map:efidisk0:drive-efidisk0:mydir:raw:",
				"#qmdump#map:tpmstate0:drive-tpmstate0-backup:mydir:raw:"}},
		{name: "paths", args: []string{"scsi0=" + at("d.raw"), "scsi1=" + at("d.raw"), "-c", "qemu-server.conf=" + at("paths.conf")},
			maps:  []string{"#qmdump#map:scsi0:drive-scsi0::raw:", "#qmdump#map:scsi1:drive-scsi1::qcow2:"},
			notes: []string{noStorage + "drive-scsi0, drive-scsi1 (no --storage, and no storage volume on its disk line)"},
			plain: "Content type 'images' is not available on storage 'local'", storage: &lvm},
		{name: "paths --storage", args: []string{"scsi0=" + at("d.raw"), "scsi1=" + at("d.raw"), "-c", "qemu-server.conf=" + at("paths.conf"), "--storage", "local-lvm"},
			maps: []string{"#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:", "#qmdump#map:scsi1:drive-scsi1:local-lvm:qcow2:"}},
		{name: "CD-ROM and unused lines", args: []string{"scsi0=" + at("d.raw"), "scsi1=" + at("d.raw"), "-c", "qemu-server.conf=" + at("cdrom.conf")},
			maps:  []string{"#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:", "#qmdump#map:scsi1:drive-scsi1:::"},
			notes: []string{"has no scsi1: line", noStorage + "drive-scsi1 ("},
			plain: "Content type 'images' is not available on storage 'local'", storage: &lvm, unattached: []string{"drive-scsi1"}},
		{name: "a disk into a CD-ROM line", args: []string{"scsi0=" + at("d.raw"), "ide2=" + at("d.raw"), "-c", "qemu-server.conf=" + at("cdrom.conf")},
			maps:  []string{"#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:", "#qmdump#map:ide2:drive-ide2:::"},
			notes: []string{"ide2: is a CD-ROM drive (media=cdrom)", noStorage + "drive-ide2 ("},
			plain: "Content type 'images' is not available on storage 'local'", storage: &lvm},
		{name: "backup=0", args: []string{"scsi0=" + at("d.raw"), "scsi4=" + at("d.raw"), "-c", "qemu-server.conf=" + at("nobackup.conf")},
			maps:  []string{"#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:", "#qmdump#map:scsi4:drive-scsi4:local-lvm:raw:"},
			notes: []string{"scsi4: says backup=0"}, unattached: []string{"drive-scsi4"}},
	} {
		archive := at("vzdump-qemu-100-2024_06_10-06_13_20.vma")
		os.Remove(archive)
		_, stderr, st := runVmaconv(append([]string{"create", "-f", "raw", archive}, tc.args...)...)
		if st != 0 {
			t.Fatalf("%s: status %d: %s", tc.name, st, stderr)
		}
		for _, n := range tc.notes {
			if !strings.Contains(stderr, n) {
				t.Errorf("%s: no note %q in\n%s", tc.name, n, stderr)
			}
		}
		if tc.plain == "" && strings.Contains(stderr, noStorage) {
			t.Errorf("%s: says no storage:\n%s", tc.name, stderr)
		}
		conf, _, _ := runVmaconv("config", archive)
		var maps []string
		for _, l := range lines(conf) {
			if pveMapRE.MatchString(perlLine(l)) {
				maps = append(maps, perlLine(l))
			}
		}
		if !slices.Equal(maps, tc.maps) {
			t.Errorf("%s: map lines\n%q\nwant\n%q", tc.name, maps, tc.maps)
		}
		r, err := restoreVMA(t, archive, pveOpts{})
		if tc.plain == "" && err != nil || tc.plain != "" && (err == nil || err.Error() != tc.plain) {
			t.Errorf("%s: restore without --storage: %v, want %q", tc.name, err, tc.plain)
		}
		if tc.storage != nil {
			if r, err = restoreVMA(t, archive, pveOpts{storage: tc.storage}); err != nil {
				t.Errorf("%s: restore with --storage %s: %v", tc.name, *tc.storage, err)
			}
		}
		if r == nil {
			continue
		}
		unattached, empty := r.check()
		if !slices.Equal(unattached, tc.unattached) || len(empty) > 0 {
			t.Errorf("%s: unattached %v (want %v), empty volumes %v", tc.name, unattached, tc.unattached, empty)
		}
		if tc.name == "every kind of volume" {
			// The restored VM's config, as qemu-server writes it: the
			// volumes replaced (formats as the storages allow), the
			// cloud-init drive regenerated, map lines, unused disks and
			// sections' pending disks as Proxmox leaves them.
			want := `bios: ovmf
boot: order=scsi0
efidisk0: local-zfs:vm-100-disk-0.raw,efitype=4m,size=528K
ide2: local-lvm:vm-100-cloudinit,media=cdrom
name: kinds
sata0: san:vm-100-disk-2.qcow2,size=70000
scsi0: local-lvm:vm-100-disk-3.raw,discard=on,size=70000
scsi1: mydir:vm-100-disk-4.qcow2,size=70000
scsi2: myfs:vm-100-disk-5.vmdk,size=70000
tpmstate0: local-lvm:vm-100-disk-6.raw,size=4M,version=v2.0
virtio0: rbdkvm:vm-100-disk-7.raw,size=70000
vmgenid: (regenerated)
[PENDING]
scsi3: mydir:100/vm-100-disk-7.qcow2,size=70000
`
			if r.config != want {
				t.Errorf("%s: restored config\n%s\nwant\n%s", tc.name, r.config, want)
			}
		}
		if tc.name == "a disk into a CD-ROM line" && !strings.Contains(r.config, "ide2: local-lvm:vm-100-disk-0.raw,media=cdrom\n") {
			t.Errorf("%s: restored config\n%s", tc.name, r.config)
		}
	}

	// A repack with --storage moves map lines already there (the example
	// archive's name local-lvm) to that storage, and says so.
	example := filepath.Join(testutil.ModuleRoot(t), "examples", testutil.ExampleName)
	repack := at("vzdump-qemu-100-2024_06_10-06_13_21.vma")
	_, stderr, st := runVmaconv(example, repack, "--storage", "rbdkvm")
	if st != 0 || !strings.Contains(stderr, "qemu-server.conf: #qmdump#map:efidisk0:drive-efidisk0:rbdkvm:raw: now names storage rbdkvm (--storage)") {
		t.Errorf("repack --storage: status %d: %s", st, stderr)
	}
	if r, err := restoreVMA(t, repack, pveOpts{storages: map[string]pveStorage{"rbdkvm": {true, []string{"raw"}}}}); err != nil {
		t.Errorf("repack --storage: %v", err)
	} else if unattached, empty := r.check(); len(unattached)+len(empty) > 0 {
		t.Errorf("repack --storage: unattached %v, empty %v", unattached, empty)
	}
}

// TestNameRules: for each way names clash once an archive is extracted
// (raw, qcow2) or mounted, an archive made elsewhere with that clash gets
// verify's warning, and the command that uses those names refuses it
// with the same file name, while the others accept it; and vmaconv
// refuses to write such an archive. This also pins mountFileName to what
// mount shows (mount.go names its files itself).
func TestNameRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	disk := testutil.GenDisk(4, 8192, "data")
	os.WriteFile(at("d.raw"), disk, 0o644)
	os.WriteFile(at("c.conf"), []byte("memory: 512\n"), 0o644)
	conf := format.Config{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}
	os.Mkdir(at("mnt"), 0o755)
	for _, tc := range []struct {
		name    string
		configs []string // besides qemu-server.conf
		devices []string
		clash   string   // verify's warning
		uses    []string // of extract, extract-qcow2 and mount: those that refuse
		file    string   // the file name the first refuses
	}{
		{"extract", []string{"disk-drive-scsi0.raw"}, []string{"drive-scsi0"},
			"config disk-drive-scsi0.raw and device drive-scsi0 would both be extracted as disk-drive-scsi0.raw", []string{"extract"}, "disk-drive-scsi0.raw"},
		{"extract qcow2", []string{"disk-drive-scsi0.qcow2"}, []string{"drive-scsi0"},
			"config disk-drive-scsi0.qcow2 and device drive-scsi0 would both be extracted (-O qcow2) as disk-drive-scsi0.qcow2", []string{"extract-qcow2"}, "disk-drive-scsi0.qcow2"},
		{"mount", []string{"drive-scsi0.raw"}, []string{"drive-scsi0"},
			"config drive-scsi0.raw and device drive-scsi0 would both be mounted as drive-scsi0.raw", []string{"mount"}, "drive-scsi0.raw"},
		{"vmstate", []string{"vmstate.bin"}, []string{"drive-scsi0", vma.VMStateName},
			"config vmstate.bin and device vmstate would both be extracted as vmstate.bin", []string{"extract", "extract-qcow2"}, "vmstate.bin"},
		{"sanitised configs", []string{"a b.conf", "a_b.conf"}, []string{"drive-scsi0"},
			`config "a b.conf" and config a_b.conf would both be extracted as a_b.conf`, []string{"extract", "extract-qcow2", "mount"}, "a_b.conf"},
		{"sanitised devices", nil, []string{"drive-scsi0", "x y", "x_y"},
			`device "x y" and device x_y would both be extracted as disk-x_y.raw`, []string{"extract", "extract-qcow2", "mount"}, "disk-x_y.raw"},
	} {
		var cs []format.Config
		cs = append(cs, conf)
		for _, c := range tc.configs {
			cs = append(cs, format.Config{Name: c, Data: []byte("x\n")})
		}
		var ds []testutil.Disk
		for _, d := range tc.devices {
			ds = append(ds, testutil.Disk{Name: d, Data: disk})
		}
		archive := at(strings.ReplaceAll(tc.name, " ", "-") + ".vma")
		os.WriteFile(archive, testutil.WriteArchive(t, ds, cs, "seq", 0), 0o644)

		_, stderr, _ := runVmaconv("verify", archive)
		if want := fmt.Sprintf("vmaconv: warning: %s: %s\n", archive, tc.clash); !strings.Contains(stderr, want) {
			t.Errorf("%s: verify says\n%s\nwant %q", tc.name, stderr, want)
		}
		for _, use := range []string{"extract", "extract-qcow2", "mount"} {
			var args []string
			switch use {
			case "extract":
				args = []string{"extract", archive, at("out-" + tc.name)}
			case "extract-qcow2":
				args = []string{"extract", "-O", "qcow2", archive, at("outq-" + tc.name)}
			case "mount":
				if !slices.Contains(tc.uses, use) {
					continue // it would mount
				}
				args = []string{"mount", archive, at("mnt")}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var stdout, errb bytes.Buffer
			st := run(ctx, args, strings.NewReader(""), &stdout, &errb)
			cancel()
			refused := st != 0 && strings.Contains(errb.String(), " would both be ")
			if refused != slices.Contains(tc.uses, use) || use == tc.uses[0] && !strings.HasSuffix(errb.String(), " as "+tc.file+"\n") {
				t.Errorf("%s: %s: status %d: %s", tc.name, use, st, errb.String())
			}
		}

		// And vmaconv writes no such archive: -c names the configs,
		// and a repack keeps the source's names.
		args := []string{"create", "-f", "raw", at("w.vma"), "scsi0=" + at("d.raw")}
		for _, c := range tc.configs {
			args = append(args, "-c", c+"="+at("c.conf"))
		}
		if !slices.Contains(tc.devices, vma.VMStateName) && len(tc.configs) > 0 {
			if _, stderr, st := runVmaconv(args...); st != 2 || !strings.Contains(stderr, "vmaconv: "+tc.clash+": store the config under another name (-c NAME=FILE)\n") {
				t.Errorf("%s: create: status %d: %s", tc.name, st, stderr)
			}
		}
		if _, stderr, st := runVmaconv(archive, at("w.vma")); st != 2 || !strings.Contains(stderr, "vmaconv: "+tc.clash) {
			t.Errorf("%s: repack: status %d: %s", tc.name, st, stderr)
		}
		if _, err := os.Stat(at("w.vma")); err == nil {
			t.Fatalf("%s: w.vma written", tc.name)
		}
	}
}

// TestVMIDRange: --vmid out of 100-999999999, or a --storage that is not
// a storage ID, is a usage error (status 2) for every command and
// destination, before any file is read or written.
func TestVMIDRange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("d.raw"), testutil.GenDisk(5, 4096, "data"), 0o644)
	os.Mkdir(at("bk"), 0o755)
	for _, vmid := range []string{"-1", "0", "99", "1000000000"} {
		want := "vmaconv: --vmid " + vmid + ": Proxmox VMIDs are 100 to 999999999\n"
		for _, args := range [][]string{
			{"-f", "raw", at("d.raw"), at("x.vma")},
			{"-f", "raw", at("d.raw"), at("bk") + "/"},
			{"-f", "raw", at("d.raw"), at("x.raw")},
			{"-f", "raw", at("missing.raw"), at("x.vma")}, // before the source is opened
			{"create", at("x.vma"), "scsi0=" + at("d.raw")},
			{"create", at("bk"), "scsi0=" + at("missing.raw")},
		} {
			args = append(args, "--vmid="+vmid)
			if _, stderr, st := runVmaconv(args...); st != 2 || stderr != want {
				t.Errorf("vmaconv %q: status %d: %q, want %q", args, st, stderr, want)
			}
		}
	}
	for _, s := range []string{"a:b", "x", "1st", "with space", "trailing-"} {
		want := "vmaconv: --storage " + printable(s) + ": not a Proxmox storage ID (a letter, then letters, digits, '-', '_' or '.', ending with a letter or digit)\n"
		if _, stderr, st := runVmaconv("-f", "raw", at("d.raw"), at("x.vma"), "--storage", s); st != 2 || stderr != want {
			t.Errorf("--storage %q: status %d: %q", s, st, stderr)
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 2 {
		t.Errorf("files written: %v", es)
	}
	for _, vmid := range []string{"100", "999999999"} {
		vmaconv(t, "-f", "raw", at("d.raw"), at("bk")+"/", "--vmid", vmid)
	}
}

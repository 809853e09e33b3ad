package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
)

// archiveFlags are the options of commands that write an archive for
// Proxmox.
type archiveFlags struct {
	VMID    int    `name:"vmid" placeholder:"N" default:"100" help:"VMID, 100 to 999999999, for an archive written into a directory (vzdump-qemu-<VMID>-<time>.vma) and for the qemu-server.conf vmaconv writes when none is given."`
	Storage string `name:"storage" placeholder:"STORAGE" help:"Proxmox storage to restore the disks to (local-lvm, …), written into every #qmdump#map line as vzdump writes it. Without it, a disk gets the storage of its volume in the given qemu-server.conf (scsi0: local-lvm:vm-100-disk-0), or none: qmrestore then needs --storage."`
}

// check refuses a VMID or a storage Proxmox would not take, before
// anything is read or written.
func (a *archiveFlags) check() error {
	if err := checkVMID(a.VMID); err != nil {
		return err
	}
	if a.Storage != "" && !vma.ValidStorageID(a.Storage) {
		return usageError{fmt.Errorf("--storage %s: not a Proxmox storage ID (a letter, then letters, digits, '-', '_' or '.', ending with a letter or digit)", printable(a.Storage))}
	}
	return nil
}

// checkVMID refuses a VMID outside Proxmox's range, wherever it is used.
func checkVMID(vmid int) error {
	if !vma.ValidVMID(vmid) {
		return usageError{fmt.Errorf("--vmid %d: Proxmox VMIDs are 100 to 999999999", vmid)}
	}
	return nil
}

// restorable makes an archive's configs what Proxmox's restore needs: a
// qemu-server.conf (a minimal one is written, and said, if none is given)
// with a #qmdump#map line for every disk (missing ones are added, and
// said; present ones are checked), each naming a storage if one is known
// (said if not); and names that extract and mount can use.
// inherited says the configs come from the source archive, not from -c:
// then map lines for devices the new archive does not hold are dropped
// (said), instead of being an error.
func restorable(e *env, configs []format.Config, devs []format.Device, a archiveFlags, inherited bool) ([]format.Config, error) {
	out, err := completeConfigs(e, configs, devs, a, inherited)
	if err != nil {
		return nil, err
	}
	if err := checkNames(out, devs); err != nil {
		return nil, err
	}
	return out, nil
}

// checkNames refuses configs and devices that extract or mount could not
// tell apart (see names.go).
func checkNames(configs []format.Config, devs []format.Device) error {
	var cnames, dnames []string
	for _, c := range configs {
		cnames = append(cnames, c.Name)
	}
	for _, d := range devs {
		dnames = append(dnames, d.Name)
	}
	return checkArchiveNames(cnames, dnames)
}

// completeConfigs is restorable's work on qemu-server.conf.
func completeConfigs(e *env, configs []format.Config, devs []format.Device, a archiveFlags, inherited bool) ([]format.Config, error) {
	var vdevs []vma.Device
	var disks []string
	for _, d := range devs {
		vdevs = append(vdevs, vma.Device{Name: d.Name, Size: d.Size})
		if d.Name != vma.VMStateName {
			disks = append(disks, d.Name)
		}
	}
	out := append([]format.Config(nil), configs...)
	for i, c := range out {
		if c.Name != vma.ConfigName {
			continue
		}
		data := c.Data
		if inherited {
			var dropped []vma.MapLine
			if data, dropped = vma.DropMapLines(data, vdevs); len(dropped) > 0 {
				for _, m := range dropped {
					e.note("%s: dropped %s: this archive does not hold %s (the config's %s: line stays as it was)", vma.ConfigName, m, m.DevName, m.VirtDev)
				}
			}
		}
		done, err := vma.CompleteConfig(data, vdevs, a.Storage)
		if err != nil && inherited {
			err = fmt.Errorf("%w; it comes from the source archive: correct a copy (vmaconv config SRC > FILE) and pass -c %s=FILE", err, vma.ConfigName)
		}
		if err != nil {
			return nil, usageError{err}
		}
		data = done.Config
		if len(data) > vma.MaxBlobSize {
			return nil, usageError{fmt.Errorf("%s with its map lines would be %d bytes, over the %d an archive holds", vma.ConfigName, len(data), vma.MaxBlobSize)}
		}
		for _, m := range done.Added {
			e.note("%s: added %s, which Proxmox's restore needs for %s", vma.ConfigName, m, m.DevName)
		}
		for _, m := range done.Retargeted {
			e.note("%s: %s now names storage %s (--storage)", vma.ConfigName, m, a.Storage)
		}
		disksNotes(e, data)
		for _, n := range done.Unmapped {
			e.note("%s is not a Proxmox disk name (drive-scsi0, drive-virtio1, …): Proxmox's restore will refuse the archive", printable(n))
		}
		out[i].Data = data
		return out, nil
	}
	if len(disks) == 0 {
		return out, nil
	}
	conf := vma.GenerateConfig(a.VMID, "", a.Storage, vdevs)
	out = append([]format.Config{{Name: vma.ConfigName, Data: conf}}, out...)
	var keys []string
	for _, m := range vma.ParseMapLines(conf) {
		keys = append(keys, m.VirtDev)
	}
	e.note("no %s given: wrote a minimal one for VM %d (%s); pass -c %s=FILE to give yours", vma.ConfigName, a.VMID, strings.Join(keys, ", "), vma.ConfigName)
	for _, c := range configs {
		// A VM's config as Proxmox keeps it (/etc/pve/qemu-server/100.conf)
		// given under its own name: Proxmox's restore would ignore it.
		if strings.HasSuffix(c.Name, ".conf") && len(vma.ConfigDiskKeys(c.Data)) > 0 {
			e.note("%s looks like a VM's config but Proxmox restores only one named %s: pass -c %s=%s", printable(c.Name), vma.ConfigName, vma.ConfigName, printable(c.Name))
		}
	}
	noStorageNote(e, conf, "no --storage given")
	return out, nil
}

// disksNotes says what a restore would do to the disks of a completed
// qemu-server.conf that the user may not expect: disks restored but not
// attached, disks restored into a CD-ROM drive, map lines without a
// storage.
func disksNotes(e *env, conf []byte) {
	for _, k := range vma.UnattachedKeys(conf) {
		e.note("%s has no %s: line, so Proxmox will restore that disk without attaching it", vma.ConfigName, k)
	}
	lines := map[string]vma.DiskLine{}
	for _, l := range vma.ConfigDisks(conf) {
		lines[l.Key] = l
	}
	for _, m := range vma.ParseMapLines(conf) {
		switch l, ok := lines[m.VirtDev]; {
		case !ok:
		case l.CDROM:
			e.note("%s: %s: is a CD-ROM drive (media=cdrom): Proxmox will restore %s into it as a CD-ROM, or, for a cloud-init drive, not at all; give the disk a line of its own", vma.ConfigName, m.VirtDev, m.DevName)
		case l.NoBackup:
			e.note("%s: %s: says backup=0: Proxmox will restore %s but comment that line out, leaving the disk unattached", vma.ConfigName, m.VirtDev, m.DevName)
		}
	}
	noStorageNote(e, conf, "no --storage, and no storage volume on its disk line")
}

// noStorageNote says which map lines name no storage: qmrestore then
// needs one, as its fallback, local, usually takes no disk images.
func noStorageNote(e *env, conf []byte, why string) {
	var devs []string
	for _, m := range vma.ParseMapLines(conf) {
		if m.StoreID == "" {
			devs = append(devs, m.DevName)
		}
	}
	if len(devs) == 0 {
		return
	}
	e.note("%s names no storage for %s (%s): restore with qmrestore --storage NAME, or choose a storage in the GUI, as Proxmox's fallback, local, usually takes no disk images", vma.ConfigName, strings.Join(devs, ", "), why)
}

// archiveDest returns where an archive goes: dst, or, when dst is a
// directory, a file in it named as vzdump names backups. It notes a name
// Proxmox would not restore from.
func archiveDest(e *env, dst string, vmid int, ctime time.Time, comp string) (string, error) {
	if dst == "-" {
		return dst, nil
	}
	fi, err := os.Stat(dst)
	if err == nil && fi.IsDir() || err != nil && errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(dst, string(filepath.Separator)) {
		if err != nil {
			return "", fmt.Errorf("%s: no such directory", dst)
		}
		if err := checkVMID(vmid); err != nil {
			return "", err
		}
		if ctime.IsZero() {
			ctime = time.Now()
		}
		ext := map[string]string{"zstd": ".zst", "gzip": ".gz"}[comp]
		return filepath.Join(dst, vma.ArchiveName(vmid, ctime.Local(), ext)), nil
	}
	switch ok, std := vma.CheckArchiveName(dst); {
	case !ok:
		e.note("Proxmox restores only archives named vzdump-qemu-<VMID>-YYYY_MM_DD-HH_MM_SS.vma[.zst|.gz|.lzo]; give a directory as DST to get one")
	case !std:
		e.note("Proxmox restores %s, but its VMID and time, for the GUI and pruning, come from the name vzdump-qemu-<VMID>-YYYY_MM_DD-HH_MM_SS.vma[.zst|.gz|.lzo]", filepath.Base(dst))
	}
	return dst, nil
}

// deviceName turns a name given for an image into a Proxmox device name
// (scsi0 is drive-scsi0).
func deviceName(s string) (string, error) {
	n, err := vma.NormalizeDeviceName(s)
	if err != nil {
		return "", usageError{fmt.Errorf("device name %v", err)}
	}
	return n, nil
}

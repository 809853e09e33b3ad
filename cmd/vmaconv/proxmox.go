package main

import (
	"fmt"
	"slices"

	"github.com/vmaconv/vmaconv/format"
)

// archiveFlags are the options of commands that write an archive for
// Proxmox: flags for the vmid and storage options of the archive format,
// which applies Proxmox's rules with them (format.Origin).
type archiveFlags struct {
	VMID    int    `name:"vmid" placeholder:"N" default:"100" help:"VMID, 100 to 999999999, for an archive written into a directory (vzdump-qemu-<VMID>-<time>.vma) and for the qemu-server.conf vmaconv writes when none is given."`
	Storage string `name:"storage" placeholder:"STORAGE" help:"Proxmox storage to restore the disks to (local-lvm, …), written into every #qmdump#map line as vzdump writes it. Without it, a disk gets the storage of its volume in the given qemu-server.conf (scsi0: local-lvm:vm-100-disk-0), or none: qmrestore then needs --storage."`
}

// check refuses a VMID or a storage that the format declaring its option
// refuses (Option.Check), before anything is read or written, whatever
// the output.
func (a *archiveFlags) check() error {
	if declaredCheck("vmid", int64(a.VMID)) != nil {
		return usageError{fmt.Errorf("--vmid %d: Proxmox VMIDs are 100 to 999999999", a.VMID)}
	}
	if a.Storage == "" {
		return nil
	}
	if err := declaredCheck("storage", a.Storage); err != nil {
		return usageError{fmt.Errorf("--storage %s: %v", printable(a.Storage), err)}
	}
	return nil
}

// declaredCheck checks v with the Check of every registered format's
// option of that name.
func declaredCheck(name string, v any) error {
	for _, n := range registry.Names() {
		f, _ := registry.Lookup(n)
		if i := slices.IndexFunc(f.Options, func(o format.Option) bool { return o.Name == name }); i >= 0 && f.Options[i].Check != nil {
			if err := f.Options[i].Check(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// archiveFormat is the format of commands that take only archives (config,
// verify, extract, create): the first registered, by name, with rules for
// archives (format.ArchiveRules).
func archiveFormat() format.Format {
	for _, n := range registry.Names() {
		if f, _ := registry.Lookup(n); f.Archive != nil {
			return f
		}
	}
	return format.Format{}
}

// diskName turns a name given for a disk into the name fm's archives
// store it under (scsi0 is drive-scsi0).
func diskName(fm format.Format, s string) (string, error) {
	if fm.Archive == nil {
		return s, nil
	}
	n, err := fm.Archive.Disk(s)
	if err != nil {
		return "", usageError{fmt.Errorf("device name %v", err)}
	}
	return n, nil
}

// deviceName is diskName for the archive format.
func deviceName(s string) (string, error) { return diskName(archiveFormat(), s) }

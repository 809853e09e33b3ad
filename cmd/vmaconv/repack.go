package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
)

// noteKeptConfigs says, for an archive repacked with its configs as they
// are, why Proxmox's restore would refuse it, if it would.
func noteKeptConfigs(e *env, configs []format.Config, devs []format.Device) {
	h := &vma.Header{}
	for _, c := range configs {
		h.Configs = append(h.Configs, vma.Config{Name: c.Name, Data: c.Data})
	}
	for i, d := range devs {
		h.Devices = append(h.Devices, vma.Device{ID: i + 1, Name: d.Name, Size: d.Size})
	}
	if p := vma.RestoreProblems(h); len(p) > 0 {
		e.note("the configs are kept as the source has them, so Proxmox's restore would refuse the archive: %s; to have what it needs added, give a directory as DST or pass -c %s=FILE (vmaconv config SRC > FILE)", strings.Join(p, "; "), vma.ConfigName)
	}
}

// flagGiven reports whether the flag was on the command line (kong sets
// defaults as if given).
func flagGiven(kctx *kong.Context, name string) bool {
	for _, p := range kctx.Path {
		if p.Flag != nil && p.Flag.Name == name {
			return true
		}
	}
	return false
}

// isDir reports whether path is an existing directory.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// repackName is the identity an archive repacked into a directory gets in
// vzdump's name, vzdump-qemu-<VMID>-<time>.vma[.zst|.gz]: what the flags
// given say, else the source's, so that Proxmox files the backup under
// its VM and date.
type repackName struct {
	vmid  int
	time  time.Time
	comp  string   // for archiveDest: zstd, gzip, or "" / none
	whys  []string // where each came from, for the note
	given bool     // all three given: nothing taken from the source
}

// nameFromSource decides the VMID, time and compression of the name of
// the archive repacked from in into a directory. Each given flag wins;
// otherwise the VMID comes from the source's vzdump name, failing that
// from the disk volumes its configs name (vm-101-disk-0: all the same
// VM), failing that the default; the time from its ctime (shown in local
// time, as vzdump names backups); the compression from its magic (lzop,
// which vmaconv does not write, becomes zstd, vzdump's default).
func nameFromSource(in *input.Input, configs []format.Config, vmid int, vmidGiven bool, ctime time.Time, comp string) repackName {
	n := repackName{vmid: vmid, time: ctime, comp: comp, given: vmidGiven && !ctime.IsZero() && comp != ""}
	switch id, from := sourceVMID(in, configs); {
	case vmidGiven:
		n.whys = append(n.whys, fmt.Sprintf("VMID %d from --vmid", vmid))
	case id != 0:
		n.vmid = id
		n.whys = append(n.whys, fmt.Sprintf("VMID %d from %s", id, from))
	default:
		n.whys = append(n.whys, fmt.Sprintf("VMID %d by default: %s (pass --vmid)", vmid, from))
	}
	switch t := header(in).CTime; {
	case !ctime.IsZero():
		n.whys = append(n.whys, "time from --ctime")
	case t.Unix() > 0 && t.Year() <= 9999:
		n.time = t
		n.whys = append(n.whys, "time from its ctime (in local time, as vzdump names backups)")
	default:
		n.whys = append(n.whys, fmt.Sprintf("time now: its ctime (%d) is no date for a name", t.Unix()))
	}
	switch {
	case comp == "none":
		n.whys = append(n.whys, "uncompressed from --compress")
	case comp != "":
		n.whys = append(n.whys, comp+" from --compress")
	case in.Compression() == compress.Lzop:
		n.comp = compress.Zstd
		n.whys = append(n.whys, "zstd: the source is lzop-compressed, which vmaconv does not write")
	case in.Compression() == "":
		n.comp = "none"
		n.whys = append(n.whys, "uncompressed as the source")
	default:
		n.comp = in.Compression()
		n.whys = append(n.whys, in.Compression()+" as the source")
	}
	return n
}

// note says what the name took from where.
func (n repackName) note(e *env, dst string) {
	if !n.given {
		e.note("%s: %s", filepath.Base(dst), strings.Join(n.whys, ", "))
	}
}

// vzdumpNameRE is the start of the names pve-storage takes a VMID from.
var vzdumpNameRE = regexp.MustCompile(`^vzdump-qemu-([0-9]+)-`)

// volumeRE matches a Proxmox volume name that belongs to a VM: vm-101-disk-0,
// vm-101-cloudinit, base-101-disk-0 (a template's).
var volumeRE = regexp.MustCompile(`^(?:vm|base)-([1-9][0-9]*)-`)

// confDiskRE matches a disk line of a VM's config, capturing its volume.
var confDiskRE = regexp.MustCompile(`^(?:ide|sata|scsi|virtio|efidisk|tpmstate|unused)[0-9]+:\s*([^,\s]+)`)

// sourceVMID returns the VMID of the source archive, and where it was
// found: its vzdump name, else the disk volumes of its qemu-server.conf
// (storage:vm-101-disk-0, storage:101/vm-101-disk-0.qcow2; of a linked
// clone, storage:base-100-disk-0/vm-101-disk-0 is 101's) when they all
// belong to one VM. Otherwise 0 and why.
func sourceVMID(in *input.Input, configs []format.Config) (int, string) {
	if in.Ref().Path != "-" {
		if m := vzdumpNameRE.FindStringSubmatch(filepath.Base(in.Ref().Path)); m != nil {
			if id, err := strconv.Atoi(m[1]); err == nil && vma.ValidVMID(id) {
				return id, "the source's name"
			}
		}
	}
	var ids []int
	var vol string
	for _, c := range configs {
		if c.Name != vma.ConfigName {
			continue
		}
		for _, line := range strings.Split(string(c.Data), "\n") {
			if strings.HasPrefix(line, "[") {
				break // a snapshot's section
			}
			m := confDiskRE.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			_, name, ok := strings.Cut(m[1], ":") // storage:volume, not a path or "none"
			if !ok {
				continue
			}
			name = name[strings.LastIndexByte(name, '/')+1:]
			v := volumeRE.FindStringSubmatch(name)
			if v == nil {
				continue
			}
			id, err := strconv.Atoi(v[1])
			if err != nil || !vma.ValidVMID(id) {
				continue
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
				vol = name
			}
		}
	}
	switch len(ids) {
	case 0:
		return 0, "neither the source's name nor its config's disks name a VM"
	case 1:
		return ids[0], fmt.Sprintf("its config's disks (%s)", printable(vol))
	}
	var s []string
	for _, id := range ids {
		s = append(s, strconv.Itoa(id))
	}
	return 0, "its config's disks belong to VMs " + strings.Join(s, ", ")
}

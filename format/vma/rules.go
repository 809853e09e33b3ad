package vma

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/text"
)

// Proxmox's rules for the archives Create writes when told where they come
// from (format.CreateOptions.From): what its restore needs (a
// qemu-server.conf mapping every disk, names extract and mount can use),
// and how vzdump names backups, for an archive written into a directory.

// archiveRules are Proxmox's rules for names (Format.Archive): disks are
// named drive-<key>; extracted, configs keep their (sanitised) names and
// disks become disk-<name>.raw (or .qcow2), and a vmstate stream
// vmstate.bin, as Proxmox's vma extract names them; mounted, disks are
// <name>.raw and a vmstate stream is not shown.
type archiveRules struct{}

func (archiveRules) Disk(name string) (string, error) { return NormalizeDeviceName(name) }
func (archiveRules) ConfigFile(name string) string    { return format.SafeName(name) }

func (archiveRules) DiskFile(disk, ext string) (string, bool) {
	if disk == VMStateName {
		return "vmstate.bin", true
	}
	return "disk-" + format.SafeName(disk) + ext, false
}

func (archiveRules) MountFile(disk string) string {
	if disk == VMStateName {
		return ""
	}
	return format.SafeName(disk) + ".raw"
}

// rules applies Proxmox's rules to one archive being created.
type rules struct {
	from    *format.Origin
	opts    format.Values
	note    func(string)
	storage string // the storage option: of every map line
	vmid    int    // the vmid option, or 100
}

func (r *rules) notef(format string, args ...any) {
	if r.note != nil {
		r.note(fmt.Sprintf(format, args...))
	}
}

// applyRules makes an archive what Proxmox's restore needs (see
// format.Origin). It returns where the archive goes (d, or, when d.Path is
// a directory, a file in it named as vzdump names backups), its configs,
// and the creation time its header must say (zero: as the options say).
// An archive repacked whole into a file keeps its configs as they are, so
// that it can come back byte for byte; the rest is made restorable.
func applyRules(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Dest, []format.Config, time.Time, error) {
	r := &rules{from: o.From, opts: o.Options, note: o.Note, storage: o.Options.String("storage"), vmid: 100}
	if o.Options.Has("vmid") {
		r.vmid = int(o.Options.Int("vmid"))
	}
	var ctime time.Time
	if s := o.Options.String("ctime"); s != "" {
		ctime, _ = ParseCTime(s) // checked by the option
	}
	name := backupName{vmid: r.vmid, time: ctime, comp: o.Options.String("compress"), given: true}
	backup := false
	if fi, err := os.Stat(d.Path); d.Stream == nil && err == nil && fi.IsDir() {
		backup = true
		if r.from.Archive {
			name = r.nameFromSource(o.Configs, ctime)
		}
	}
	configs := o.Configs
	if asIs := r.from.Whole && !backup && r.storage == ""; asIs {
		if err := checkNames(configs, disks); err != nil {
			return d, nil, time.Time{}, err
		}
		r.noteKeptConfigs(configs, disks)
	} else {
		var err error
		if configs, err = r.restorable(configs, disks, name.vmid, r.from.OwnConfigs); err != nil {
			return d, nil, time.Time{}, err
		}
	}
	if d.Stream == nil {
		var err error
		if d.Path, err = r.archivePath(d.Path, name); err != nil {
			return d, nil, time.Time{}, err
		}
		if !name.given {
			r.notef("%s: %s", filepath.Base(d.Path), strings.Join(name.whys, ", "))
		}
	}
	return d, configs, name.time, nil
}

// restorable makes an archive's configs what Proxmox's restore needs: a
// qemu-server.conf (a minimal one is written for VM vmid, and said, if
// none is given) with a #qmdump#map line for every disk (missing ones are
// added, and said; present ones are checked), each naming a storage if
// one is known (said if not); and names that extract and mount can use.
// inherited says the configs come from the source archive: then map lines
// for devices the new archive does not hold are dropped (said), instead of
// being an error.
func (r *rules) restorable(configs []format.Config, disks []format.Device, vmid int, inherited bool) ([]format.Config, error) {
	out, err := r.completeConfigs(configs, disks, vmid, inherited)
	if err != nil {
		return nil, err
	}
	if err := checkNames(out, disks); err != nil {
		return nil, err
	}
	return out, nil
}

// checkNames refuses configs and devices that extract or mount could not
// tell apart (format.NameClashes).
func checkNames(configs []format.Config, disks []format.Device) error {
	var cnames, dnames []string
	for _, c := range configs {
		cnames = append(cnames, c.Name)
	}
	for _, d := range disks {
		dnames = append(dnames, d.Name)
	}
	p := format.NameClashes(archiveRules{}, cnames, dnames)
	if len(p) == 0 {
		return nil
	}
	hint := ""
	if strings.HasPrefix(p[0], "config ") {
		hint = ": store the config under another name (-c NAME=FILE)"
	}
	return format.Unsupported("%s%s", p[0], hint)
}

// completeConfigs is restorable's work on qemu-server.conf.
func (r *rules) completeConfigs(configs []format.Config, disks []format.Device, vmid int, inherited bool) ([]format.Config, error) {
	var devs []Device
	for _, d := range disks {
		devs = append(devs, Device{Name: d.Name, Size: d.Size})
	}
	out := append([]format.Config(nil), configs...)
	for i, c := range out {
		if c.Name != ConfigName {
			continue
		}
		data := c.Data
		if inherited {
			var dropped []MapLine
			data, dropped = DropMapLines(data, devs)
			for _, m := range dropped {
				r.notef("%s: dropped %s: this archive does not hold %s (the config's %s: line stays as it was)", ConfigName, m, m.DevName, m.VirtDev)
			}
		}
		done, err := CompleteConfig(data, devs, r.storage)
		if err != nil && inherited {
			return nil, format.Unsupported("%v; it comes from the source archive: correct a copy (vmaconv config SRC > FILE) and pass -c %s=FILE", err, ConfigName)
		}
		if err != nil {
			return nil, format.Unsupported("%v", err)
		}
		data = done.Config
		if len(data) > MaxBlobSize {
			return nil, format.Unsupported("%s with its map lines would be %d bytes, over the %d an archive holds", ConfigName, len(data), MaxBlobSize)
		}
		for _, m := range done.Added {
			r.notef("%s: added %s, which Proxmox's restore needs for %s", ConfigName, m, m.DevName)
		}
		for _, m := range done.Retargeted {
			r.notef("%s: %s now names storage %s (%s)", ConfigName, m, r.storage, r.opts.GivenAs("storage"))
		}
		r.disksNotes(data)
		for _, n := range done.Unmapped {
			r.notef("%s is not a Proxmox disk name (drive-scsi0, drive-virtio1, …): Proxmox's restore will refuse the archive", text.Printable(n))
		}
		out[i].Data = data
		return out, nil
	}
	if !slices.ContainsFunc(devs, func(d Device) bool { return !d.IsVMState() }) {
		return out, nil
	}
	conf := GenerateConfig(vmid, "", r.storage, devs)
	out = append([]format.Config{{Name: ConfigName, Data: conf}}, out...)
	var keys []string
	for _, m := range ParseMapLines(conf) {
		keys = append(keys, m.VirtDev)
	}
	r.notef("no %s given: wrote a minimal one for VM %d (%s); pass -c %s=FILE to give yours", ConfigName, vmid, strings.Join(keys, ", "), ConfigName)
	for _, c := range configs {
		// A VM's config as Proxmox keeps it (/etc/pve/qemu-server/100.conf)
		// given under its own name: Proxmox's restore would ignore it.
		if strings.HasSuffix(c.Name, ".conf") && len(ConfigDiskKeys(c.Data)) > 0 {
			r.notef("%s looks like a VM's config but Proxmox restores only one named %s: pass -c %s=%s", text.Printable(c.Name), ConfigName, ConfigName, text.Printable(c.Name))
		}
	}
	r.noStorageNote(conf, "no --storage given")
	return out, nil
}

// disksNotes says what a restore would do to the disks of a completed
// qemu-server.conf that the user may not expect: disks restored but not
// attached, disks restored into a CD-ROM drive, map lines without a
// storage.
func (r *rules) disksNotes(conf []byte) {
	for _, k := range UnattachedKeys(conf) {
		r.notef("%s has no %s: line, so Proxmox will restore that disk without attaching it", ConfigName, k)
	}
	lines := map[string]DiskLine{}
	for _, l := range ConfigDisks(conf) {
		lines[l.Key] = l
	}
	for _, m := range ParseMapLines(conf) {
		switch l, ok := lines[m.VirtDev]; {
		case !ok:
		case l.CDROM:
			r.notef("%s: %s: is a CD-ROM drive (media=cdrom): Proxmox will restore %s into it as a CD-ROM, or, for a cloud-init drive, not at all; give the disk a line of its own", ConfigName, m.VirtDev, m.DevName)
		case l.NoBackup:
			r.notef("%s: %s: says backup=0: Proxmox will restore %s but comment that line out, leaving the disk unattached", ConfigName, m.VirtDev, m.DevName)
		}
	}
	r.noStorageNote(conf, "no --storage, and no storage volume on its disk line")
}

// noStorageNote says which map lines name no storage: qmrestore then
// needs one, as its fallback, local, usually takes no disk images.
func (r *rules) noStorageNote(conf []byte, why string) {
	var devs []string
	for _, m := range ParseMapLines(conf) {
		if m.StoreID == "" {
			devs = append(devs, m.DevName)
		}
	}
	if len(devs) == 0 {
		return
	}
	r.notef("%s names no storage for %s (%s): restore with qmrestore --storage NAME, or choose a storage in the GUI, as Proxmox's fallback, local, usually takes no disk images", ConfigName, strings.Join(devs, ", "), why)
}

// noteKeptConfigs says, for an archive repacked with its configs as they
// are, why Proxmox's restore would refuse it, if it would.
func (r *rules) noteKeptConfigs(configs []format.Config, disks []format.Device) {
	h := &Header{Configs: configs}
	for i, d := range disks {
		h.Devices = append(h.Devices, Device{ID: i + 1, Name: d.Name, Size: d.Size})
	}
	if p := RestoreProblems(h); len(p) > 0 {
		r.notef("the configs are kept as the source has them, so Proxmox's restore would refuse the archive: %s; to have what it needs added, give a directory as DST or pass -c %s=FILE (vmaconv config SRC > FILE)", strings.Join(p, "; "), ConfigName)
	}
}

// archivePath returns where an archive goes: dst, or, when dst is a
// directory, a file in it named as vzdump names backups. It notes a name
// Proxmox would not restore from.
func (r *rules) archivePath(dst string, name backupName) (string, error) {
	fi, err := os.Stat(dst)
	if err == nil && fi.IsDir() || err != nil && errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(dst, string(filepath.Separator)) {
		if err != nil {
			return "", fmt.Errorf("%s: no such directory", dst)
		}
		if !ValidVMID(name.vmid) {
			return "", format.Unsupported("--vmid %d: Proxmox VMIDs are 100 to 999999999", name.vmid)
		}
		t := name.time
		if t.IsZero() {
			t = time.Now()
		}
		ext := map[string]string{compress.Zstd: ".zst", compress.Gzip: ".gz"}[name.comp]
		return filepath.Join(dst, ArchiveName(name.vmid, t.Local(), ext)), nil
	}
	switch ok, std := CheckArchiveName(dst); {
	case !ok:
		r.notef("Proxmox restores only archives named vzdump-qemu-<VMID>-YYYY_MM_DD-HH_MM_SS.vma[.zst|.gz|.lzo]; give a directory as DST to get one")
	case !std:
		r.notef("Proxmox restores %s, but its VMID and time, for the GUI and pruning, come from the name vzdump-qemu-<VMID>-YYYY_MM_DD-HH_MM_SS.vma[.zst|.gz|.lzo]", filepath.Base(dst))
	}
	return dst, nil
}

// backupName is the identity an archive written into a directory gets in
// vzdump's name, vzdump-qemu-<VMID>-<time>.vma[.zst|.gz]: what the options
// given say, else, for an archive repacked, the source's, so that Proxmox
// files the backup under its VM and date.
type backupName struct {
	vmid  int
	time  time.Time
	comp  string   // zstd, gzip, or "" / none
	whys  []string // where each came from, for the note
	given bool     // all three given: nothing taken from the source
}

// nameFromSource decides the VMID, time and compression of the name of
// the archive repacked from r.from into a directory. Each option given
// wins; otherwise the VMID comes from the source's vzdump name, failing
// that from the disk volumes its configs name (vm-101-disk-0: all the same
// VM), failing that the default; the time from its ctime (shown in local
// time, as vzdump names backups); the compression from its magic (lzop,
// which vmaconv does not write, becomes zstd, vzdump's default).
func (r *rules) nameFromSource(configs []format.Config, ctime time.Time) backupName {
	comp := r.opts.String("compress")
	vmidGiven := r.opts.Has("vmid")
	n := backupName{vmid: r.vmid, time: ctime, comp: comp, given: vmidGiven && !ctime.IsZero() && comp != ""}
	switch id, from := sourceVMID(r.from.Path, configs); {
	case vmidGiven:
		n.whys = append(n.whys, fmt.Sprintf("VMID %d from %s", r.vmid, r.opts.GivenAs("vmid")))
	case id != 0:
		n.vmid = id
		n.whys = append(n.whys, fmt.Sprintf("VMID %d from %s", id, from))
	default:
		n.whys = append(n.whys, fmt.Sprintf("VMID %d by default: %s (pass --vmid)", r.vmid, from))
	}
	switch t := r.from.CTime; {
	case !ctime.IsZero():
		n.whys = append(n.whys, "time from "+r.opts.GivenAs("ctime"))
	case t.Unix() > 0 && t.Year() <= 9999:
		n.time = t
		n.whys = append(n.whys, "time from its ctime (in local time, as vzdump names backups)")
	default:
		n.whys = append(n.whys, fmt.Sprintf("time now: its ctime (%d) is no date for a name", t.Unix()))
	}
	switch src := r.from.Compression; {
	case comp == "none":
		n.whys = append(n.whys, "uncompressed from "+r.opts.GivenAs("compress"))
	case comp != "":
		n.whys = append(n.whys, comp+" from "+r.opts.GivenAs("compress"))
	case src == compress.Lzop:
		n.comp = compress.Zstd
		n.whys = append(n.whys, "zstd: the source is lzop-compressed, which vmaconv does not write")
	case src == "":
		n.comp = "none"
		n.whys = append(n.whys, "uncompressed as the source")
	default:
		n.comp = src
		n.whys = append(n.whys, src+" as the source")
	}
	return n
}

// vzdumpNameRE is the start of the names pve-storage takes a VMID from.
var vzdumpNameRE = regexp.MustCompile(`^vzdump-qemu-([0-9]+)-`)

// volumeRE matches a Proxmox volume name that belongs to a VM: vm-101-disk-0,
// vm-101-cloudinit, base-101-disk-0 (a template's).
var volumeRE = regexp.MustCompile(`^(?:vm|base)-([1-9][0-9]*)-`)

// confDiskRE matches a disk line of a VM's config, capturing its volume.
var confDiskRE = regexp.MustCompile(`^(?:ide|sata|scsi|virtio|efidisk|tpmstate|unused)[0-9]+:\s*([^,\s]+)`)

// sourceVMID returns the VMID of the source archive at path, and where it
// was found: its vzdump name, else the disk volumes of its
// qemu-server.conf (storage:vm-101-disk-0, storage:101/vm-101-disk-0.qcow2;
// of a linked clone, storage:base-100-disk-0/vm-101-disk-0 is 101's) when
// they all belong to one VM. Otherwise 0 and why.
func sourceVMID(path string, configs []format.Config) (int, string) {
	if path != "-" {
		if m := vzdumpNameRE.FindStringSubmatch(filepath.Base(path)); m != nil {
			if id, err := strconv.Atoi(m[1]); err == nil && ValidVMID(id) {
				return id, "the source's name"
			}
		}
	}
	var ids []int
	var vol string
	for _, c := range configs {
		if c.Name != ConfigName {
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
			if err != nil || !ValidVMID(id) {
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
		return ids[0], fmt.Sprintf("its config's disks (%s)", text.Printable(vol))
	}
	var s []string
	for _, id := range ids {
		s = append(s, strconv.Itoa(id))
	}
	return 0, "its config's disks belong to VMs " + strings.Join(s, ", ")
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// The rules of Proxmox's restore, copied from its source, independently
// of format/vma's helpers (docs/proxmox-restore.md cites them):
// pve-storage 9.1.7 src/PVE/Storage.pm archive_info, and qemu-server
// 9.2.6 src/PVE/QemuServer.pm restore_vma_archive, $parse_backup_hints and
// restore_update_config_line.
var (
	pveArchiveRE = regexp.MustCompile(`^(vzdump-(lxc|openvz|qemu)-.+\.(tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?))$`)
	pveStdNameRE = regexp.MustCompile(`^(vzdump-qemu-([1-9][0-9]{2,8})-(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2}))\.vma(?:\.(?:gz|lzo|zst|bz2))?$`)
	pveDevRE     = regexp.MustCompile(`^DEV:\sdev_id=(\d+)\ssize:\s(\d+)\sdevname:\s(\S+)$`)
	pveMapRE     = regexp.MustCompile(`^\#qmdump\#map:(\S+):(\S+):(\S*):(\S*):$`)
	pveDiskRE    = regexp.MustCompile(`^((ide|scsi|virtio|sata|efidisk|tpmstate)\d+):\s*(\S+)\s*$`)
)

// qmrestore runs, over an archive file, what Proxmox's restore reads
// before it writes a byte: the file name, the DEV lines of vma extract,
// qemu-server.conf, the map lines, every device mapped. It returns the
// first error Proxmox would die with, whether the name is the standard
// one, and the disk keys restored without a disk line in the config.
func qmrestore(t *testing.T, path string) (std bool, unattached []string, err error) {
	t.Helper()
	base := filepath.Base(path)
	if !pveArchiveRE.MatchString(base) {
		return false, nil, fmt.Errorf("ERROR: couldn't determine archive info from '%s'", path)
	}
	std = pveStdNameRE.MatchString(base)
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
	devinfo := map[string]string{} // devname -> virtdev
	for _, d := range h.Devices {
		line := fmt.Sprintf("DEV: dev_id=%d size: %d devname: %s", d.ID, d.Size, d.Name) // vma extract -v
		m := pveDevRE.FindStringSubmatch(line)
		if m == nil {
			return std, nil, fmt.Errorf("the DEV line %q does not parse", line)
		}
		devinfo[m[3]] = ""
	}
	conf, ok := h.Config("qemu-server.conf")
	if !ok {
		return std, nil, fmt.Errorf("unable to read qemu-server.conf")
	}
	lines := strings.SplitAfter(string(conf.Data), "\n")
	for _, line := range lines {
		if m := pveMapRE.FindStringSubmatch(strings.TrimSuffix(line, "\n")); m != nil {
			if _, ok := devinfo[m[2]]; !ok {
				return std, nil, fmt.Errorf("archive does not contain data for drive '%s'", m[1])
			}
			devinfo[m[2]] = m[1]
		}
	}
	for name, virtdev := range devinfo {
		if virtdev == "" {
			return std, nil, fmt.Errorf("found no device mapping information for device '%s'", name)
		}
	}
	replaced := map[string]bool{}
	for _, line := range lines {
		if m := pveDiskRE.FindStringSubmatch(strings.TrimSuffix(line, "\n")); m != nil {
			replaced[m[1]] = true
		}
	}
	for _, virtdev := range devinfo {
		if !replaced[virtdev] {
			unattached = append(unattached, virtdev)
		}
	}
	return std, unattached, nil
}

// TestProxmoxRestorable: archives vmaconv writes in every mode pass
// Proxmox's restore rules: an image into a directory (a generated config,
// vzdump's name), compressed; with a config of the user's under another
// name; several disks with create, TPM state among them; a repack of
// Proxmox's own archive, whose config lacks map lines; one device of an
// archive repacked alone.
func TestProxmoxRestorable(t *testing.T) {
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
	vmaconv(t, "-f", "raw", at("d.raw"), at("bk")+"/", "--vmid", "123", "--compress", "zstd")
	gen := only("bk")
	named := at("vzdump-qemu-100-2024_06_10-06_13_20.vma")
	vmaconv(t, "-f", "raw", at("d.raw"), named, "-c", "qemu-server.conf="+at("100.conf"))
	several := at("vzdump-qemu-999-2024_06_10-06_13_20.vma.gz")
	vmaconv(t, "create", several, "-f", "raw", "scsi0="+at("d.raw"), "drive-efidisk0="+at("efi.raw"), "tpmstate0="+at("efi.raw"), "virtio15="+at("d.raw"))
	cases := map[string]bool{gen: true, named: true, several: true} // path -> all disks attached
	if golden, err := testutil.FindGolden(t); err == nil {
		vmaconv(t, filepath.Join(golden, "case2.vma"), at("bk2"), "--vmid", "102")
		cases[only("bk2")] = false // its config has no tpm disk... and the EFI disk line is there
		vmaconv(t, filepath.Join(golden, "case2.vma")+":efidisk0", at("bk3"), "--vmid", "102")
		cases[only("bk3")] = false
	}
	for path, attached := range cases {
		std, unattached, err := qmrestore(t, path)
		if err != nil {
			t.Errorf("%s: Proxmox's restore would fail: %v", filepath.Base(path), err)
			continue
		}
		if !std {
			t.Errorf("%s: not vzdump's standard name", filepath.Base(path))
		}
		if attached && len(unattached) > 0 {
			t.Errorf("%s: disks %v restored without a disk line", filepath.Base(path), unattached)
		}
	}
	// And what vmaconv refuses or warns about, Proxmox would refuse.
	plain := at("plain.vma")
	vmaconv(t, "-f", "raw", at("d.raw"), plain)
	if _, _, err := qmrestore(t, plain); err == nil || !strings.Contains(err.Error(), "couldn't determine archive info") {
		t.Errorf("plain.vma: %v", err)
	}
}

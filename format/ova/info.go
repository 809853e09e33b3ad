package ova

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

// fileInfo describes the size bytes of f, an OVA or a bare OVF, for info
// (Format.InfoAt), from its descriptor and manifest, without opening its
// disks: the VM's hardware, its disks with their files and capacities,
// its NICs. A bare OVF's manifest is the file beside it, which a remote
// one has not: its manifest is said not to be read.
func fileInfo(f io.ReaderAt, size int64, st format.FileStat) (format.Info, error) {
	head, err := format.ReadHead(f)
	if err != nil {
		return nil, err
	}
	var ovf, mf []byte
	var ovfName, mfName string
	bare := isOVF(head)
	if bare {
		if size > MaxOVFSize {
			return nil, fmt.Errorf("%w: the OVF descriptor is %d bytes, over the %d it may have", ErrCorrupt, size, MaxOVFSize)
		}
		ovf = make([]byte, size)
		if _, err := f.ReadAt(ovf, 0); err != nil {
			return nil, err
		}
		if st.Remote {
			ovfName, _, _ = strings.Cut(path.Base(st.Name), "?") // the URL's last element
		} else {
			ovfName = filepath.Base(st.Name)
			mfPath := strings.TrimSuffix(st.Name, filepath.Ext(st.Name)) + ".mf"
			if b, err := os.ReadFile(mfPath); err == nil && len(b) <= MaxManifestSize {
				mf, mfName = b, filepath.Base(mfPath)
			}
		}
	} else {
		members, err := listMembers(f, size)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			lower := strings.ToLower(m.Name)
			switch {
			case ovf == nil && strings.HasSuffix(lower, ".ovf"):
				if ovf, err = readMember(f, m, MaxOVFSize, "OVF descriptor"); err != nil {
					return nil, err
				}
				ovfName = m.Name
			case mf == nil && strings.HasSuffix(lower, ".mf"):
				if mf, err = readMember(f, m, MaxManifestSize, "manifest"); err != nil {
					return nil, err
				}
				mfName = m.Name
			}
		}
		if ovf == nil {
			return nil, fmt.Errorf("%w: no OVF descriptor (a member named *.ovf) among its %d members", ErrNotOVA, len(members))
		}
	}
	p, err := readDescriptor(ovfName, ovf, mf, mfName, func(string) {})
	if err != nil {
		return nil, err
	}
	in := p.info(st, ovfName)
	if bare && st.Remote {
		for i := range in {
			if in[i].Key == "manifest" {
				in[i].Value = "not read (a remote descriptor has no files beside it)"
			}
		}
	}
	return in, nil
}

// info describes the package: qemu-img info's keys where it has them
// (filename, format, actual-size), the VM's otherwise.
func (p *pkg) info(st format.FileStat, ovfName string) format.Info {
	h := p.h
	in := format.Info{
		{Key: "filename", Label: "file", Value: st.Name, Show: format.ShowName},
		{Key: "format", Label: "format", Value: Name},
		{Key: "descriptor", Label: "descriptor", Value: path.Base(ovfName), Show: format.ShowName},
	}
	if st.Size >= 0 {
		in = append(in, format.Field{Key: "actual-size", Value: st.Size, Show: format.ShowHidden})
	}
	manifest := "none"
	if p.mfName != "" {
		algs := map[string]bool{}
		for _, d := range p.digests {
			algs[d.Algorithm] = true
		}
		var names []string
		for a := range algs {
			names = append(names, a)
		}
		manifest = fmt.Sprintf("%s (%s)", path.Base(p.mfName), strings.Join(names, ", "))
	}
	firmware := "bios"
	if h.EFI {
		firmware = "efi"
		if h.SecureBoot {
			firmware = "efi (secure boot)"
		}
	}
	version := "unknown"
	if h.Version > 0 {
		version = fmt.Sprintf("vmx-%02d", h.Version)
	}
	var disks, nics []format.Info
	for _, d := range h.Disks {
		c := Controller{Bus: "-"}
		if d.Controller >= 0 {
			c = h.Controllers[d.Controller]
		}
		ctrl := fmt.Sprintf("%s %d:%d", strings.ToUpper(string(c.Bus)), c.Number, d.Unit)
		if c.SubType != "" {
			ctrl += " " + c.SubType
		}
		row := format.Info{
			{Key: "key", Value: d.Key},
			{Key: "controller", Value: ctrl},
		}
		switch {
		case d.CDROM:
			row = append(row, format.Field{Key: "cdrom", Value: "CD-ROM"})
		case d.File == "":
			row = append(row, format.Field{Key: "file", Value: "(empty)"})
		default:
			row = append(row, format.Field{Key: "file", Value: d.File, Show: format.ShowName})
		}
		if d.Capacity >= 0 && !d.CDROM {
			row = append(row, format.Field{Key: "virtual-size", Value: d.Capacity, Show: format.ShowSize})
		}
		disks = append(disks, row)
	}
	for _, n := range h.NICs {
		row := format.Info{{Key: "model", Value: n.Model}, {Key: "network", Value: n.Network, Show: format.ShowName}}
		if n.MAC != "" {
			row = append(row, format.Field{Key: "mac", Value: n.MAC})
		}
		nics = append(nics, row)
	}
	return append(in,
		format.Field{Key: "name", Label: "name", Value: h.Name, Show: format.ShowName},
		format.Field{Key: "hardware-version", Label: "hardware version", Value: version},
		format.Field{Key: "os", Label: "guest OS", Value: fmt.Sprintf("%s (VMware %s, CIM %d)", h.OS.Proxmox, h.OS.VMware, h.OS.ID)},
		format.Field{Key: "cpus", Value: h.CPUs(), Show: format.ShowHidden},
		format.Field{Key: "sockets", Value: h.Sockets, Show: format.ShowHidden},
		format.Field{Key: "cores", Value: h.Cores, Show: format.ShowHidden},
		format.Field{Label: "CPUs", Value: fmt.Sprintf("%d (%d socket(s) × %d core(s))", h.CPUs(), h.Sockets, h.Cores)},
		format.Field{Key: "memory", Label: "memory", Value: h.MemoryMiB << 20, Show: format.ShowSize},
		format.Field{Key: "firmware", Label: "firmware", Value: firmware},
		format.Field{Key: "manifest", Label: "manifest", Value: manifest},
		format.Field{Key: "disks", Label: "disks", Value: disks},
		format.Field{Key: "nics", Label: "NICs", Value: nics},
	)
}

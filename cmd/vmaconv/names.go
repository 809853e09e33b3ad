package main

import (
	"fmt"
	"strings"

	"github.com/vmaconv/vmaconv/format/vma"
)

// The file names an archive's configs and devices get when extract or
// mount shows them, and the one check that no two of them get the same
// name. extract and verify use it on archives they read, and every
// command that writes an archive uses it before writing, so that what
// vmaconv writes it can also extract and mount.

// configFileName is the file a config is extracted and mounted as.
func configFileName(name string) string { return safeName(name) }

// extractFileName is the file extract writes a device to:
// disk-<name><ext> (ext is .raw or .qcow2, from -O), and vmstate.bin for
// a RAM-state stream, as Proxmox's vma extract names them.
func extractFileName(device, ext string) string {
	if device == vma.VMStateName {
		return "vmstate.bin"
	}
	return "disk-" + safeName(device) + ext
}

// mountFileName is the file mount shows a device as, <name>.raw; a
// RAM-state stream is not shown ("").
func mountFileName(device string) string {
	if device == vma.VMStateName {
		return ""
	}
	return safeName(device) + ".raw"
}

// A namedFile is a file extract or mount would make and what it comes
// from: "config NAME" or "device NAME".
type namedFile struct{ origin, name string }

// clash is two files with one name.
type clash struct{ first, second namedFile }

// clashes returns every file whose name an earlier one has, with the
// first file of that name.
func clashes(files []namedFile) []clash {
	var out []clash
	seen := map[string]namedFile{}
	for _, f := range files {
		if f.name == "" {
			continue
		}
		if first, dup := seen[f.name]; dup {
			out = append(out, clash{first, f})
			continue
		}
		seen[f.name] = f
	}
	return out
}

// fileUses are the ways an archive's names become file names: extract
// (raw and qcow2 disks) and mount.
var fileUses = []struct {
	what   string // "extracted as"
	device func(string) string
}{
	{"extracted as", func(d string) string { return extractFileName(d, ".raw") }},
	{"extracted (-O qcow2) as", func(d string) string { return extractFileName(d, ".qcow2") }},
	{"mounted as", mountFileName},
}

// nameClashes lists every two of an archive's configs and devices that
// extract, as raw or qcow2, or mount would give one file name, each pair
// once: "config a.raw and device a would both be mounted as a.raw", or
// "config a appears twice".
func nameClashes(configs, devices []string) []string {
	var out []string
	said := map[[2]string]bool{}
	for _, use := range fileUses {
		var files []namedFile
		for _, c := range configs {
			files = append(files, namedFile{"config " + printable(c), configFileName(c)})
		}
		for _, d := range devices {
			files = append(files, namedFile{"device " + printable(d), use.device(d)})
		}
		for _, c := range clashes(files) {
			key := [2]string{c.first.origin, c.second.origin}
			switch {
			case said[key]:
			case c.first.origin == c.second.origin:
				out = append(out, fmt.Sprintf("%s appears twice", c.first.origin))
			default:
				out = append(out, fmt.Sprintf("%s and %s would both be %s %s", c.first.origin, c.second.origin, use.what, c.first.name))
			}
			said[key] = true
		}
	}
	return out
}

// checkArchiveNames refuses an archive about to be written whose configs
// and devices would clash when extracted or mounted.
func checkArchiveNames(configs []string, devices []string) error {
	p := nameClashes(configs, devices)
	if len(p) == 0 {
		return nil
	}
	hint := ""
	if strings.HasPrefix(p[0], "config ") {
		hint = ": store the config under another name (-c NAME=FILE)"
	}
	return usageError{fmt.Errorf("%s%s", p[0], hint)}
}

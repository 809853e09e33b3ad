package format

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/vmaconv/vmaconv/internal/text"
)

// ArchiveRules are an archive format's rules (Format.Archive) for the names
// of what it stores: of its disks, and of the files its configs and disks
// become when extracted into a directory or mounted. The commands that
// write, extract and mount archives follow them, so that what vmaconv
// writes it can also extract and mount (see NameClashes). Its methods are
// safe for concurrent use.
type ArchiveRules interface {
	// Disk returns the name a disk given by a user (a device name, or a
	// short name the format knows it by) is stored under, or an error
	// saying which names the format takes.
	Disk(name string) (string, error)
	// ConfigFile returns the file a config is extracted and mounted as.
	ConfigFile(name string) string
	// DiskFile returns the file disk is extracted as, a disk image whose
	// format's extension is ext (".raw", ".qcow2"); raw says it is
	// written as raw bytes whatever the image format (a RAM-state stream).
	DiskFile(disk, ext string) (file string, raw bool)
	// MountFile returns the file disk is mounted as, or "" if it is not
	// shown.
	MountFile(disk string) string
}

// SafeName turns a name from an archive into a file name that stays inside
// its directory on every OS: only ASCII letters, digits and ._-+@=, are
// kept, others become '_'; a leading '.' becomes '_' (no hidden files, no
// "." or ".."), names Windows reserves get a leading '_', a trailing '.'
// becomes '_', and very long names are shortened with a hash suffix.
func SafeName(name string) string {
	b := []byte(name)
	for i, ch := range b {
		ok := 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("._-+@=,", ch) >= 0
		if !ok || i == 0 && ch == '.' {
			b[i] = '_'
		}
	}
	s := string(b)
	if s == "" {
		s = "_"
	}
	// Names Windows reserves for devices, whatever the extension, and
	// trailing dots, which it drops.
	stem := strings.ToUpper(s)
	if i := strings.IndexByte(stem, '.'); i >= 0 {
		stem = stem[:i]
	}
	switch {
	case stem == "CON" || stem == "PRN" || stem == "AUX" || stem == "NUL",
		len(stem) == 4 && (strings.HasPrefix(stem, "COM") || strings.HasPrefix(stem, "LPT")) && stem[3] >= '0' && stem[3] <= '9':
		s = "_" + s
	}
	if strings.HasSuffix(s, ".") {
		s = s[:len(s)-1] + "_"
	}
	if len(s) > 200 {
		sum := sha256.Sum256([]byte(name))
		s = s[:200] + "-" + hex.EncodeToString(sum[:4])
	}
	return s
}

// NamedFile is a file an archive's config or disk becomes, and what it
// comes from, for messages: "config NAME" or "device NAME".
type NamedFile struct{ Origin, Name string }

// Clash is two files with one name.
type Clash struct{ First, Second NamedFile }

// Clashes returns every file whose name an earlier one has, with the first
// file of that name. Files without a name ("") are not made.
func Clashes(files []NamedFile) []Clash {
	var out []Clash
	seen := map[string]NamedFile{}
	for _, f := range files {
		if f.Name == "" {
			continue
		}
		if first, dup := seen[f.Name]; dup {
			out = append(out, Clash{first, f})
			continue
		}
		seen[f.Name] = f
	}
	return out
}

// fileUses are the ways an archive's names become file names: extract
// (raw and qcow2 disks) and mount.
var fileUses = []struct {
	what string // "extracted as"
	file func(r ArchiveRules, disk string) string
}{
	{"extracted as", func(r ArchiveRules, d string) string { f, _ := r.DiskFile(d, ".raw"); return f }},
	{"extracted (-O qcow2) as", func(r ArchiveRules, d string) string { f, _ := r.DiskFile(d, ".qcow2"); return f }},
	{"mounted as", ArchiveRules.MountFile},
}

// NameClashes lists every two of an archive's configs and disks that
// extract, as raw or qcow2, or mount would give one file name under r,
// each pair once: "config a.raw and device a would both be mounted as
// a.raw", or "config a appears twice".
func NameClashes(r ArchiveRules, configs, disks []string) []string {
	var out []string
	said := map[[2]string]bool{}
	for _, use := range fileUses {
		var files []NamedFile
		for _, c := range configs {
			files = append(files, NamedFile{"config " + text.Printable(c), r.ConfigFile(c)})
		}
		for _, d := range disks {
			files = append(files, NamedFile{"device " + text.Printable(d), use.file(r, d)})
		}
		for _, c := range Clashes(files) {
			key := [2]string{c.First.Origin, c.Second.Origin}
			switch {
			case said[key]:
			case c.First.Origin == c.Second.Origin:
				out = append(out, fmt.Sprintf("%s appears twice", c.First.Origin))
			default:
				out = append(out, fmt.Sprintf("%s and %s would both be %s %s", c.First.Origin, c.Second.Origin, use.what, c.First.Name))
			}
			said[key] = true
		}
	}
	return out
}

package main

import "github.com/vmaconv/vmaconv/format"

// The names mount gives an archive's configs and disks, by the archive
// format's rules (format.ArchiveRules), and the check that no two of them
// get the same name.

// configFileName is the file a config is mounted as.
func configFileName(name string) string { return archiveFormat().Archive.ConfigFile(name) }

// mountFileName is the file mount shows a device as; "" if it is not
// shown (a RAM-state stream).
func mountFileName(device string) string { return archiveFormat().Archive.MountFile(device) }

// A namedFile is a file mount would make and what it comes from:
// "config NAME" or "device NAME".
type namedFile struct{ origin, name string }

// clash is two files with one name.
type clash struct{ first, second namedFile }

// clashes returns every file whose name an earlier one has, with the
// first file of that name (format.Clashes).
func clashes(files []namedFile) []clash {
	var nf []format.NamedFile
	for _, f := range files {
		nf = append(nf, format.NamedFile{Origin: f.origin, Name: f.name})
	}
	var out []clash
	for _, c := range format.Clashes(nf) {
		out = append(out, clash{namedFile{c.First.Origin, c.First.Name}, namedFile{c.Second.Origin, c.Second.Name}})
	}
	return out
}

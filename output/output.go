// Package output decides what vmaconv writes and starts writing it: the
// format of a destination (named, or from its name: standard output, a
// directory, an extension, with the refusals of names vmaconv does not
// write), the config files given to store with an archive, and the sink.
// It is input's sibling for outputs.
//
// Like every library package of vmaconv it never prints: what the user
// should know goes to a Note function. Errors for a destination or an
// option the user must change match format.ErrUnsupportedOption: usage
// errors.
package output

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

// fallback is the format of a destination whose name matches no format's
// extension, and of standard output for an archive's disk.
const fallback = "raw"

// Options say how Choose chooses a destination's format.
type Options struct {
	// Forced names the format (-O): it is not chosen from the name.
	Forced string
	// FromArchive says the input holds several disks (an archive), which
	// standard output gets one of, raw; an image is written to standard
	// output as an archive.
	FromArchive bool
	// Note, if set, is told of what the user should know: a name written
	// as raw for want of a known extension.
	Note func(msg string)
}

// Choose returns the format of the destination dst: the format o names,
// else, for standard output ("-"), raw from an archive and an archive
// from an image; for a directory, an archive (a backup named in it); else
// the format of dst's extension (format.Registry.ForPath). A name of a
// format vmaconv does not write (format.Foreign) or of a compressor it
// does not write is refused; any other name is raw, with a note, unless
// it is not a regular file (a block device, written raw as it is).
func Choose(reg *format.Registry, dst string, o Options) (format.Format, error) {
	if o.Forced != "" {
		f, err := reg.Lookup(o.Forced)
		if err != nil {
			return f, format.Unsupported("%v", err)
		}
		if f.Create == nil {
			return f, format.Unsupported("%s cannot be written", o.Forced)
		}
		return f, nil
	}
	if dst == "-" {
		if o.FromArchive {
			return reg.Lookup(fallback)
		}
		return archiveFormat(reg)
	}
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		return archiveFormat(reg)
	}
	if f, ok := reg.ForPath(dst); ok {
		return f, nil
	}
	if ff, ok := format.ForeignForPath(dst); ok {
		return format.Format{}, format.Unsupported("%s: vmaconv does not write %s images: write qcow2 or raw and convert that (qemu-img convert -O %s disk.qcow2 %s), or pass -O raw to write raw bytes under this name", dst, ff.Name, ff.QEMU, dst)
	}
	if err := compressorSuffix(reg, dst); err != nil {
		return format.Format{}, err
	}
	if fi, err := os.Stat(dst); (err != nil || fi.Mode().IsRegular()) && o.Note != nil {
		o.Note(fmt.Sprintf("%s: no known extension, writing raw (pass -O raw to say so)", dst))
	}
	return reg.Lookup(fallback)
}

// archiveFormat returns the first format, in registration order, that
// writes archives (Format.Multi).
func archiveFormat(reg *format.Registry) (format.Format, error) {
	for _, f := range reg.Formats() {
		if f.Multi && f.Create != nil {
			return f, nil
		}
	}
	return format.Format{}, format.Unsupported("no format that writes archives is registered")
}

// compressors are the suffixes of compressed files vmaconv does not write
// (.vma.zst and .vma.gz are archive extensions; .vma.lzo is refused by
// the archive writer with its own way out).
var compressors = map[string]string{
	".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2", ".xz": "xz", ".lz4": "lz4",
	".lzma": "lzma", ".z": "compress", ".lz": "lzip", ".br": "brotli", ".lzo": "lzop", ".sz": "snappy",
	".7z": "7-Zip", ".zip": "zip", ".tgz": "gzip", ".txz": "xz", ".tbz2": "bzip2",
}

// compressorSuffix refuses a destination named for a compressor vmaconv
// does not write, naming those it does: an archive's, if the name
// without the suffix is an archive's.
func compressorSuffix(reg *format.Registry, dst string) error {
	ext := strings.ToLower(filepath.Ext(dst))
	name, ok := compressors[ext]
	if !ok {
		return nil
	}
	stem := strings.TrimSuffix(dst, filepath.Ext(dst))
	if archiveExtension(reg, strings.ToLower(filepath.Ext(stem))) {
		return format.Unsupported("%s: vmaconv does not write %s; it compresses archives as .vma.zst (zstd) or .vma.gz (gzip), which Proxmox restores", dst, name)
	}
	return format.Unsupported("%s: vmaconv does not write %s-compressed images; it compresses archives (.vma.zst, .vma.gz) and qcow2 clusters (--compress): write %s and compress that, or pass -O raw to write raw bytes under this name", dst, name, stem)
}

// archiveExtension reports whether ext is an extension of a format that
// writes archives.
func archiveExtension(reg *format.Registry, ext string) bool {
	for _, f := range reg.Formats() {
		if f.Multi && f.Create != nil && slices.Contains(f.Extensions, ext) {
			return true
		}
	}
	return false
}

// ReadConfigs reads the config files of -c arguments, stored under NAME
// for NAME=FILE (a path that exists as given is always a file) or under
// their base names. A file is read up to one byte past limit, the largest
// config an archive holds (format.Registry.MaxConfig), so that -c
// /dev/zero fails at once.
func ReadConfigs(args []string, limit int) ([]format.Config, error) {
	var cs []format.Config
	for _, arg := range args {
		path, name := arg, filepath.Base(arg)
		if _, err := os.Stat(arg); err != nil {
			if n, p, ok := strings.Cut(arg, "="); ok && n != "" && !strings.ContainsRune(n, '/') {
				path, name = p, n
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(data) > limit {
			return nil, format.Unsupported("%s: a config file holds at most %d bytes", path, limit)
		}
		cs = append(cs, format.Config{Name: name, Data: data})
	}
	return cs, nil
}

// Create starts the output of disks devs in format fm at d: standard
// output if d.Path is "-" (d.Stream then receives it), which must not be
// a terminal (binary data is not written to one); an s3:// object if
// d.Path names one (see createRemote). Options fm does not
// take, or an output it cannot write (a pipe for qcow2, -n to standard
// output), are errors matching format.ErrUnsupportedOption.
func Create(fm format.Format, d format.Dest, devs []format.Device, o format.CreateOptions, terminal bool) (format.Sink, error) {
	if d.Path == "-" && terminal {
		return nil, format.Unsupported("refusing to write %s data to a terminal: redirect it to a file (> out) or pipe it (| ssh host …)", fm.Name)
	}
	if d.Path == "-" && d.InPlace {
		return nil, format.Unsupported("-n writes into an existing file; - is standard output")
	}
	if IsRemote(d.Path) {
		return createRemote(fm, d, devs, o)
	}
	if d.Path != "-" {
		d.Stream = nil
	}
	return fm.Create(d, devs, o)
}

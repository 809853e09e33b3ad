// Package extract writes what an archive holds into a directory, a file
// each: its configs, and its disks as images of the format the caller
// chooses, named by the archive format's rules (format.ArchiveRules). The
// files appear whole or not at all: they are written into a temporary
// directory inside the target, then moved into place without replacing
// anything. The target may also be an s3:// prefix: the files are then
// objects under it, each uploaded as it is written and completed once all
// are.
//
// Like every library package of vmaconv it never prints: what the user
// should know goes to Options.Note.
package extract

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/internal/text"
	"github.com/vmaconv/vmaconv/output"
	"github.com/vmaconv/vmaconv/pipeline"
	"github.com/vmaconv/vmaconv/remote"
)

// Options say what Extract writes, and how. The zero value writes every
// disk as a raw image.
type Options struct {
	// Disks names the disks to write (all if empty). Configs are always
	// written.
	Disks []string
	// Format is the format of the disk images (raw if unset: the zero
	// Format), and Options its options, checked against it
	// (format.CheckOptions). A disk the archive's rules write as raw
	// bytes (a RAM-state stream) is raw whatever Format says.
	Format  format.Format
	Options format.Values
	// Salvage reads a damaged archive through (format.Salvager): what is
	// damaged is skipped and what is lost left as zeros, and
	// Result.Salvaged says what.
	Salvage bool
	// Workers is the number of parallel readers or writers (default: the
	// number of CPUs). The files are the same for any value.
	Workers int
	// NoSync skips syncing the files before they get their names.
	NoSync bool
	// Progress, if set, is called as pipeline.ConvertOptions.Progress is.
	Progress func(done, total int64)
	// Written, if set, is called once every file is written, before the
	// files are moved into place.
	Written func()
	// Note, if set, is told of names from the archive that had to change
	// to be file names.
	Note func(msg string)
	// Track, if set, is called with a function that removes what the run
	// wrote so far (the temporary directory, and the target if the run
	// made it), for an interrupted caller to call; the function it
	// returns is called when that is no longer needed.
	Track func(discard func()) (untrack func())
	// TrackTemp is given to the disk images' sinks (format.Dest).
	TrackTemp func(path string) (untrack func())
	// Overwrite lets the files of an s3:// target replace objects of
	// their names (a target directory must be new or empty, whatever it
	// says).
	Overwrite bool
}

// File is a file Extract writes.
type File struct {
	Name   string // in the target directory
	Origin string // what it comes from, for messages: "config NAME", "device NAME"
	config *format.Config
	disk   int           // index into the input's devices, for a disk
	format format.Format // of a disk's image
}

// Result is what Extract wrote, and what it read.
type Result struct {
	Files []File
	// Report describes the archive's disks (format.Reporter), or is nil.
	Report *format.Report
	// Salvaged says what a salvaging read skipped and lost
	// (Options.Salvage).
	Salvaged *format.SalvageReport
}

// CheckDir accepts a target directory that does not exist yet (its
// parent must) or an empty one.
func CheckDir(dir string) error {
	dir = filepath.Clean(dir) // "newdir/" is newdir
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if pfi, err := os.Stat(filepath.Dir(dir)); err != nil || !pfi.IsDir() {
			return fmt.Errorf("cannot create %s: its parent directory does not exist", dir)
		}
		return nil
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var left []string
	for _, en := range entries {
		if outfile.IsTempName(en.Name()) {
			left = append(left, en.Name())
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%s is not empty: it holds %s, left by an interrupted vmaconv run; remove it, or extract into a new directory", dir, strings.Join(left, ", "))
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty; extract needs a new or empty directory", dir)
	}
	return nil
}

// Extract writes in's configs and disks into dir (see CheckDir), a file
// each, named by the rules of in's format: files that would have one name
// are refused before anything is written, and so are disks that reading
// would fail on (format.Checker). On failure nothing is left: neither the
// files nor dir, if Extract made it. An error for an option the disks'
// format cannot honour matches format.ErrUnsupportedOption.
func Extract(ctx context.Context, in *input.Input, dir string, o Options) (res *Result, err error) {
	if o.Format.Name == "" {
		o.Format = raw.Format
	}
	files, err := plan(in, o)
	if err != nil {
		return nil, err
	}
	var disks []int
	for _, f := range files {
		if f.config == nil {
			disks = append(disks, f.disk)
		}
	}
	if err := in.Check(disks); err != nil {
		return nil, err
	}
	if format.IsURL(dir) {
		return extractRemote(ctx, in, dir, files, disks, o)
	}

	created := false
	if _, serr := os.Lstat(dir); errors.Is(serr, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o777); err != nil {
			return nil, err
		}
		created = true
	}
	tmp, err := os.MkdirTemp(dir, ".vmaconv-extract-")
	if err != nil {
		if created {
			os.Remove(dir)
		}
		return nil, err
	}
	// Until everything is written, files live in tmp; on failure it is
	// removed, and so is dir if this run created it.
	discard := func() {
		os.RemoveAll(tmp)
		if created {
			os.Remove(dir)
		}
	}
	if o.Track != nil {
		defer o.Track(discard)()
	}
	var sinks multiSink
	defer func() {
		sinks.Abort()
		if err != nil {
			discard()
		}
		os.RemoveAll(tmp) // empty after a success
	}()

	for _, f := range files {
		path := filepath.Join(tmp, f.Name)
		if f.config != nil {
			if err := writeConfig(path, f.config.Data, !o.NoSync); err != nil {
				return nil, err
			}
			continue
		}
		co := format.CreateOptions{Options: o.Options}
		if f.format.Name != o.Format.Name {
			co = format.CreateOptions{} // raw bytes, whatever the disks' format
		}
		d := format.Dest{Path: path, Name: filepath.Join(dir, f.Name), NoSync: o.NoSync, TrackTemp: o.TrackTemp}
		s, err := f.format.Create(d, []format.Device{{Size: in.Devices()[f.disk].Size}}, co)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s)
	}
	var salvager format.Salvager
	if o.Salvage {
		var ok bool
		if salvager, ok = in.Stream().(format.Salvager); !ok {
			return nil, fmt.Errorf("%s: a %s input cannot be salvaged", in.Name(), in.Format().Name)
		}
		salvager.Salvage()
	}
	err = pipeline.Convert(ctx, sinks, []pipeline.Selection{{Input: in, Disks: disks}}, pipeline.ConvertOptions{Workers: o.Workers, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	if err := sinks.Commit(); err != nil {
		return nil, err
	}
	if o.Written != nil {
		o.Written()
	}
	// Move everything into place without replacing anything: a file that
	// appeared meanwhile (another run into the same directory) fails the
	// run, and what it moved already is taken back.
	var moved []string
	for _, f := range files {
		dst := filepath.Join(dir, f.Name)
		if err := outfile.RenameNoReplace(filepath.Join(tmp, f.Name), dst); err != nil {
			for _, m := range moved {
				os.Remove(m)
			}
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("%s appeared while extracting (another run into %s?); nothing of this run was kept", dst, dir)
			}
			return nil, err
		}
		moved = append(moved, dst)
	}
	res = &Result{Files: files, Report: report(in)}
	if salvager != nil {
		sr := salvager.Salvaged()
		res.Salvaged = &sr
	}
	return res, nil
}

// extractRemote writes the files as objects under the s3:// prefix dir:
// each disk uploaded as it is written (output.Create: a raw disk as a
// stream, holes included; a qcow2 image staged in the temporary
// directory), each config in one part, and every object completed only
// once every disk has been read whole, disks first. Until then nothing
// appears under the prefix; a failure or an interruption aborts every
// upload. An object already under a file's name is refused before
// anything is read, unless o.Overwrite. If completing an object fails, the objects completed
// before it stay, and the error names them.
func extractRemote(ctx context.Context, in *input.Input, dir string, files []File, disks []int, o Options) (*Result, error) {
	prefix := dir
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	var sinks multiSink
	var configs []*remote.Upload
	abort := func() {
		sinks.Abort()
		for _, u := range configs {
			u.Abort()
		}
	}
	if o.Track != nil {
		defer o.Track(abort)()
	}
	ok := false
	defer func() {
		if !ok {
			abort()
		}
	}()
	for _, f := range files {
		name := prefix + f.Name
		if f.config != nil {
			u, err := remote.Create(ctx, name, o.Overwrite, output.RemoteOptions)
			if err != nil {
				return nil, err
			}
			configs = append(configs, u)
			if _, err := u.Write(f.config.Data); err != nil {
				return nil, err
			}
			continue
		}
		co := format.CreateOptions{Options: o.Options}
		if f.format.Name != o.Format.Name {
			co = format.CreateOptions{}
		}
		s, err := output.Create(f.format, format.Dest{Path: name, Name: name, NoSync: o.NoSync, TrackTemp: o.TrackTemp, Overwrite: o.Overwrite},
			[]format.Device{{Size: in.Devices()[f.disk].Size}}, co, false)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s)
	}
	var salvager format.Salvager
	if o.Salvage {
		var isSalvager bool
		if salvager, isSalvager = in.Stream().(format.Salvager); !isSalvager {
			return nil, fmt.Errorf("%s: a %s input cannot be salvaged", in.Name(), in.Format().Name)
		}
		salvager.Salvage()
	}
	if err := pipeline.Convert(ctx, sinks, []pipeline.Selection{{Input: in, Disks: disks}}, pipeline.ConvertOptions{Workers: o.Workers, Progress: o.Progress}); err != nil {
		return nil, err
	}
	if o.Written != nil {
		o.Written()
	}
	var done []string
	commit := func(name string, c func() error) error {
		if err := c(); err != nil {
			if len(done) > 0 {
				return fmt.Errorf("%w (completed before the failure, and left: %s)", err, strings.Join(done, ", "))
			}
			return err
		}
		done = append(done, name)
		return nil
	}
	i := 0
	for _, f := range files {
		if f.config == nil {
			if err := commit(prefix+f.Name, sinks[i].Commit); err != nil {
				return nil, err
			}
			i++
		}
	}
	for _, u := range configs {
		if err := commit(u.Name(), u.Commit); err != nil {
			return nil, err
		}
	}
	ok = true
	res := &Result{Files: files, Report: report(in)}
	if salvager != nil {
		sr := salvager.Salvaged()
		res.Salvaged = &sr
	}
	return res, nil
}

// report is what in says of its disks, once read.
func report(in *input.Input) *format.Report {
	if r, ok := in.Stream().(format.Reporter); ok {
		return r.Report()
	}
	if r, ok := in.Image().(format.Reporter); ok {
		return r.Report()
	}
	return nil
}

// plan decides the file of every config and of every disk asked for, by
// the rules of in's format, and refuses two files of one name.
func plan(in *input.Input, o Options) ([]File, error) {
	for _, want := range o.Disks {
		if !slices.ContainsFunc(in.Devices(), func(d format.Device) bool { return d.Name == want }) {
			return nil, fmt.Errorf("%s: no device %q in the archive (%s)", in.Name(), want, in.DeviceList())
		}
	}
	rules := in.Format().Archive
	ext := o.Format.Extensions[0]
	var files []File
	for i := range in.Configs() {
		c := &in.Configs()[i]
		name := format.SafeName(c.Name)
		if rules != nil {
			name = rules.ConfigFile(c.Name)
		}
		files = append(files, File{Name: name, Origin: "config " + text.Printable(c.Name), config: c})
	}
	for i, d := range in.Devices() {
		if len(o.Disks) > 0 && !slices.Contains(o.Disks, d.Name) {
			continue
		}
		f := File{Name: format.SafeName(d.Name) + ext, Origin: "device " + text.Printable(d.Name), disk: i, format: o.Format}
		if rules != nil {
			var isRaw bool
			if f.Name, isRaw = rules.DiskFile(d.Name, ext); isRaw {
				f.format = raw.Format
			}
		}
		files = append(files, f)
	}
	var named []format.NamedFile
	for _, f := range files {
		named = append(named, format.NamedFile{Origin: f.Origin, Name: f.Name})
	}
	if cs := format.Clashes(named); len(cs) > 0 {
		return nil, fmt.Errorf("%s: %s and %s would both be written as %s", in.Name(), cs[0].First.Origin, cs[0].Second.Origin, cs[0].First.Name)
	}
	for _, f := range files {
		var name string
		if f.config != nil {
			name = f.config.Name
		} else {
			name = in.Devices()[f.disk].Name
		}
		if format.SafeName(name) != name && o.Note != nil {
			o.Note(fmt.Sprintf("%s written as %s", f.Origin, f.Name))
		}
	}
	return files, nil
}

// writeConfig writes a config file, synced unless told not to.
func writeConfig(path string, data []byte, sync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// multiSink is one sink per disk, seen as one.
type multiSink []format.Sink

func (m multiSink) Disk(i int) format.DiskWriter { return m[i].Disk(0) }

func (m multiSink) Commit() error {
	for _, s := range m {
		if err := s.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func (m multiSink) Abort() error {
	for _, s := range m {
		s.Abort()
	}
	return nil
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/pipeline"
)

type extractCmd struct {
	archiveArg
	Dir         string    `arg:"" help:"Target directory: created if missing; if it exists it must be empty."`
	Device      []string  `short:"d" placeholder:"NAME" help:"Restore only this device (repeatable). Configs are always written."`
	OFmt        string    `short:"O" name:"output-format" placeholder:"FMT" help:"Format of the disk files: raw (disk-NAME.raw, the default) or qcow2 (disk-NAME.qcow2)."`
	Compress    string    `placeholder:"zlib|zstd" help:"Compress qcow2 disk files' clusters."`
	Level       *int      `placeholder:"N" help:"zstd compression level for qcow2 clusters."`
	ClusterSize *byteSize `name:"cluster-size" placeholder:"SIZE" help:"qcow2 cluster size, in bytes or with a suffix as qemu-img takes it (64K, 2M; default 64K)."`
	optionsFlag
	Workers  *int `short:"m" placeholder:"N" help:"Parallel readers, 1 to 1024 (default: the number of CPUs)."`
	Progress bool `short:"p" help:"Show progress on stderr."`
	Verbose  bool `short:"v" help:"List the files written and per-device statistics."`
	Salvage  bool `help:"Restore what is intact of a damaged archive: skip damaged extents, resynchronise on the next valid one, fill what is lost with zeros, and report it (exit status 3)."`
	cacheFlags
}

// extractOutput is one file extract writes.
type extractOutput struct {
	origin string // what it comes from, for messages
	name   string // file name inside the target directory
	config *format.Config
	dev    int // index into the input's devices, for a disk
	format format.Format
}

func (c *extractCmd) Run(e *env) (err error) {
	po, err := workerOptions(c.Workers)
	if err != nil {
		return err
	}
	if err := c.cacheFlags.apply(e); err != nil {
		return err
	}
	dfm := raw.Format
	if c.OFmt != "" {
		if dfm, err = registry.Lookup(c.OFmt); err != nil {
			return usageError{err}
		}
		if dfm.Create == nil || dfm.Multi {
			return usageError{fmt.Errorf("-O %s: extract writes one image per disk (raw or qcow2)", c.OFmt)}
		}
	}
	copts, err := c.sinkOptions(dfm)
	if err != nil {
		return err
	}
	if err := checkTargetDir(c.Dir); err != nil {
		return err
	}
	in, err := openInput(e, format.Ref{Path: c.Archive}, input.Options{Format: vma.Name, Stream: c.Salvage})
	if err != nil {
		return err
	}
	defer in.Close()
	outs, err := c.plan(e, in, dfm)
	if err != nil {
		return err
	}
	var devs []int
	for _, o := range outs {
		if o.config == nil {
			devs = append(devs, o.dev)
		}
	}
	if err := in.Check(devs); err != nil {
		return err
	}

	created := false
	if _, serr := os.Lstat(c.Dir); errors.Is(serr, fs.ErrNotExist) {
		if err := os.Mkdir(c.Dir, 0o777); err != nil {
			return err
		}
		created = true
	}
	tmpDir, err := os.MkdirTemp(c.Dir, ".vmaconv-extract-")
	if err != nil {
		if created {
			os.Remove(c.Dir)
		}
		return err
	}
	// Until everything is written, outputs live in tmpDir; on failure it is
	// removed, and so is the target directory if this run created it.
	discard := func() {
		os.RemoveAll(tmpDir)
		if created {
			os.Remove(c.Dir)
		}
	}
	defer atInterrupt(discard)()
	var sinks multiSink
	defer func() {
		sinks.Abort()
		if err != nil {
			discard()
		}
		os.RemoveAll(tmpDir) // empty after a success
	}()

	var sel []int
	for _, o := range outs {
		path := filepath.Join(tmpDir, o.name)
		if o.config != nil {
			if err := writeConfig(path, o.config.Data, !e.noSync); err != nil {
				return err
			}
			continue
		}
		co := copts
		if o.format.Name != dfm.Name {
			co = sinkOptions{} // the vmstate stream, raw whatever -O says
		}
		d := in.Devices()[o.dev]
		s, err := createSinkAs(e, o.format, path, filepath.Join(c.Dir, o.name), false, false, []format.Device{{Size: d.Size}}, co)
		if err != nil {
			return err
		}
		sinks = append(sinks, s)
		sel = append(sel, o.dev)
	}
	if c.Salvage {
		vma.ReaderOf(in.Stream()).Salvage()
	}
	p := newProgress(e, c.Progress, "extracting", -1)
	err = pipeline.Convert(e.ctx, sinks, []pipeline.Selection{{Input: in, Disks: sel}}, pipeline.ConvertOptions{Workers: po.Workers, Progress: p.report})
	if err != nil {
		return err
	}
	if err := sinks.Commit(); err != nil {
		return err
	}
	p.finish()
	// Move everything into place without replacing anything: a file that
	// appeared meanwhile (another run into the same directory) fails the
	// extract, and what this run moved already is taken back.
	var moved []string
	for _, o := range outs {
		dst := filepath.Join(c.Dir, o.name)
		if err := outfile.RenameNoReplace(filepath.Join(tmpDir, o.name), dst); err != nil {
			for _, m := range moved {
				os.Remove(m)
			}
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s appeared while extracting (another run into %s?); nothing of this run was kept", dst, c.Dir)
			}
			return err
		}
		moved = append(moved, dst)
	}
	if c.Verbose {
		for _, o := range outs {
			fmt.Fprintf(e.stdout, "%s <- %s\n", filepath.Join(c.Dir, o.name), o.origin)
		}
		res := vma.ResultOf(in.Stream())
		if res == nil {
			res = archiveStats(in)
		}
		printStats(e.stdout, res, false)
	}
	if c.Salvage {
		return salvageReport(e, vma.ReaderOf(in.Stream()))
	}
	return nil
}

// sinkOptions are the options of the disk files' format, dfm: from the
// flags and -o, checked before anything is read or written.
func (c *extractCmd) sinkOptions(dfm format.Format) (sinkOptions, error) {
	var flags []format.Setting
	if c.Compress != "" {
		flags = append(flags, flagSetting("--compress", c.Compress))
	}
	if v, ok := intFlag(c.Level); ok {
		flags = append(flags, flagSetting("--level", v))
	}
	o, err := newSinkOptions(c.Options, append(flags, clusterSetting(c.ClusterSize)...)...)
	if err == nil {
		err = o.check(dfm)
	}
	return o, err
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

// archiveStats describes an archive file's devices from its index, as
// vma.Unpack would after reading it.
func archiveStats(in *input.Input) *vma.Result {
	a := vma.ArchiveOf(in.Image())
	if a == nil {
		return &vma.Result{}
	}
	res := &vma.Result{Extents: a.Extents(), Bytes: in.Size()}
	for _, d := range a.Devices() {
		dev := d.Device()
		res.Devices = append(res.Devices, vma.DeviceStats{Device: dev, Clusters: dev.Clusters(), Stored: d.Stored(), Zero: dev.Size - d.Stored()})
	}
	return res
}

// salvageReport prints what salvage skipped and lost, and returns an
// incompleteError if anything was.
func salvageReport(e *env, rd *vma.Reader) error {
	for _, d := range rd.Damaged() {
		if d.Length <= 0 {
			fmt.Fprintf(e.stderr, "vmaconv: damaged: input ends at byte %d: %s\n", d.Offset, oneLine(d.Err))
			continue
		}
		fmt.Fprintf(e.stderr, "vmaconv: damaged: bytes %d-%d (%d bytes) skipped: %s\n", d.Offset, d.Offset+d.Length-1, d.Length, oneLine(d.Err))
	}
	if n := rd.DamagedDropped(); n > 0 {
		fmt.Fprintf(e.stderr, "vmaconv: damaged: %d more ranges not listed\n", n)
	}
	for _, d := range rd.Damaged() {
		var ce *compress.Error
		if errors.As(d.Err, &ce) && ce.Late() {
			fmt.Fprintf(e.stderr, "vmaconv: warning: the %s layer's checksum failed only at its end: clusters restored before it may hold damaged data; compare them with another copy\n", ce.Format)
		}
	}
	for _, x := range rd.Suspect() {
		for _, m := range x.Clusters {
			fmt.Fprintf(e.stderr, "vmaconv: warning: the extent at byte %d is followed by %d unexpected bytes: if they were inserted into its data, %s clusters %s hold shifted data (VMA has no data checksums); compare them with another copy\n",
				x.Offset, x.Gap, printable(m.Device.Name), clusterRanges(m))
		}
	}
	lost := 0
	for _, m := range rd.MissingClusters() {
		fmt.Fprintf(e.stderr, "vmaconv: lost: %s: %d of %d clusters, written as zeros: %s\n", printable(m.Device.Name), m.Total, m.Device.Clusters(), clusterRanges(m))
		lost++
	}
	damaged := len(rd.Damaged()) + int(rd.DamagedDropped())
	if lost == 0 && damaged == 0 {
		return nil
	}
	return incompleteError{fmt.Errorf("salvaged an incomplete archive: %d damaged ranges, %d devices with lost clusters", damaged, lost)}
}

// oneLine returns err's text with control characters escaped, so that it
// stays one line and cannot drive the terminal.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return escapeControls(err.Error())
}

// clusterRanges lists m's ranges with their device byte ranges, and "…" when
// there are more than listed.
func clusterRanges(m vma.MissingRanges) string {
	var rs []string
	for _, r := range m.Ranges {
		rs = append(rs, fmt.Sprintf("%d-%d (bytes %d-%d)", r.First, r.Last, r.First*vma.ClusterSize, min((r.Last+1)*vma.ClusterSize, m.Device.Size)-1))
	}
	more := ""
	if n := len(m.Ranges); n > 0 && int64(n) < m.Total && rangesLen(m.Ranges) < m.Total {
		more = ", …"
	}
	return strings.Join(rs, ", ") + more
}

func rangesLen(rs []vma.Range) int64 {
	n := int64(0)
	for _, r := range rs {
		n += r.Last - r.First + 1
	}
	return n
}

// checkTargetDir accepts a directory that does not exist yet (its parent
// must) or an empty one.
func checkTargetDir(dir string) error {
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

// plan decides the file name of every output: configs under their
// (sanitised) names, disks as disk-<name>.raw (or .qcow2), a vmstate
// stream as vmstate.bin, as Proxmox's vma extract names them.
func (c *extractCmd) plan(e *env, in *input.Input, dfm format.Format) ([]*extractOutput, error) {
	for _, want := range c.Device {
		if !slices.ContainsFunc(in.Devices(), func(d format.Device) bool { return d.Name == want }) {
			return nil, fmt.Errorf("%s: no device %q in the archive (%s)", in.Name(), want, in.DeviceList())
		}
	}
	ext := dfm.Extensions[0]
	var outs []*extractOutput
	var files []namedFile
	for i := range in.Configs() {
		cf := &in.Configs()[i]
		outs = append(outs, &extractOutput{origin: "config " + printable(cf.Name), name: configFileName(cf.Name), config: cf})
	}
	for i, d := range in.Devices() {
		if len(c.Device) > 0 && !slices.Contains(c.Device, d.Name) {
			continue
		}
		o := &extractOutput{origin: "device " + printable(d.Name), name: extractFileName(d.Name, ext), dev: i, format: dfm}
		if d.Name == vma.VMStateName {
			o.format = raw.Format
		}
		outs = append(outs, o)
	}
	for _, o := range outs {
		files = append(files, namedFile{o.origin, o.name})
	}
	if cs := clashes(files); len(cs) > 0 {
		return nil, fmt.Errorf("%s: %s and %s would both be written as %s", in.Name(), cs[0].first.origin, cs[0].second.origin, cs[0].first.name)
	}
	for _, o := range outs {
		if o.config != nil && o.name != o.config.Name {
			e.note("%s written as %s", o.origin, o.name)
		}
		if o.config == nil && o.name != "vmstate.bin" && o.name != "disk-"+in.Devices()[o.dev].Name+ext {
			e.note("%s written as %s", o.origin, o.name)
		}
	}
	return outs, nil
}

// safeName turns a name from an archive into a file name that stays inside
// the target directory on every OS: only ASCII letters, digits and ._-+@=,
// are kept, others become '_'; a leading '.' becomes '_' (no hidden files,
// no "." or ".."), and very long names are shortened with a hash suffix.
func safeName(name string) string {
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

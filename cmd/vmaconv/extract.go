package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vmaconv/vmaconv/extract"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
)

type extractCmd struct {
	archiveArg
	Dir         string    `arg:"" help:"Target directory: created if missing; if it exists it must be empty. Or an s3:// prefix (s3://BUCKET/PREFIX/): each file an object under it, uploaded as it is written, all completed once every disk is read; none may exist yet."`
	Device      []string  `short:"d" placeholder:"NAME" help:"Restore only this device (repeatable). Configs are always written."`
	OFmt        string    `short:"O" name:"output-format" placeholder:"FMT" help:"Format of the disk files: raw (disk-NAME.raw, the default) or qcow2 (disk-NAME.qcow2)."`
	Compress    string    `placeholder:"zlib|zstd" help:"Compress qcow2 disk files' clusters."`
	Level       *int      `placeholder:"N" help:"zstd compression level for qcow2 clusters."`
	ClusterSize *byteSize `name:"cluster-size" placeholder:"SIZE" help:"qcow2 cluster size, in bytes or with a suffix as qemu-img takes it (64K, 2M; default 64K)."`
	optionsFlag
	Workers   *int `short:"m" placeholder:"N" help:"Parallel readers, 1 to 1024 (default: the number of CPUs)."`
	Progress  bool `short:"p" help:"Show progress on stderr."`
	Verbose   bool `short:"v" help:"List the files written and per-device statistics."`
	Overwrite bool `help:"Replace the objects of an s3:// target (a target directory must be new or empty whatever this says)."`
	Salvage   bool `help:"Restore what is intact of a damaged archive: skip damaged extents, resynchronise on the next valid one, fill what is lost with zeros, and report it (exit status 3)."`
	cacheFlags
}

func (c *extractCmd) Run(e *env) error {
	po, err := workerOptions(c.Workers)
	if err != nil {
		return err
	}
	if err := c.cacheFlags.apply(e); err != nil {
		return err
	}
	dfm, err := registry.Lookup("raw")
	if err != nil {
		return err
	}
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
	if !format.IsURL(c.Dir) {
		if err := extract.CheckDir(c.Dir); err != nil {
			return err
		}
	}
	in, err := openInput(e, format.Ref{Path: c.Archive}, input.Options{Format: archiveFormat().Name, Stream: c.Salvage})
	if err != nil {
		return err
	}
	defer in.Close()
	p := newProgress(e, c.Progress, "extracting", -1)
	res, err := extract.Extract(e.ctx, in, c.Dir, extract.Options{Disks: c.Device, Format: dfm, Options: copts.Options, Salvage: c.Salvage,
		Workers: po.Workers, NoSync: e.noSync, Progress: p.report, Written: p.finish,
		Note: func(msg string) { e.note("%s", msg) }, Track: atInterrupt, TrackTemp: trackTemp, Overwrite: c.Overwrite})
	if errors.Is(err, format.ErrUnsupportedOption) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if c.Verbose {
		for _, f := range res.Files {
			name := filepath.Join(c.Dir, f.Name)
			if format.IsURL(c.Dir) {
				name = strings.TrimSuffix(c.Dir, "/") + "/" + f.Name
			}
			fmt.Fprintf(e.stdout, "%s <- %s\n", name, f.Origin)
		}
		if res.Report != nil {
			printStats(e.stdout, res.Report.Disks, false)
		}
	}
	if s := res.Salvaged; s != nil {
		for _, l := range s.Damaged {
			fmt.Fprintf(e.stderr, "vmaconv: damaged: %s\n", escapeControls(l))
		}
		for _, l := range s.Doubtful {
			fmt.Fprintf(e.stderr, "vmaconv: warning: %s\n", escapeControls(l))
		}
		for _, l := range s.Lost {
			fmt.Fprintf(e.stderr, "vmaconv: lost: %s\n", escapeControls(l))
		}
		if s.DamagedRanges > 0 || len(s.Lost) > 0 {
			return incompleteError{fmt.Errorf("salvaged an incomplete archive: %d damaged ranges, %d devices with lost clusters", s.DamagedRanges, len(s.Lost))}
		}
	}
	return nil
}

// sinkOptions are the options of the disk files' format, dfm: from the
// flags and -o, checked before anything is read or written.
func (c *extractCmd) sinkOptions(dfm format.Format) (format.CreateOptions, error) {
	var flags []format.Setting
	if c.Compress != "" {
		flags = append(flags, flagSetting("--compress", c.Compress))
	}
	if v, ok := intFlag(c.Level); ok {
		flags = append(flags, flagSetting("--level", v))
	}
	o, err := newSinkOptions(c.Options, append(flags, clusterSetting(c.ClusterSize)...)...)
	if err != nil {
		return format.CreateOptions{}, err
	}
	return o.createOptions(dfm)
}

// oneLine returns err's text with control characters escaped, so that it
// stays one line and cannot drive the terminal.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return escapeControls(err.Error())
}

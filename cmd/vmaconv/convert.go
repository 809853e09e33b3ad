package main

import (
	"fmt"
	"os"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/output"
	"github.com/vmaconv/vmaconv/pipeline"
)

// readFlags are the source options convert, create and checksum share.
type readFlags struct {
	Format       string `short:"f" placeholder:"FMT" help:"Source format (${formats}); default: detected from the file's magic bytes, raw if none."`
	AllowBacking bool   `help:"Let a qcow2 image read its backing files (their format must be recorded in the image); each one read is named in a note. Nothing else, -f qcow2 included, allows it."`
	Workers      *int   `short:"m" placeholder:"N" help:"Parallel readers, 1 to 1024 (default: the number of CPUs)."`
	Progress     bool   `short:"p" help:"Show progress on stderr."`
}

// pipelineOptions checks -m; like every usage error, before a file is
// touched.
func (r *readFlags) pipelineOptions() (pipeline.Options, error) {
	return workerOptions(r.Workers)
}

// workerOptions turns -m into pipeline options: unset means the number
// of CPUs; 0 and negative numbers are refused, not taken as the default.
func workerOptions(m *int) (pipeline.Options, error) {
	var o pipeline.Options
	if m != nil {
		if *m < 1 || *m > 1024 {
			return o, usageError{fmt.Errorf("-m %d: want 1 to 1024 parallel readers", *m)}
		}
		o.Workers = *m
	}
	if err := o.Validate(); err != nil {
		return o, usageError{err}
	}
	return o, nil
}

// cacheFlags is qemu-img's -t: whether outputs are synced before they
// are renamed into place.
type cacheFlags struct {
	Cache string `short:"t" name:"cache" placeholder:"MODE" default:"writeback" help:"Output cache mode, as qemu-img's -t: writeback (the default) syncs every output before it gets its name, so that a finished run survives a crash; unsafe skips that (faster, for scratch restores; qemu-img convert's default)."`
}

// apply checks -t and tells the outputs.
func (c cacheFlags) apply(e *env) error {
	switch c.Cache {
	case "writeback", "":
		e.noSync = false
	case "unsafe":
		e.noSync = true
	case "none", "directsync", "writethrough":
		return usageError{fmt.Errorf("-t %s: vmaconv does not write with O_DIRECT or sync every write; use writeback (the default: synced once, before the output gets its name) or unsafe (not synced)", c.Cache)}
	default:
		return usageError{fmt.Errorf("-t %q: want writeback or unsafe", c.Cache)}
	}
	return nil
}

// writeFlags are the options of commands that write a file.
type writeFlags struct {
	cacheFlags
	Overwrite bool     `help:"Replace DST if it exists."`
	Config    []string `short:"c" placeholder:"[NAME=]FILE" help:"Add a config file to an archive (repeatable), under NAME or FILE's base name: -c qemu-server.conf=100.conf. A qemu-server.conf gets the #qmdump#map lines Proxmox's restore needs; without one, vmaconv writes a minimal one."`
	Compress  string   `placeholder:"zstd|gzip|zlib|none" help:"Compress the output: an archive with zstd or gzip (default: from DST's extension, .vma.zst or .vma.gz), a qcow2 image's clusters with zlib or zstd (like qemu-img convert -c)."`
	Level     *int     `placeholder:"N" help:"Compression level (zstd 1-22, default 3; gzip 1-9, default 6; qcow2 zlib has one level)."`
	Seekable  bool     `help:"Write a .vma.zst in the zstd seekable format (a frame per extent header and per extent's data, and a seek table): zstd -d and Proxmox restore it as they are, and vmaconv reads it at random (serve, mount, one device) without decompressing it whole."`
	UUID      string   `placeholder:"UUID" help:"Archive UUID (default: random), for reproducible archives."`
	CTime     string   `name:"ctime" placeholder:"TIME" help:"Archive creation time, as Unix seconds or RFC 3339 (2024-06-10T06:13:20Z) (default: now), for reproducible archives."`
	optionsFlag
}

type convertCmd struct {
	Src         string    `arg:"" help:"Source: an image or archive of a format vmaconv reads (${formats}), as FILE, ARCHIVE:DEVICE or an s3:// or https:// URL; - for an archive on stdin."`
	Dst         string    `arg:"" help:"Destination file, or - for stdout, or a directory for an archive named as vzdump names backups (a repacked archive after its source: its VMID, ctime and compression); its format comes from -O or its extension (each format's own, such as .vma.zst or .qcow2; anything else is raw)."`
	OFmt        string    `short:"O" name:"output-format" placeholder:"FMT" help:"Destination format (${oformats}); default: from DST's name."`
	NoCreate    bool      `short:"n" name:"no-create" help:"Write raw output into the existing DST (a block device, or a file at least as large) in place, zeros included, like qemu-img convert -n. No temporary file: a failure leaves DST partly written."`
	Name        string    `placeholder:"DEVICE" help:"Device name in the archive: drive-<key> or <key> (scsi0, virtio1, efidisk0, …); default drive-scsi0, or the source device's name."`
	ClusterSize *byteSize `name:"cluster-size" placeholder:"SIZE" help:"qcow2 cluster size, in bytes or with a suffix as qemu-img takes it (64K, 2M; default 64K)."`
	Target      string    `placeholder:"NAME" help:"Write for a platform: the options of the output's format that it takes (azure: a fixed VHD of whole MiB). -o help lists a format's targets."`
	readFlags
	writeFlags
	archiveFlags
}

// outputFormat decides the destination's format (output.Choose): -O,
// else from dst; standard output's from the input (in).
func outputFormat(e *env, dst, forced string, in *input.Input) (format.Format, error) {
	o := output.Options{Forced: forced, Note: func(msg string) { e.note("%s", msg) }}
	if in != nil {
		o.FromArchive = in.Archive()
	}
	fm, err := output.Choose(registry, dst, o)
	return fm, usage(err)
}

// createOptions gathers what the output's sink is told: the configs, and
// the options the write flags, more (flags of the command's own) and -o
// give, to be checked once the output's format is known.
func (w *writeFlags) createOptions(configs []format.Config, more ...format.Setting) (sinkOptions, error) {
	o, err := newSinkOptions(w.Options, append(w.writeSettings(), more...)...)
	o.Configs = configs
	return o, err
}

// readConfigs reads the -c files (output.ReadConfigs).
func (w *writeFlags) readConfigs() ([]format.Config, error) {
	cs, err := output.ReadConfigs(w.Config, registry.MaxConfig())
	return cs, usage(err)
}

// createSink starts the output; options the format does not take or
// cannot honour are usage errors.
func createSink(e *env, fm format.Format, dst string, inPlace, overwrite bool, devs []format.Device, o sinkOptions) (format.Sink, error) {
	return createSinkAs(e, fm, dst, "", inPlace, overwrite, devs, o)
}

// createSinkAs is createSink for an output written at dst (in a temporary
// directory) that messages call name.
func createSinkAs(e *env, fm format.Format, dst, name string, inPlace, overwrite bool, devs []format.Device, so sinkOptions) (format.Sink, error) {
	o, err := so.createOptions(fm)
	if err != nil {
		return nil, err
	}
	o.Note = func(msg string) { e.note("%s", msg) }
	d := format.Dest{Path: dst, Name: name, InPlace: inPlace, Overwrite: overwrite, TrackTemp: trackTemp, NoSync: e.noSync, Stream: e.stdout}
	s, err := output.Create(fm, d, devs, o, e.stdoutTTY)
	return s, usage(err)
}

// trackTemp makes an interrupted run remove a temporary output.
func trackTemp(path string) func() { return atInterrupt(func() { os.Remove(path) }) }

func (c *convertCmd) Run(e *env, kctx *kong.Context) error {
	if err := c.archiveFlags.check(); err != nil {
		return err
	}
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	if err := c.cacheFlags.apply(e); err != nil {
		return err
	}
	configs, err := c.readConfigs()
	if err != nil {
		return err
	}
	copts, err := c.createOptions(configs, append(clusterSetting(c.ClusterSize), c.archiveSettings(flagGiven(kctx, "vmid"))...)...)
	if err != nil {
		return err
	}
	copts.target = c.Target
	// The destination's format is known before the source is opened,
	// except for stdout, whose default depends on the source.
	var ofm format.Format
	if c.Dst != "-" || c.OFmt != "" {
		if ofm, err = outputFormat(e, c.Dst, c.OFmt, nil); err != nil {
			return err
		}
		if err := copts.check(ofm); err != nil {
			return err
		}
	}
	in, err := openInput(e, format.ParseRef(c.Src), input.Options{Format: c.Format, AllowBacking: c.AllowBacking})
	if err != nil {
		return err
	}
	defer in.Close()
	if ofm.Name == "" {
		if ofm, err = outputFormat(e, c.Dst, c.OFmt, in); err != nil {
			return err
		}
		if err := copts.check(ofm); err != nil {
			return err
		}
	}
	sel := in.Selected()
	if ofm.Multi {
		in.WholeSectors()
	}
	if !ofm.Multi {
		i, err := in.One()
		if err != nil {
			return err
		}
		sel = []int{i}
		if c.Name != "" {
			return usageError{fmt.Errorf("--name names a device in an archive; %s is %s", c.Dst, ofm.Name)}
		}
	} else if len(configs) == 0 {
		copts.Configs = in.Configs() // an archive keeps its configs unless -c replaces them
	}
	var devs []format.Device
	for _, i := range sel {
		d := in.Devices()[i]
		switch {
		case !ofm.Multi:
			d.Name = ""
		case c.Name != "" && len(sel) == 1:
			if d.Name, err = diskName(ofm, c.Name); err != nil {
				return err
			}
		case c.Name != "":
			return usageError{fmt.Errorf("--name renames one device; %s has %d (select one as %s:DEVICE)", in.Name(), len(sel), in.Ref().Path)}
		case d.Name == "":
			d.Name = "drive-scsi0"
		}
		devs = append(devs, d)
	}
	if err := in.Check(sel); err != nil {
		return err
	}
	if ofm.Multi {
		// An archive follows the rules of the tools that restore it (a
		// backup for Proxmox into a directory is named after its source),
		// except that one repacked whole into a file keeps its configs as
		// they are, so that it can come back byte for byte.
		copts.From = origin(in, len(configs) == 0, len(sel) == len(in.Devices()) && c.Name == "")
	}
	sink, err := createSink(e, ofm, c.Dst, c.NoCreate, c.Overwrite, devs, copts)
	if err != nil {
		return err
	}
	defer sink.Abort()
	what := "converting"
	if len(sel) == 1 {
		what = "converting " + in.DiskName(sel[0])
	}
	// An archive repacked into an archive keeps the source's order, whether
	// it is read at random or as a stream.
	p := newProgress(e, c.Progress, what, -1)
	err = pipeline.Convert(e.ctx, sink, []pipeline.Selection{{Input: in, Disks: sel}}, pipeline.ConvertOptions{Workers: o.Workers, Progress: p.report, Repack: ofm.Multi})
	if err == nil {
		err = sink.Commit()
	}
	if err != nil {
		if c.NoCreate {
			return fmt.Errorf("%s (written in part): %w", c.Dst, err)
		}
		return err
	}
	p.finish()
	return nil
}

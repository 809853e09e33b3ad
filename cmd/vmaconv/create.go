package main

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/pipeline"
)

type createCmd struct {
	Archive string   `arg:"" help:"Archive to write (.vma, or .vma.zst / .vma.gz to compress it); - for stdout."`
	Disks   []string `arg:"" placeholder:"NAME=IMAGE" help:"Devices, in order: drive-scsi0=disk.qcow2 drive-efidisk0=efi.raw …"`
	readFlags
	writeFlags
	archiveFlags
}

func (c *createCmd) Run(e *env, kctx *kong.Context) error {
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
	copts, err := c.createOptions(configs, c.archiveSettings(flagGiven(kctx, "vmid"))...)
	if err != nil {
		return err
	}
	fm := archiveFormat()
	if f, ok := registry.ForPath(c.Archive); ok {
		if !f.Multi {
			return usageError{fmt.Errorf("%s: create writes an archive (.vma, .vma.zst, .vma.gz), not %s", c.Archive, f.Name)}
		}
		fm = f
	} else if ff, ok := format.ForeignForPath(c.Archive); ok {
		return usageError{fmt.Errorf("%s: create writes an archive (.vma, .vma.zst, .vma.gz), not %s", c.Archive, ff.Name)}
	}
	if err := copts.check(fm); err != nil {
		return err
	}
	seen := map[string]bool{}
	var names, paths []string
	for _, arg := range c.Disks {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			return usageError{fmt.Errorf("%q: want NAME=IMAGE, e.g. drive-scsi0=disk.qcow2", arg)}
		}
		if name, err = diskName(fm, name); err != nil {
			return err
		}
		if seen[name] {
			return usageError{fmt.Errorf("device name %q given twice", name)}
		}
		seen[name] = true
		names, paths = append(names, name), append(paths, path)
	}
	var ins []*input.Input
	defer func() {
		for _, in := range ins {
			in.Close()
		}
	}()
	var devs []format.Device
	for i, path := range paths {
		in, err := openInput(e, format.Ref{Path: path}, input.Options{Format: c.Format, AllowBacking: c.AllowBacking})
		if err != nil {
			return err
		}
		ins = append(ins, in)
		if in.Archive() {
			return fmt.Errorf("%s: is a VMA archive; convert ARCHIVE:DEVICE to an image first, or use convert to repack it", path)
		}
		in.WholeSectors()
		devs = append(devs, format.Device{Name: names[i], Size: in.Devices()[0].Size})
	}
	copts.From = &format.Origin{} // disks from images
	sink, err := createSink(e, fm, c.Archive, false, c.Overwrite, devs, copts)
	if err != nil {
		return err
	}
	defer sink.Abort()
	var from []pipeline.Selection
	for _, in := range ins {
		from = append(from, pipeline.Selection{Input: in, Disks: []int{0}})
	}
	p := newProgress(e, c.Progress, "packing", -1)
	if err := pipeline.Convert(e.ctx, sink, from, pipeline.ConvertOptions{Workers: o.Workers, Progress: p.report}); err != nil {
		return err
	}
	if err := sink.Commit(); err != nil {
		return err
	}
	p.finish()
	return nil
}

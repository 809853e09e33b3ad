package main

import (
	"fmt"
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

type createCmd struct {
	Archive string   `arg:"" help:"Archive to write (.vma, or .vma.zst / .vma.gz to compress it)."`
	Disks   []string `arg:"" placeholder:"NAME=IMAGE" help:"Devices, in order: drive-scsi0=disk.qcow2 drive-efidisk0=efi.raw …"`
	readFlags
	writeFlags
}

func (c *createCmd) Run(e *env) error {
	var srcs []namedSource
	defer func() {
		for _, s := range srcs {
			s.src.Close()
		}
	}()
	wopts, err := c.writerOptions()
	if err != nil {
		return err
	}
	comp, err := c.archiveCompression(c.Archive)
	if err != nil {
		return err
	}
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var names, paths []string
	for _, arg := range c.Disks {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			return usageError{fmt.Errorf("%q: want NAME=IMAGE, e.g. drive-scsi0=disk.qcow2", arg)}
		}
		if seen[name] {
			return usageError{fmt.Errorf("device name %q given twice", name)}
		}
		seen[name] = true
		names, paths = append(names, name), append(paths, path)
	}
	for i, name := range names {
		path := paths[i]
		src, err := openSource(e, format.Ref{Path: path}, sourceOpts{format: c.Format, allowBacking: c.AllowBacking})
		if err != nil {
			return err
		}
		srcs = append(srcs, namedSource{name, src})
		if src.img == nil {
			return fmt.Errorf("%s: is a VMA archive; convert ARCHIVE:DEVICE to an image first, or use convert to repack one device", path)
		}
	}
	out, err := createOutput(c.Archive, c.Overwrite)
	if err != nil {
		return err
	}
	defer out.discard()
	aw, finish, err := archiveWriter(out, comp, c.Level)
	if err != nil {
		return err
	}
	if err := packImages(e, aw, srcs, c.Config, wopts, o, c.Progress); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	return out.commit()
}

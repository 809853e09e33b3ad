package main

import (
	"encoding/hex"
	"fmt"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/pipeline"
)

type checksumCmd struct {
	Src string `arg:"" help:"A disk image, ARCHIVE:DEVICE, or an archive (all its devices); - for an archive on stdin."`
	readFlags
}

// Run prints the sha256 of the guest-visible content, as sha256sum prints
// it for a raw file: "HEX  NAME".
func (c *checksumCmd) Run(e *env) error {
	src, err := openSource(e, format.ParseRef(c.Src), sourceOpts{format: c.Format, allowBacking: c.AllowBacking})
	if err != nil {
		return err
	}
	defer src.Close()
	if src.img != nil {
		o, err := c.pipelineOptions()
		if err != nil {
			return err
		}
		p := newProgress(e, c.Progress, "hashing", src.img.Size())
		o.Progress = p.update
		sum, err := pipeline.Hash(e.ctx, src.img, o)
		if err != nil {
			return fmt.Errorf("%s: %w", src.name(), err)
		}
		p.finish()
		fmt.Fprintf(e.stdout, "%x  %s\n", sum, c.Src)
		return nil
	}
	p := newProgress(e, c.Progress, "hashing", src.size)
	res, err := pipeline.Unpack(e.ctx, src.ar, nil, pipeline.UnpackOptions{Digest: true, Progress: p.update})
	if err != nil {
		return fmt.Errorf("%s: %w", src.name(), err)
	}
	p.finish()
	for _, d := range res.Devices {
		if src.dev == nil || d.Device.ID == src.dev.ID {
			ref := format.Ref{Path: src.ref.Path, Device: d.Device.Name}
			fmt.Fprintf(e.stdout, "%s  %s\n", hex.EncodeToString(d.SHA256), ref)
		}
	}
	return nil
}

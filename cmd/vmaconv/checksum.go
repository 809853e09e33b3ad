package main

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/pipeline"
)

type checksumCmd struct {
	Src string `arg:"" help:"A disk image, ARCHIVE:DEVICE, or an archive (all its devices); - for an archive on stdin."`
	readFlags
}

// Run prints the sha256 of the guest-visible content, as sha256sum prints
// it for a raw file: "HEX  NAME". Images and archive files are read with
// parallel readers; an archive stream in one pass.
func (c *checksumCmd) Run(e *env) error {
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	in, err := openInput(e, format.ParseRef(c.Src), sourceOpts{format: c.Format, allowBacking: c.AllowBacking})
	if err != nil {
		return err
	}
	defer in.Close()
	if err := in.check(in.sel); err != nil {
		return err
	}
	p := newProgress(e, c.Progress, "hashing", in.progressTotal(in.sel))
	sums := make([][]byte, len(in.devices))
	if in.ar == nil {
		done := int64(0)
		for _, i := range in.sel {
			base := done
			o.Progress = func(n int64) { p.update(base + n) }
			if sums[i], err = pipeline.Hash(e.ctx, in.source(i), o); err != nil {
				return fmt.Errorf("%s: %w", in.refOf(i), err)
			}
			done += in.devices[i].Size
		}
	} else {
		res, err := pipeline.Unpack(e.ctx, in.ar, nil, pipeline.UnpackOptions{Digest: true, Progress: p.update})
		if err != nil {
			return fmt.Errorf("%s: %w", in.name(), err)
		}
		for i := range in.devices {
			sums[i] = res.Devices[i].SHA256
		}
	}
	p.finish()
	for _, i := range in.sel {
		name := c.Src
		if in.archive() {
			name = in.refOf(i)
		}
		fmt.Fprintln(e.stdout, sumLine(hex.EncodeToString(sums[i]), name))
	}
	return nil
}

// sumLine formats a line as sha256sum does; a name with a backslash or a
// control character is escaped and the line starts with a backslash, as
// coreutils marks escaped names.
func sumLine(sum, name string) string {
	esc := escapeControls(name)
	if esc == name && !strings.Contains(name, `\`) {
		return sum + "  " + name
	}
	return `\` + sum + "  " + escapeControls(strings.ReplaceAll(name, `\`, `\\`))
}

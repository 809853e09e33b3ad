package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/vmaconv/vmaconv/pipeline"
)

type verifyCmd struct {
	archiveArg
	Digest  bool   `help:"Also compute the sha256 of every device's content (compare with 'sha256sum' of a restored disk)."`
	Verbose bool   `short:"v" help:"Print the archive header before the report."`
	Output  string `help:"Output format: human or json." enum:"human,json" default:"human"`
}

type verifyJSON struct {
	Filename  string             `json:"filename"`
	OK        bool               `json:"ok"`
	Extents   int64              `json:"extents"`
	BytesRead int64              `json:"bytes-read"`
	Devices   []verifyDeviceJSON `json:"devices"`
}

type verifyDeviceJSON struct {
	ID          int    `json:"id"`
	Name        string `json:"name"`
	VirtualSize int64  `json:"virtual-size"`
	Stored      int64  `json:"stored-bytes"`
	Zero        int64  `json:"zero-bytes"`
	SHA256      string `json:"sha256,omitempty"`
}

func (c *verifyCmd) Run(e *env) error {
	rd, done, err := c.open(e)
	if err != nil {
		return err
	}
	defer done()
	res, err := pipeline.Unpack(e.ctx, rd, nil, pipeline.UnpackOptions{Digest: c.Digest})
	if err != nil {
		return fmt.Errorf("%s: %w", c.name(), err)
	}
	if c.Output == "json" {
		j := verifyJSON{Filename: c.name(), OK: true, Extents: res.Extents, BytesRead: res.Bytes, Devices: []verifyDeviceJSON{}}
		for _, d := range res.Devices {
			j.Devices = append(j.Devices, verifyDeviceJSON{d.Device.ID, d.Device.Name, d.Device.Size, d.Stored, d.Zero, hex.EncodeToString(d.SHA256)})
		}
		return writeJSON(e.stdout, j)
	}
	if c.Verbose {
		printInfo(e.stdout, c.name(), rd.Header())
	}
	printStats(e.stdout, res, c.Digest)
	fmt.Fprintf(e.stdout, "ok: %s, %s, %s, %d bytes read\n", plural(len(res.Devices), "device"),
		plural(len(rd.Header().Configs), "config"), plural(int(res.Extents), "extent"), res.Bytes)
	return nil
}

// printStats prints the per-device table of verify and extract -v.
func printStats(w io.Writer, res *pipeline.Result, digest bool) {
	if len(res.Devices) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := "ID\tDEVICE\tSIZE\tSTORED\tZERO"
	if digest {
		head += "\tSHA256"
	}
	fmt.Fprintln(tw, head)
	for _, d := range res.Devices {
		line := fmt.Sprintf("%d\t%s\t%d\t%d\t%d", d.Device.ID, printable(d.Device.Name), d.Device.Size, d.Stored, d.Zero)
		if digest {
			line += "\t" + hex.EncodeToString(d.SHA256)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
)

type verifyCmd struct {
	Archives []string `arg:"" name:"archive" help:"VMA archives (compressed or not), or - for standard input."`
	Digest   bool     `help:"Also compute the sha256 of every device's content (compare with 'sha256sum' of a restored disk)."`
	Verbose  bool     `short:"v" help:"Print the archive header before the report."`
	Output   string   `help:"Output format: human or json." enum:"human,json" default:"human"`
	Progress bool     `short:"p" help:"Show progress on stderr."`
}

type verifyJSON struct {
	Filename  string             `json:"filename"`
	OK        bool               `json:"ok"`
	Error     string             `json:"error,omitempty"`
	Offset    *int64             `json:"offset,omitempty"`  // of the failure, in the archive
	Device    string             `json:"device,omitempty"`  // of the failure
	Cluster   *int64             `json:"cluster,omitempty"` // of the failure
	Extents   int64              `json:"extents"`
	BytesRead int64              `json:"bytes-read"`
	Devices   []verifyDeviceJSON `json:"devices"`
	// Why Proxmox's restore, with its defaults, would refuse the archive
	// or restore it wrong; empty if it would restore it.
	Proxmox []string `json:"proxmox-problems"`
	// Configs and devices that extract or mount would give one file
	// name.
	NameClashes []string `json:"name-clashes"`
}

type verifyDeviceJSON struct {
	ID          int    `json:"id"`
	Name        string `json:"name"`
	VirtualSize int64  `json:"virtual-size"`
	Stored      int64  `json:"stored-bytes"`
	Zero        int64  `json:"zero-bytes"`
	SHA256      string `json:"sha256,omitempty"`
}

// Run verifies every archive given, reporting each; it fails (status 1)
// if any of them fails, after all were read.
func (c *verifyCmd) Run(e *env) error {
	var failed []string
	var reports []verifyJSON
	for i, name := range c.Archives {
		if c.Output == "human" && len(c.Archives) > 1 {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			fmt.Fprintf(e.stdout, "%s:\n", printable(name))
		}
		j, err := c.verify(e, name)
		if err != nil {
			if e.ctx.Err() != nil {
				return err
			}
			failed = append(failed, name)
			if len(c.Archives) > 1 {
				fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(err))
			}
		}
		reports = append(reports, j)
		if len(c.Archives) == 1 && err != nil {
			if c.Output == "json" {
				if werr := writeJSON(e.stdout, j); werr != nil {
					return werr
				}
			}
			return err
		}
	}
	if c.Output == "json" {
		var v any = reports
		if len(reports) == 1 {
			v = reports[0]
		}
		if err := writeJSON(e.stdout, v); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return quietError{fmt.Errorf("%d of %d archives failed to verify", len(failed), len(c.Archives))}
	}
	return nil
}

// verify reads one archive through and reports it.
func (c *verifyCmd) verify(e *env, name string) (verifyJSON, error) {
	a := archiveArg{Archive: name}
	j := verifyJSON{Filename: a.name(), Devices: []verifyDeviceJSON{}, Proxmox: []string{}, NameClashes: []string{}}
	fail := func(err error) (verifyJSON, error) {
		j.Error = oneLine(err)
		var fe *vma.FormatError
		if errors.As(err, &fe) {
			if fe.Offset >= 0 {
				j.Offset = &fe.Offset
			}
			if fe.Cluster >= 0 {
				j.Cluster = &fe.Cluster
			}
			j.Device = fe.Device
		}
		return j, err
	}
	in, err := a.open(e)
	if err != nil {
		return fail(err)
	}
	defer in.Close()
	rd := vma.ReaderOf(in.Stream())
	p := newProgress(e, c.Progress, "verifying "+a.name(), in.Size())
	res, err := vma.Unpack(e.ctx, rd, nil, vma.UnpackOptions{Digest: c.Digest, Progress: func(int64) { p.update(in.Consumed()) }})
	if res != nil {
		j.Extents, j.BytesRead = res.Extents, res.Bytes
	}
	if err != nil {
		p.abort()
		return fail(fmt.Errorf("%s: %w", a.name(), err))
	}
	p.finish()
	j.OK = true
	for _, d := range res.Devices {
		j.Devices = append(j.Devices, verifyDeviceJSON{d.Device.ID, d.Device.Name, d.Device.Size, d.Stored, d.Zero, hex.EncodeToString(d.SHA256)})
	}
	j.Proxmox = append(j.Proxmox, vma.RestoreProblems(rd.Header())...)
	if name != "-" {
		if ok, _ := vma.CheckArchiveName(name); !ok {
			j.Proxmox = append(j.Proxmox, "its name: Proxmox restores only archives named vzdump-qemu-<VMID>-YYYY_MM_DD-HH_MM_SS.vma[.zst|.gz|.lzo] (pve-storage: \"couldn't determine archive info\")")
		}
	}
	for _, pr := range j.Proxmox {
		fmt.Fprintf(e.stderr, "vmaconv: warning: %s: Proxmox would not restore it: %s\n", printable(a.name()), escapeControls(pr))
	}
	var cnames, dnames []string
	for _, c := range rd.Header().Configs {
		cnames = append(cnames, c.Name)
	}
	for _, d := range rd.Header().Devices {
		dnames = append(dnames, d.Name)
	}
	j.NameClashes = append(j.NameClashes, nameClashes(cnames, dnames)...)
	for _, c := range j.NameClashes {
		fmt.Fprintf(e.stderr, "vmaconv: warning: %s: %s\n", printable(a.name()), escapeControls(c))
	}
	if c.Output == "json" {
		return j, nil
	}
	if c.Verbose {
		writeInfo(e.stdout, rd.Info(format.FileStat{Name: a.name(), Size: -1}))
	}
	printStats(e.stdout, res, c.Digest)
	fmt.Fprintf(e.stdout, "ok: %s, %s, %s, %d bytes read\n", plural(len(res.Devices), "device"),
		plural(len(rd.Header().Configs), "config"), plural(int(res.Extents), "extent"), res.Bytes)
	return j, nil
}

// printStats prints the per-device table of verify and extract -v.
func printStats(w io.Writer, res *vma.Result, digest bool) {
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

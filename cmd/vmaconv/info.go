package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
)

type infoCmd struct {
	Files  []string `arg:"" name:"file" help:"Images (raw, qcow2) and archives (VMA, compressed or not); - for an archive on stdin."`
	Format string   `short:"f" placeholder:"FMT" help:"Format of the files (qcow2, raw, vma); default: detected from their magic bytes."`
	Output string   `help:"Output format: human or json." enum:"human,json" default:"human"`
}

// infoJSON is `info --output json` of an archive; field names follow
// qemu-img info's JSON.
type infoJSON struct {
	Filename    string       `json:"filename"`
	Format      string       `json:"format"`
	Version     int          `json:"version"`
	ActualSize  *int64       `json:"actual-size,omitempty"`
	UUID        string       `json:"uuid"`
	CTime       string       `json:"ctime"`
	HeaderSize  int          `json:"header-size"`
	ClusterSize int          `json:"cluster-size"`
	Configs     []configJSON `json:"configs"`
	Devices     []deviceJSON `json:"devices"`
}

type configJSON struct {
	Name string `json:"name"`
	Size int    `json:"size"`
}

type deviceJSON struct {
	ID          int    `json:"id"`
	Name        string `json:"name"`
	VirtualSize int64  `json:"virtual-size"`
	VMState     bool   `json:"vmstate,omitempty"`
}

// imageJSON is `info --output json` of an image: qemu-img info's keys.
type imageJSON struct {
	Filename              string          `json:"filename"`
	Format                string          `json:"format"`
	VirtualSize           int64           `json:"virtual-size"`
	ActualSize            int64           `json:"actual-size"`
	ClusterSize           int64           `json:"cluster-size,omitempty"`
	BackingFilename       string          `json:"backing-filename,omitempty"`
	BackingFilenameFormat string          `json:"backing-filename-format,omitempty"`
	DirtyFlag             bool            `json:"dirty-flag"`
	FormatSpecific        *formatSpecific `json:"format-specific,omitempty"`
}

type formatSpecific struct {
	Type string      `json:"type"`
	Data qcow2Detail `json:"data"`
}

// qcow2Detail is qemu-img's format-specific data; version 2 images have
// no feature bits, so qemu-img reports none.
type qcow2Detail struct {
	Compat          string `json:"compat"`
	CompressionType string `json:"compression-type"`
	LazyRefcounts   *bool  `json:"lazy-refcounts,omitempty"`
	RefcountBits    int    `json:"refcount-bits"`
	Corrupt         *bool  `json:"corrupt,omitempty"`
	ExtendedL2      *bool  `json:"extended-l2,omitempty"`
}

// Run reports every file; it fails (status 1) if any could not be read,
// after reporting the others.
func (c *infoCmd) Run(e *env) error {
	var reports []any
	failed := 0
	for i, name := range c.Files {
		var buf strings.Builder
		j, err := c.info(e, name, &buf)
		if err != nil {
			if e.ctx.Err() != nil || len(c.Files) == 1 {
				return err
			}
			fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(err))
			failed++
			continue
		}
		reports = append(reports, j)
		if c.Output == "human" {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			io.WriteString(e.stdout, buf.String())
		}
	}
	if c.Output == "json" && len(reports) > 0 {
		var v any = reports
		if len(c.Files) == 1 {
			v = reports[0]
		}
		if err := writeJSON(e.stdout, v); err != nil {
			return err
		}
	}
	if failed > 0 {
		return quietError{fmt.Errorf("%d of %d files could not be read", failed, len(c.Files))}
	}
	return nil
}

// info describes one file: as JSON, and, for human output, in w.
func (c *infoCmd) info(e *env, name string, w io.Writer) (any, error) {
	a := archiveArg{Archive: name}
	if name != "-" && c.Format != vma.Name {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if fi.IsDir() {
			return nil, fmt.Errorf("%s is a directory", name)
		}
		fm := c.Format
		if fm == "" && fi.Mode().IsRegular() {
			d, _, _, err := input.Probe(registry, f)
			var fe *input.ForeignError
			if errors.As(err, &fe) {
				return nil, fmt.Errorf("%s: a %s image, which vmaconv does not read (qemu-img info -f %s reads it)", name, fe.Foreign.Name, fe.Foreign.QEMU)
			}
			if err != nil {
				return nil, err
			}
			fm = d.Name
		}
		switch fm {
		case qcow2.Name:
			in, err := qcow2.ReadInfo(f, fi.Size())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return imageInfo(w, name, fi, in), nil
		case raw.Name, "":
			size := fi.Size()
			if !fi.Mode().IsRegular() {
				if size, err = f.Seek(0, io.SeekEnd); err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
			}
			return imageInfo(w, name, fi, &qcow2.Info{Size: (size + 511) &^ 511}), nil
		case vma.Name:
		default:
			return nil, usageError{fmt.Errorf("-f %s: info reads qcow2, raw and vma", fm)}
		}
	}
	in, err := a.open(e)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	h := header(in)
	printInfo(w, a.name(), h)
	return c.infoJSON(a, h), nil
}

// imageInfo reports an image as qemu-img info does; a raw image is an Info
// with only its size (rounded up to whole sectors, as qemu sizes it).
func imageInfo(w io.Writer, name string, fi os.FileInfo, in *qcow2.Info) imageJSON {
	j := imageJSON{Filename: name, Format: raw.Name, VirtualSize: in.Size, ActualSize: allocated(fi), DirtyFlag: in.Dirty}
	fmt.Fprintf(w, "image: %s\n", printable(name))
	if in.ClusterSize > 0 {
		j.Format, j.ClusterSize = qcow2.Name, in.ClusterSize
		j.BackingFilename, j.BackingFilenameFormat = in.Backing, in.BackingFormat
		d := qcow2Detail{Compat: "0.10", CompressionType: in.Compression, RefcountBits: in.RefcountBits}
		if in.Version >= 3 {
			d.Compat, d.LazyRefcounts, d.Corrupt, d.ExtendedL2 = "1.1", &in.LazyRefcounts, &in.Corrupt, &in.ExtendedL2
		}
		j.FormatSpecific = &formatSpecific{Type: qcow2.Name, Data: d}
	}
	fmt.Fprintf(w, "file format: %s\n", j.Format)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", humanSize(j.VirtualSize), j.VirtualSize)
	fmt.Fprintf(w, "disk size: %s\n", humanSize(j.ActualSize))
	if f := j.FormatSpecific; f != nil {
		fmt.Fprintf(w, "cluster_size: %d\n", j.ClusterSize)
		if j.BackingFilename != "" {
			fmt.Fprintf(w, "backing file: %s\n", printable(j.BackingFilename))
			if j.BackingFilenameFormat != "" {
				fmt.Fprintf(w, "backing file format: %s\n", printable(j.BackingFilenameFormat))
			}
		}
		fmt.Fprintf(w, "Format specific information:\n    compat: %s\n    compression type: %s\n", f.Data.Compat, f.Data.CompressionType)
		if f.Data.LazyRefcounts != nil {
			fmt.Fprintf(w, "    lazy refcounts: %v\n", *f.Data.LazyRefcounts)
		}
		fmt.Fprintf(w, "    refcount bits: %d\n", f.Data.RefcountBits)
		if f.Data.Corrupt != nil {
			fmt.Fprintf(w, "    corrupt: %v\n    extended l2: %v\n", *f.Data.Corrupt, *f.Data.ExtendedL2)
		}
		if in.Dirty {
			fmt.Fprintf(w, "    dirty: true\n")
		}
	}
	return j
}

func (c *infoCmd) infoJSON(a archiveArg, h *vma.Header) infoJSON {
	j := infoJSON{
		Filename: a.name(), Format: vma.Name, Version: vma.Version,
		UUID: h.UUID.String(), CTime: ctimeString(h.CTime),
		HeaderSize: h.Size, ClusterSize: vma.ClusterSize,
		Configs: []configJSON{}, Devices: []deviceJSON{},
	}
	if n := a.size(); n >= 0 {
		j.ActualSize = &n
	}
	for _, cf := range h.Configs {
		j.Configs = append(j.Configs, configJSON{cf.Name, len(cf.Data)})
	}
	for _, d := range h.Devices {
		j.Devices = append(j.Devices, deviceJSON{d.ID, d.Name, d.Size, d.IsVMState()})
	}
	return j
}

func printInfo(w io.Writer, name string, h *vma.Header) {
	fmt.Fprintf(w, "file: %s\n", name)
	fmt.Fprintf(w, "format: %s (version %d)\n", vma.Name, vma.Version)
	fmt.Fprintf(w, "uuid: %s\n", h.UUID)
	fmt.Fprintf(w, "ctime: %s\n", ctimeString(h.CTime))
	fmt.Fprintf(w, "header size: %d\n", h.Size)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "configs: %d\n", len(h.Configs))
	for _, c := range h.Configs {
		fmt.Fprintf(tw, "  %s\t%d bytes\n", printable(c.Name), len(c.Data))
	}
	fmt.Fprintf(tw, "devices: %d\n", len(h.Devices))
	for _, d := range h.Devices {
		kind := "virtual size"
		if d.IsVMState() {
			kind = "vmstate"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s: %s (%d bytes)\n", d.ID, printable(d.Name), kind, humanSize(d.Size), d.Size)
	}
	tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false) // "<VMID>", not "\u003cVMID\u003e"
	return enc.Encode(v)
}

// ctimeString formats an archive's creation time as RFC 3339, or, for a
// time outside years 1 to 9999 (a damaged or hostile header), as its Unix
// seconds.
func ctimeString(t time.Time) string {
	if t.Year() < 1 || t.Year() > 9999 {
		return fmt.Sprintf("%d (Unix seconds, out of range)", t.Unix())
	}
	return t.Format(time.RFC3339)
}

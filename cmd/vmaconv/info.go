package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/vmaconv/vmaconv/format/vma"
)

type infoCmd struct {
	archiveArg
	Output string `help:"Output format: human or json." enum:"human,json" default:"human"`
}

// infoJSON is `info --output json`; field names follow qemu-img info's JSON.
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

func (c *infoCmd) Run(e *env) error {
	rd, done, err := c.open(e)
	if err != nil {
		return err
	}
	defer done()
	h := rd.Header()
	if c.Output == "json" {
		return writeJSON(e.stdout, c.infoJSON(h))
	}
	printInfo(e.stdout, c.name(), h)
	return nil
}

func (c *infoCmd) infoJSON(h *vma.Header) infoJSON {
	j := infoJSON{
		Filename: c.name(), Format: vma.Name, Version: vma.Version,
		UUID: h.UUID.String(), CTime: ctimeString(h.CTime),
		HeaderSize: h.Size, ClusterSize: vma.ClusterSize,
		Configs: []configJSON{}, Devices: []deviceJSON{},
	}
	if n := c.size(); n >= 0 {
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

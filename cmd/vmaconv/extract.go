package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/pipeline"
)

type extractCmd struct {
	archiveArg
	Dir     string   `arg:"" help:"Target directory: created if missing; if it exists it must be empty."`
	Device  []string `short:"d" placeholder:"NAME" help:"Restore only this device (repeatable). Configs are always written; other devices are still read and checked."`
	Verbose bool     `short:"v" help:"List the files written and per-device statistics."`
	Salvage bool     `help:"Restore what is intact of a damaged archive: skip damaged extents, resynchronise on the next valid one, fill what is lost with zeros, and report it (exit status 3)."`
}

// output is one file extract writes.
type output struct {
	origin string // what it comes from, for messages
	name   string // file name inside the target directory
	config *vma.Config
	dev    *vma.Device
	tmp    string
	f      *os.File
}

func (c *extractCmd) Run(e *env) (err error) {
	if err := checkTargetDir(c.Dir); err != nil {
		return err
	}
	rd, done, err := c.open(e)
	if err != nil {
		return err
	}
	defer done()
	h := rd.Header()
	outs, err := c.plan(e, h)
	if err != nil {
		return err
	}

	created := false
	if _, serr := os.Lstat(c.Dir); errors.Is(serr, fs.ErrNotExist) {
		if err := os.Mkdir(c.Dir, 0o777); err != nil {
			return err
		}
		created = true
	}
	tmpDir, err := os.MkdirTemp(c.Dir, ".vmaconv-extract-")
	if err != nil {
		if created {
			os.Remove(c.Dir)
		}
		return err
	}
	// Until everything is written, outputs live in tmpDir; on failure it is
	// removed, and so is the target directory if this run created it.
	discard := func() {
		os.RemoveAll(tmpDir)
		if created {
			os.Remove(c.Dir)
		}
	}
	defer atInterrupt(discard)()
	defer func() {
		for _, o := range outs {
			if o.f != nil {
				o.f.Close()
			}
		}
		if err != nil {
			discard()
		}
		os.RemoveAll(tmpDir) // empty after a success
	}()

	targets := map[int]io.WriterAt{}
	for _, o := range outs {
		o.tmp = filepath.Join(tmpDir, o.name)
		if o.f, err = os.OpenFile(o.tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666); err != nil {
			return err
		}
		if o.config != nil {
			if _, err := o.f.Write(o.config.Data); err != nil {
				return fmt.Errorf("writing %s: %w", o.tmp, err)
			}
			continue
		}
		if err := o.f.Truncate(o.dev.Size); err != nil { // a sparse file of the device's size
			return fmt.Errorf("creating %s: %w", o.tmp, err)
		}
		targets[o.dev.ID] = o.f
	}
	if c.Salvage {
		rd.Salvage()
	} else if len(c.Device) > 0 {
		ids := make([]int, 0, len(targets))
		for id := range targets {
			ids = append(ids, id)
		}
		rd.Want(ids...) // skip the other devices' data where the file allows
	}
	res, err := pipeline.Unpack(e.ctx, rd, targets, pipeline.UnpackOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", c.name(), err)
	}
	for _, o := range outs {
		if err := o.f.Sync(); err != nil {
			return fmt.Errorf("writing %s: %w", o.tmp, err)
		}
		if err := o.f.Close(); err != nil {
			return fmt.Errorf("writing %s: %w", o.tmp, err)
		}
		o.f = nil
	}
	for _, o := range outs {
		if err := os.Rename(o.tmp, filepath.Join(c.Dir, o.name)); err != nil {
			return err
		}
	}
	if c.Verbose {
		for _, o := range outs {
			fmt.Fprintf(e.stdout, "%s <- %s\n", filepath.Join(c.Dir, o.name), o.origin)
		}
		printStats(e.stdout, res, false)
	}
	if c.Salvage {
		return salvageReport(e, rd)
	}
	return nil
}

// salvageReport prints what salvage skipped and lost, and returns an
// incompleteError if anything was.
func salvageReport(e *env, rd *vma.Reader) error {
	for _, d := range rd.Damaged() {
		fmt.Fprintf(e.stderr, "vmaconv: damaged: bytes %d-%d (%d bytes) skipped: %v\n", d.Offset, d.Offset+d.Length-1, d.Length, d.Err)
	}
	lost := 0
	for _, m := range rd.MissingClusters() {
		var rs []string
		for _, r := range m.Ranges {
			rs = append(rs, fmt.Sprintf("%d-%d (bytes %d-%d)", r.First, r.Last, r.First*vma.ClusterSize, min((r.Last+1)*vma.ClusterSize, m.Device.Size)-1))
		}
		more := ""
		if n := len(m.Ranges); n > 0 && int64(n) < m.Total && rangesLen(m.Ranges) < m.Total {
			more = ", …"
		}
		fmt.Fprintf(e.stderr, "vmaconv: lost: %s: %d of %d clusters, written as zeros: %s%s\n", m.Device.Name, m.Total, m.Device.Clusters(), strings.Join(rs, ", "), more)
		lost++
	}
	if lost == 0 && len(rd.Damaged()) == 0 {
		return nil
	}
	return incompleteError{fmt.Errorf("salvaged an incomplete archive: %d damaged ranges, %d devices with lost clusters", len(rd.Damaged()), lost)}
}

func rangesLen(rs []vma.Range) int64 {
	n := int64(0)
	for _, r := range rs {
		n += r.Last - r.First + 1
	}
	return n
}

// checkTargetDir accepts a directory that does not exist yet (its parent
// must) or an empty one.
func checkTargetDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if pfi, err := os.Stat(filepath.Dir(dir)); err != nil || !pfi.IsDir() {
			return fmt.Errorf("cannot create %s: its parent directory does not exist", dir)
		}
		return nil
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty; extract needs a new or empty directory", dir)
	}
	return nil
}

// plan decides the file name of every output: configs under their
// (sanitised) names, disks as disk-<name>.raw, a vmstate stream as
// vmstate.bin, as Proxmox's vma extract names them.
func (c *extractCmd) plan(e *env, h *vma.Header) ([]*output, error) {
	for _, want := range c.Device {
		if _, ok := h.Device(want); !ok {
			var names []string
			for _, d := range h.Devices {
				names = append(names, d.Name)
			}
			return nil, fmt.Errorf("%s: no device %q in the archive (devices: %s)", c.name(), want, strings.Join(names, ", "))
		}
	}
	var outs []*output
	for i := range h.Configs {
		cf := &h.Configs[i]
		outs = append(outs, &output{origin: "config " + printable(cf.Name), name: safeName(cf.Name), config: cf})
	}
	for i := range h.Devices {
		d := &h.Devices[i]
		if len(c.Device) > 0 && !slices.Contains(c.Device, d.Name) {
			continue
		}
		name := "disk-" + safeName(d.Name) + ".raw"
		if d.IsVMState() {
			name = "vmstate.bin"
		}
		outs = append(outs, &output{origin: "device " + printable(d.Name), name: name, dev: d})
	}
	seen := map[string]string{}
	for _, o := range outs {
		if prev, dup := seen[o.name]; dup {
			return nil, fmt.Errorf("%s: %s and %s would both be written as %s", c.name(), prev, o.origin, o.name)
		}
		seen[o.name] = o.origin
	}
	for _, o := range outs {
		if o.config != nil && o.name != o.config.Name {
			e.note("%s written as %s", o.origin, o.name)
		}
		if o.dev != nil && !o.dev.IsVMState() && o.name != "disk-"+o.dev.Name+".raw" {
			e.note("%s written as %s", o.origin, o.name)
		}
	}
	return outs, nil
}

// safeName turns a name from an archive into a file name that stays inside
// the target directory on every OS: only ASCII letters, digits and ._-+@=,
// are kept, others become '_'; a leading '.' becomes '_' (no hidden files,
// no "." or ".."), and very long names are shortened with a hash suffix.
func safeName(name string) string {
	b := []byte(name)
	for i, ch := range b {
		ok := 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("._-+@=,", ch) >= 0
		if !ok || i == 0 && ch == '.' {
			b[i] = '_'
		}
	}
	s := string(b)
	if s == "" {
		s = "_"
	}
	if len(s) > 200 {
		sum := sha256.Sum256([]byte(name))
		s = s[:200] + "-" + hex.EncodeToString(sum[:4])
	}
	return s
}

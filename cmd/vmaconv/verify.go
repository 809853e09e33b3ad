package main

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/remote"
)

type verifyCmd struct {
	Archives []string `arg:"" name:"archive" help:"VMA archives (compressed or not), or - for standard input; s3://BUCKET/PREFIX/ (ending in /) for every archive under a prefix."`
	Digest   bool     `help:"Also compute the sha256 of every device's content (compare with 'sha256sum' of a restored disk)."`
	Verbose  bool     `short:"v" help:"Print the archive header before the report."`
	Output   string   `help:"Output format: human, json, or jsonl (one line of JSON per archive, as each is done)." enum:"human,json,jsonl" default:"human"`
	Progress bool     `short:"p" help:"Show progress on stderr."`
	Jobs     int      `short:"j" placeholder:"N" default:"1" help:"Verify N archives at once, 1 to 256; each reads its archive as a stream, in bounded memory (some 40 MiB and the zstd window)."`
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
	if c.Jobs < 1 || c.Jobs > 256 {
		return usageError{fmt.Errorf("--jobs %d: want 1 to 256", c.Jobs)}
	}
	archives, err := input.Expand(e.ctx, registry, c.Archives, e.inputOptions(input.Options{}))
	if err != nil {
		return err
	}
	if len(archives) != len(c.Archives) || c.Jobs > 1 || c.Output == "jsonl" {
		c.Archives = archives
		return c.runJobs(e)
	}
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

// runJobs verifies the archives, c.Jobs at a time, each archive's report
// (and warnings) printed whole once it is done, in the order they finish;
// with --output jsonl, a line of JSON each. It fails (status 1) if any
// archive fails, after all were read.
func (c *verifyCmd) runJobs(e *env) error {
	c.Progress = c.Progress && c.Jobs == 1 // bars of parallel jobs would mix
	var (
		mu     sync.Mutex
		failed int
		werr   error
	)
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range min(c.Jobs, len(c.Archives)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				var out, errs bytes.Buffer
				je := *e
				je.stdout, je.stderr, je.notes, je.stderrTTY = &out, &errs, nil, false
				j, err := c.verify(&je, name)
				mu.Lock()
				if err != nil && e.ctx.Err() == nil {
					failed++
					fmt.Fprintf(&errs, "vmaconv: %s\n", oneLine(err))
				}
				switch c.Output {
				case "jsonl":
					b, jerr := json.Marshal(j)
					if jerr == nil {
						_, jerr = fmt.Fprintf(e.stdout, "%s\n", b)
					}
					werr = cmp.Or(werr, jerr)
				case "json":
					werr = cmp.Or(werr, writeJSON(e.stdout, j))
				default:
					fmt.Fprintf(e.stdout, "%s:\n", printable(remote.Redact(name)))
					out.WriteTo(e.stdout)
				}
				errs.WriteTo(e.stderr)
				for _, n := range je.notes {
					fmt.Fprintln(e.stderr, n)
				}
				mu.Unlock()
			}
		}()
	}
	for _, a := range c.Archives {
		select {
		case jobs <- a:
		case <-e.ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	if failed > 0 {
		return quietError{fmt.Errorf("%d of %d archives failed to verify", failed, len(c.Archives))}
	}
	return nil
}

// verify reads one archive through and reports it.
func (c *verifyCmd) verify(e *env, name string) (verifyJSON, error) {
	a := archiveArg{Archive: name}
	j := verifyJSON{Filename: remote.Redact(a.name()), Devices: []verifyDeviceJSON{}, Proxmox: []string{}, NameClashes: []string{}}
	fail := func(err error) (verifyJSON, error) {
		j.Error = oneLine(err)
		var l format.Located
		if errors.As(err, &l) {
			loc := l.Location()
			if loc.Offset >= 0 {
				j.Offset = &loc.Offset
			}
			if loc.Cluster >= 0 {
				j.Cluster = &loc.Cluster
			}
			j.Device = loc.Disk
		}
		return j, err
	}
	in, err := a.open(e)
	if err != nil {
		return fail(err)
	}
	defer in.Close()
	v, ok := in.Stream().(format.Verifier)
	if !ok {
		return fail(fmt.Errorf("%s: %s cannot be verified", a.name(), in.Format().Name))
	}
	p := newProgress(e, c.Progress, "verifying "+a.name(), in.Size())
	rep, err := v.Verify(e.ctx, format.VerifyOptions{Path: name, Digest: c.Digest, Progress: func(int64) { p.update(in.Consumed()) }})
	j.Extents, j.BytesRead = rep.Records, rep.Bytes
	if err != nil {
		p.abort()
		return fail(fmt.Errorf("%s: %w", a.name(), err))
	}
	p.finish()
	j.OK = true
	for _, d := range rep.Disks {
		j.Devices = append(j.Devices, verifyDeviceJSON{d.ID, d.Name, d.Size, d.Stored, d.Zero, hex.EncodeToString(d.SHA256)})
	}
	j.Proxmox = append(j.Proxmox, rep.Unrestorable...)
	for _, pr := range j.Proxmox {
		fmt.Fprintf(e.stderr, "vmaconv: warning: %s: %s would not restore it: %s\n", printable(a.name()), rep.Restorer, escapeControls(pr))
	}
	j.NameClashes = append(j.NameClashes, rep.NameClashes...)
	for _, c := range j.NameClashes {
		fmt.Fprintf(e.stderr, "vmaconv: warning: %s: %s\n", printable(a.name()), escapeControls(c))
	}
	if c.Output == "json" {
		return j, nil
	}
	if inf, ok := in.Stream().(format.Informer); ok && c.Verbose {
		writeInfo(e.stdout, inf.Info(format.FileStat{Name: a.name(), Size: -1}))
	}
	printStats(e.stdout, rep.Disks, c.Digest)
	fmt.Fprintf(e.stdout, "ok: %s, %s, %s, %d bytes read\n", plural(len(rep.Disks), "device"),
		plural(len(in.Configs()), "config"), plural(int(rep.Records), "extent"), rep.Bytes)
	return j, nil
}

// printStats prints the per-device table of verify and extract -v.
func printStats(w io.Writer, disks []format.DiskReport, digest bool) {
	if len(disks) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := "ID\tDEVICE\tSIZE\tSTORED\tZERO"
	if digest {
		head += "\tSHA256"
	}
	fmt.Fprintln(tw, head)
	for _, d := range disks {
		line := fmt.Sprintf("%d\t%s\t%d\t%d\t%d", d.ID, printable(d.Name), d.Size, d.Stored, d.Zero)
		if digest {
			line += "\t" + hex.EncodeToString(d.SHA256)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

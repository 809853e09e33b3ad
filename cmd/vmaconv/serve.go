package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/listen"
	"github.com/vmaconv/vmaconv/nbd"
)

type serveCmd struct {
	Archive string   `arg:"" help:"An input of any format vmaconv reads (${formats}): an image is exported as disk; an archive (.vma; .vma.zst, .vma.gz and .vma.lzo are decompressed once into a cache), each disk under its name."`
	Socket  string   `placeholder:"PATH" help:"Unix socket to serve on (default: vmaconv-<pid>.sock in $XDG_RUNTIME_DIR, else the temporary directory), created for the owner only and removed at the end."`
	Listen  string   `placeholder:"HOST:PORT" help:"Serve on TCP instead (NBD has no authentication: a trusted network only)."`
	Device  []string `short:"d" placeholder:"NAME" help:"Export only this disk (repeatable; default: every disk)."`
	cacheOpts
}

// serveGrace is how long, after SIGINT or SIGTERM, the requests in flight
// have to be answered: main ends the process interruptGrace after the
// signal, and a quarter of it is left for closing.
func serveGrace() time.Duration { return interruptGrace * 3 / 4 }

// Run serves until SIGINT or SIGTERM: then no connection is accepted,
// the requests in flight are answered (for up to serveGrace), and the
// command ends as interrupted (exit status 130 or 143).
func (c *serveCmd) Run(e *env) error {
	in, exports, err := openExports(e, c.Archive, c.Device, c.cacheOpts)
	if err != nil {
		return err
	}
	defer in.Close()
	l, where, err := c.listen(e)
	if err != nil {
		return err
	}
	defer l.Close()
	if c.Listen == "" {
		defer atInterrupt(func() { os.Remove(where) })()
		defer os.Remove(where)
	}
	fmt.Fprintf(e.stdout, "serving %s read-only over NBD; stop with Ctrl-C\n", printable(c.Archive))
	w := 0
	for _, x := range exports {
		w = max(w, len(printable(x.Name)))
	}
	for _, x := range exports {
		fmt.Fprintf(e.stdout, "  %-*s  %10s  %s\n", w, printable(x.Name), humanSize(x.Source.Size()), c.uri(where, x.Name))
	}
	e.flushNotes() // a server runs until stopped: its notes come now
	srv := &nbd.Server{Exports: exports, ShutdownGrace: serveGrace(), Log: func(msg string) {
		fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(errors.New(msg)))
	}}
	if err := srv.Serve(e.ctx, l); err != nil {
		return err
	}
	return fmt.Errorf("serving: %w", context.Cause(e.ctx)) // Serve returns nil once ctx is done
}

// listen opens the socket: a Unix one, for the owner only, unless
// --listen names a TCP address. A Unix socket left by a server that is
// gone (killed) is replaced, with a note; one a server listens on is
// not.
func (c *serveCmd) listen(e *env) (net.Listener, string, error) {
	if c.Listen != "" {
		if c.Socket != "" {
			return nil, "", usageError{errors.New("--socket and --listen: choose one")}
		}
		l, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return nil, "", err
		}
		return l, l.Addr().String(), nil
	}
	path := c.Socket
	if path == "" {
		dir := os.Getenv("XDG_RUNTIME_DIR")
		if dir == "" {
			dir = os.TempDir()
		}
		path = filepath.Join(dir, "vmaconv-"+strconv.Itoa(os.Getpid())+".sock")
	}
	l, replaced, err := listen.Unix(path)
	if err != nil {
		return nil, "", err
	}
	if replaced {
		e.note("%s: replaced a socket no server listened on (left by one that was killed?)", path)
	}
	return l, path, nil
}

// uri is how qemu and libnbd name an export (NBD's doc/uri.md), escaped.
func (c *serveCmd) uri(where, name string) string {
	if c.Listen != "" {
		return nbd.TCPURI(where, name)
	}
	return nbd.UnixURI(where, name)
}

// imageDisk is the name an image's one disk is served and mounted
// under.
const imageDisk = "disk"

// openExports opens the file at path, of any format, for reading at
// random (a compressed archive through the seekable zstd format or the
// decompression cache) and returns its disks, all or those named: an
// image's one disk as imageDisk, in whole 512-byte sectors as QEMU
// presents it; an archive's disks by their names, its RAM-state stream
// left out.
func openExports(e *env, path string, names []string, co cacheOpts) (*input.Input, []nbd.Export, error) {
	in, err := openRandom(e, path, co)
	if err != nil {
		return nil, nil, err
	}
	exports, err := exportsOf(in, path, names)
	if err != nil {
		in.Close()
		return nil, nil, err
	}
	return in, exports, nil
}

// openRandom opens the input at path to be read at random: a compressed
// archive through the cache, standard input refused.
func openRandom(e *env, path string, co cacheOpts) (*input.Input, error) {
	if path == "-" {
		return nil, usageError{errors.New("reading at random needs an archive file, not standard input")}
	}
	cache, done := co.inputOptions(e, path)
	in, err := openInput(e, format.Ref{Path: path}, input.Options{RandomAccess: true, Cache: cache})
	done(err)
	return in, err
}

// exportsOf returns the disks of in to serve or mount (see openExports).
func exportsOf(in *input.Input, path string, names []string) ([]nbd.Export, error) {
	var want []string
	for _, n := range names {
		if in.Archive() {
			var err error
			if n, err = deviceName(n); err != nil {
				return nil, err
			}
		}
		want = append(want, n)
	}
	disks, err := in.Exported(want, imageDisk, func(name string) bool { return mountFileName(name) != "" })
	var exports []nbd.Export
	for _, d := range disks {
		exports = append(exports, nbd.Export{Name: d.Name, Source: d.Source, Description: fmt.Sprintf("%s of %s", d.Name, filepath.Base(path))})
	}
	return exports, err
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/vmaconv/vmaconv/guest"
	_ "github.com/vmaconv/vmaconv/guest/all" // the file systems guest reads
	"github.com/vmaconv/vmaconv/input"
)

// The commands that read files inside disks (ls, cat, cp, diff, mount
// --files) see an input as guest.Tree shows it: an archive's disks at the
// root (/drive-scsi0), partitions as p1, p2, …, LVM2 volume groups as
// VG/LV, file systems as directories; an image is its one disk.
const treeHelp = "PATH is a path in the input's file tree: an archive's disks at its root (/drive-scsi0), partitions as p1, p2, …, LVM2 logical volumes as VG/LV, file systems as directories (/drive-scsi0/p2/etc/fstab); an image has no disk level (/p1/etc/fstab)."

// openTree opens an input read at random and its file tree.
func openTree(e *env, src string, co cacheOpts) (*input.Input, *guest.Tree, error) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(guest.MemoryLimit) // see its doc
	}
	in, err := openRandom(e, src, co)
	if err != nil {
		return nil, nil, err
	}
	t, err := guest.OpenInput(in)
	if err != nil {
		in.Close()
		return nil, nil, err
	}
	return in, t, nil
}

// guestPath returns a PATH argument as a path from the tree's root, and
// whether its last name is to be followed if it is a link: a trailing
// slash says so, as for ls(1). Its "." and ".." are resolved by
// guest.Tree.Lookup as the guest would, after the links before them.
func guestPath(p string) (string, bool) {
	return "/" + p, strings.HasSuffix(p, "/") && strings.Trim(p, "/") != ""
}

type lsCmd struct {
	Input     string `arg:"" help:"An input of any format vmaconv reads (${formats}), read at random."`
	Path      string `arg:"" optional:"" default:"/" help:"What to list (default: the root). ${tree}"`
	Long      bool   `short:"l" help:"Long listing: type and mode, links, owner and group ids, size, mtime (UTC), name, a link's target, a volume's contents."`
	Recursive bool   `short:"R" help:"List everything below PATH, each entry by its full path."`
	Output    string `enum:"human,json" default:"human" help:"human or json (an array of entries: path, name, type, mode, size, mtime, uid, gid, nlink, ino, target, major and minor, volume)."`
	cacheOpts
}

// Run lists a directory of the input's file tree, as virt-ls does.
func (c *lsCmd) Run(e *env) error {
	in, t, err := openTree(e, c.Input, c.cacheOpts)
	if err != nil {
		return err
	}
	defer in.Close()
	n, p, err := t.Lookup(guestPath(c.Path))
	if err != nil {
		return fmt.Errorf("%s: %w", printable(c.Input), err)
	}
	w := bufio.NewWriterSize(e.stdout, 64<<10)
	out := &lister{w: w, long: c.Long, json: c.Output == "json", full: c.Recursive}
	failed := 0
	visit := func(q string, n guest.Node, err error) error {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		if err != nil {
			w.Flush()
			fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(err))
			failed++
			return guest.SkipDir
		}
		if v, ok := n.(guest.Volumer); ok {
			for _, w := range v.Volume().Warnings {
				e.note("%s: %s", guest.Escape(q), w) // a partition table's
			}
		}
		if q == p && n.Info().Mode.IsDir() && !c.Recursive {
			return nil // list its entries, not itself
		}
		out.entry(q, n)
		if !c.Recursive && q != p {
			return guest.SkipDir
		}
		return nil
	}
	out.begin()
	err = guest.Walk(n, p, visit)
	out.end()
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		return quietError{fmt.Errorf("%s could not be read", plural(failed, "directory"))}
	}
	return nil
}

// lister prints entries as ls -l or JSON.
type lister struct {
	w     *bufio.Writer
	long  bool
	json  bool
	full  bool // full paths (-R)
	count int
}

// jsonEntry is one entry of ls --output json.
type jsonEntry struct {
	Path   string        `json:"path"`
	Name   string        `json:"name"`
	Type   string        `json:"type"`
	Mode   string        `json:"mode"`
	Size   int64         `json:"size"`
	MTime  string        `json:"mtime,omitempty"`
	UID    uint32        `json:"uid"`
	GID    uint32        `json:"gid"`
	Nlink  uint32        `json:"nlink"`
	Ino    uint64        `json:"ino"`
	Target *string       `json:"target,omitempty"`
	Major  *uint32       `json:"major,omitempty"` // device nodes
	Minor  *uint32       `json:"minor,omitempty"`
	Volume *guest.Volume `json:"volume,omitempty"`
}

func (l *lister) begin() {
	if l.json {
		l.w.WriteString("[")
	}
}

func (l *lister) end() {
	if l.json {
		if l.count > 0 {
			l.w.WriteString("\n")
		}
		l.w.WriteString("]\n")
	}
}

func (l *lister) entry(p string, n guest.Node) {
	i := n.Info()
	name := i.Name
	if l.full || name == "" {
		name = p
	}
	var target *string
	if i.Mode&fs.ModeSymlink != 0 {
		t, err := n.Readlink()
		if err != nil {
			t = "?" + err.Error()
		}
		target = &t
	}
	var vol *guest.Volume
	if v, ok := n.(guest.Volumer); ok {
		x := v.Volume()
		vol = &x
	}
	l.count++
	if l.json {
		e := jsonEntry{Path: p, Name: i.Name, Type: guest.TypeName(i.Mode), Mode: fmt.Sprintf("%04o", unixMode(i.Mode)&0o7777),
			Size: i.Size, UID: i.UID, GID: i.GID, Nlink: i.Nlink, Ino: i.Ino, Target: target, Volume: vol}
		if !i.ModTime.IsZero() {
			e.MTime = i.ModTime.UTC().Format(time.RFC3339Nano)
		}
		if i.Mode&fs.ModeDevice != 0 {
			major, minor := devNumbers(i.Rdev)
			e.Major, e.Minor = &major, &minor
		}
		b, _ := json.Marshal(e)
		if l.count > 1 {
			l.w.WriteString(",")
		}
		l.w.WriteString("\n  ")
		l.w.Write(b)
		return
	}
	if !l.long {
		fmt.Fprintln(l.w, guest.Escape(name))
		return
	}
	mtime := "-"
	if !i.ModTime.IsZero() {
		mtime = i.ModTime.UTC().Format("2006-01-02 15:04:05")
	}
	size := strconv.FormatInt(i.Size, 10)
	if i.Mode&fs.ModeDevice != 0 {
		major, minor := devNumbers(i.Rdev)
		size = fmt.Sprintf("%d, %d", major, minor) // as ls -l shows a device
	}
	line := fmt.Sprintf("%s %3d %5d %5d %12s %s %s", modeString(i.Mode), i.Nlink, i.UID, i.GID, size, mtime, guest.Escape(name))
	if target != nil {
		line += " -> " + guest.Escape(*target)
	}
	if vol != nil {
		line += "  [" + volumeString(*vol) + "]"
	}
	l.w.WriteString(line + "\n")
}

// devNumbers splits a device number in Linux's encoding (guest.Info.Rdev)
// into its major and minor numbers, as glibc's major(3) and minor(3) do.
func devNumbers(rdev uint64) (major, minor uint32) {
	major = uint32(rdev>>8&0xfff | rdev>>32&^0xfff)
	minor = uint32(rdev&0xff | rdev>>12&^0xff)
	return major, minor
}

// volumeString describes a volume for ls -l: "partition, EFI System,
// fat32", "partition, Linux filesystem, btrfs: not readable".
func volumeString(v guest.Volume) string {
	parts := []string{v.Kind}
	if v.Detail != "" {
		parts = append(parts, guest.Escape(v.Detail))
	}
	content := v.Content
	if content == "" {
		content = "unknown"
	}
	if !v.Readable {
		content += ": " + v.Why
	}
	return strings.Join(append(parts, content), ", ")
}

// unixMode returns the permission, setuid, setgid and sticky bits as
// Unix numbers them.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// modeString formats a mode as ls -l does: "drwxr-xr-x", "-rwsr-xr-x";
// an unreadable volume's type is "?".
func modeString(m fs.FileMode) string {
	b := []byte("?rwxrwxrwx")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case m&fs.ModeIrregular != 0:
		b[0] = '?'
	default:
		b[0] = '-'
	}
	for i := range 9 {
		if m&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(i int, set bool, on, off byte) {
		if set {
			if b[i] == '-' {
				b[i] = off
			} else {
				b[i] = on
			}
		}
	}
	special(3, m&fs.ModeSetuid != 0, 's', 'S')
	special(6, m&fs.ModeSetgid != 0, 's', 'S')
	special(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

type catCmd struct {
	Input string   `arg:"" help:"An input of any format vmaconv reads (${formats}), read at random."`
	Paths []string `arg:"" name:"path" help:"Files to write to standard output, one after another; symbolic links are followed inside their file system. ${tree}"`
	cacheOpts
}

// Run writes files of the input's file tree to standard output, as
// virt-cat does.
func (c *catCmd) Run(e *env) error {
	in, t, err := openTree(e, c.Input, c.cacheOpts)
	if err != nil {
		return err
	}
	defer in.Close()
	for _, p := range c.Paths {
		gp, _ := guestPath(p)
		n, q, err := t.Lookup(gp, true)
		if err != nil {
			return fmt.Errorf("%s: %w", printable(c.Input), err)
		}
		f, err := n.Open()
		if err != nil {
			return fmt.Errorf("%s: %s: %w", printable(c.Input), guest.Escape(q), err)
		}
		if _, err := guest.WriteTo(e.ctx, f, e.stdout); err != nil {
			return fmt.Errorf("%s: %s: %w", printable(c.Input), guest.Escape(q), err)
		}
	}
	return nil
}

type cpCmd struct {
	Input     string   `arg:"" help:"An input of any format vmaconv reads (${formats}), read at random."`
	Args      []string `arg:"" name:"path" help:"PATH… DEST: what to copy, then where to. ${tree} DEST is an existing directory (each PATH is copied into it under its own name), or, for one PATH, a new name. Entries not copied (names that cannot name a file, a name repeated in a directory, devices, something else at their place) are named in notes, and the exit status is 3."`
	Recursive bool     `short:"r" help:"Copy directories and everything in them."`
	Preserve  bool     `help:"Keep setuid and setgid bits (dropped otherwise) and, run as root, owners and groups (as cp -p)."`
	cacheOpts
}

// Run copies files out of the input's file tree, as virt-copy-out does:
// contents, modes, mtimes, links as links, holes as holes; never a
// byte outside DEST.
func (c *cpCmd) Run(e *env) error {
	if len(c.Args) < 2 {
		return usageError{errors.New("cp: give the paths to copy, then where to: vmaconv cp INPUT PATH… DEST")}
	}
	paths, dest := c.Args[:len(c.Args)-1], c.Args[len(c.Args)-1]
	fi, err := os.Stat(dest)
	into := err == nil && fi.IsDir()
	if !into && len(paths) > 1 {
		return usageError{fmt.Errorf("cp: %s is not a directory, and %d paths are given", dest, len(paths))}
	}
	in, t, err := openTree(e, c.Input, c.cacheOpts)
	if err != nil {
		return err
	}
	defer in.Close()
	skipped := 0
	const maxNotes = 100
	noted := 0
	o := guest.CopyOptions{Recursive: c.Recursive, Preserve: c.Preserve, Note: func(msg string) {
		if noted++; noted <= maxNotes {
			e.note("%s", msg)
		} else if noted == maxNotes+1 {
			e.note("… further notes left out (the entries not copied are counted)")
		}
	}}
	for _, p := range paths {
		n, q, err := t.Lookup(guestPath(p))
		if err != nil {
			return fmt.Errorf("%s: %w", printable(c.Input), err)
		}
		host := dest
		if into {
			if name := n.Info().Name; q != "/" {
				if !guest.ValidName(name) {
					return fmt.Errorf("%s: %s: the name cannot name a file", printable(c.Input), guest.Escape(q))
				}
				host = filepath.Join(dest, guest.HostName(name))
			}
		}
		s, err := guest.CopyOut(e.ctx, n, q, host, o)
		skipped += s
		if err != nil {
			return fmt.Errorf("%s: %w", printable(c.Input), err)
		}
	}
	if skipped > 0 {
		// Exit status 3, with the notes saying which and why.
		return incompleteError{fmt.Errorf("%s not copied (said above)", plural(skipped, "entry"))}
	}
	return nil
}

type diffCmd struct {
	InputA string `arg:"" name:"input-a" help:"The older input (${formats}), read at random."`
	InputB string `arg:"" name:"input-b" help:"The newer input."`
	Path   string `arg:"" optional:"" default:"/" help:"Compare below this path only. ${tree}"`
	Times  bool   `help:"Also report files whose only change is their mtime."`
	cacheOpts
}

// Exit statuses of diff, as diff(1)'s.
const (
	diffSame    = 0
	diffDiffer  = 1
	diffTrouble = 2
)

// Run prints the files added (+), removed (-) and changed (M, with what
// changed) between two inputs' file trees, as virt-diff does; exit 0 if
// none, 1 if some, 2 on trouble.
func (c *diffCmd) Run(e *env) error {
	inA, ta, err := openTree(e, c.InputA, c.cacheOpts)
	if err != nil {
		return statusError{err, diffTrouble}
	}
	defer inA.Close()
	inB, tb, err := openTree(e, c.InputB, c.cacheOpts)
	if err != nil {
		return statusError{err, diffTrouble}
	}
	defer inB.Close()
	p, follow := guestPath(c.Path)
	na, qa, err := ta.Lookup(p, follow)
	if err != nil {
		return statusError{fmt.Errorf("%s: %w", printable(c.InputA), err), diffTrouble}
	}
	nb, _, err := tb.Lookup(p, follow)
	if err != nil {
		return statusError{fmt.Errorf("%s: %w", printable(c.InputB), err), diffTrouble}
	}
	w := bufio.NewWriter(e.stdout)
	changes, troubles := 0, 0
	err = guest.Diff(e.ctx, na, nb, qa, guest.DiffOptions{Times: c.Times}, func(ch guest.Change) error {
		if ch.Err != nil {
			troubles++
			w.Flush()
			fmt.Fprintf(e.stderr, "vmaconv: %s\n", oneLine(ch.Err))
			return nil
		}
		changes++
		line := fmt.Sprintf("%c %s", ch.Op, guest.Escape(ch.Path))
		if ch.Op == 'M' {
			line += "  (" + strings.Join(ch.What, ", ")
			if ch.A.Size != ch.B.Size && ch.A.Mode.IsRegular() {
				line += fmt.Sprintf(": %d → %d bytes", ch.A.Size, ch.B.Size)
			}
			line += ")"
		}
		_, err := io.WriteString(w, line+"\n")
		return err
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	switch {
	case err != nil:
		return statusError{err, diffTrouble}
	case troubles > 0:
		return statusError{quietError{fmt.Errorf("%s could not be compared", plural(troubles, "entry"))}, diffTrouble}
	case changes > 0:
		return statusError{nil, diffDiffer}
	}
	return nil
}

// Command vmaconv converts disk images to and from Proxmox VMA backup
// archives, and reads, checks and restores archives.
//
//	vmaconv disk.qcow2 vm.vma               # an image to an archive
//	vmaconv vm.vma:drive-scsi0 disk.raw     # one archive device to a raw image
//	vmaconv create vm.vma drive-scsi0=a.qcow2 drive-efidisk0=efi.raw -c qemu-server.conf
//	vmaconv checksum disk.qcow2             # sha256 of the guest-visible content
//	vmaconv info vzdump-qemu-100.vma        # header: uuid, time, configs, disks
//	vmaconv config vzdump-qemu-100.vma      # print qemu-server.conf
//	vmaconv verify --digest vzdump-qemu-100.vma
//	vmaconv extract vzdump-qemu-100.vma restored/
//
// ARCHIVE may be "-" to read from standard input, and any input an
// s3://BUCKET/KEY or https:// URL.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/buildinfo"
	"github.com/vmaconv/vmaconv/internal/interrupt"
	"github.com/vmaconv/vmaconv/internal/text"
	"golang.org/x/term"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Exit statuses.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitIncomplete  = 3 // extract --salvage wrote what it could
	exitInterrupted = 130
)

type cli struct {
	Convert    convertCmd       `cmd:"" default:"withargs" help:"Convert SRC to DST, from any of ${formats} to any of ${oformats}. The default command: vmaconv SRC DST."`
	Create     createCmd        `cmd:"" help:"Write an archive of several disks: vmaconv create vm.vma drive-scsi0=disk.qcow2 drive-efidisk0=efi.raw -c qemu-server.conf."`
	Checksum   checksumCmd      `cmd:"" help:"Print the sha256 of disks' content (images, or archive devices), to prove a conversion kept every byte; -c checks a list."`
	Info       infoCmd          `cmd:"" aliases:"list" help:"Show what images and archives hold: format, sizes; an archive's UUID, creation time, configs and devices."`
	Compare    compareCmd       `cmd:"" help:"Compare the content of two disks, as qemu-img compare: exit 0 if identical, 1 if they differ (the first differing offset is printed), 2 on error."`
	Map        mapCmd           `cmd:"" help:"Show which ranges of a disk hold data and which read as zeros, as qemu-img map (--output json: the same JSON)."`
	Config     configCmd        `cmd:"" help:"Write one config file of an archive to standard output."`
	Verify     verifyCmd        `cmd:"" help:"Read whole archives and check them, completeness included, and whether Proxmox would restore them."`
	Extract    extractCmd       `cmd:"" help:"Restore an archive's configs and disks into a directory."`
	Serve      serveCmd         `cmd:"" help:"Serve an archive's disks read-only over NBD (qemu-img, qemu-nbd, nbd-client, guestfish) without restoring them."`
	Mount      mountCmd         `cmd:"" help:"Mount an archive's disks and configs as read-only files (FUSE, Linux): DIR/drive-scsi0.raw, …, for losetup -r -P and mount -o ro."`
	Ls         lsCmd            `cmd:"" help:"List the files inside an input's disks without restoring them (partitions, LVM2, ext2/3/4, XFS, NTFS, FAT, ISO 9660), as virt-ls: vmaconv ls -l vm.vma.zst /drive-scsi0/p2/etc."`
	Cat        catCmd           `cmd:"" help:"Write files inside an input's disks to standard output, as virt-cat: vmaconv cat vm.vma /drive-scsi0/p1/etc/fstab."`
	Cp         cpCmd            `cmd:"" help:"Copy files and directories out of an input's disks, as virt-copy-out: vmaconv cp -r vm.vma.zst /drive-scsi0/p2/home/ann out/."`
	Diff       diffCmd          `cmd:"" help:"List the files added (+), removed (-) and changed (M) between two inputs' disks, as virt-diff: vmaconv diff monday.vma.zst tuesday.vma.zst."`
	Index      indexCmd         `cmd:"" help:"Write ARCHIVE.vmaidx beside an archive (a file, or an s3:// object). For a plain .vma or a seekable .vma.zst: the reads opening it at random takes, which opening it from object storage then makes in parallel instead of one after another. For a .vma.zst without a seek table (what vzdump writes): the zstd stream's restart points and the archive's headers, with which it is read at random where it lies, locally or remote."`
	Cache      cacheCmd         `cmd:"" help:"List or clear the cache where serve and mount keep compressed archives decompressed ($XDG_CACHE_HOME/vmaconv, else ~/.cache/vmaconv): vmaconv cache list, vmaconv cache clear [ARCHIVE…]."`
	Help       helpCmd          `cmd:"" help:"Show the commands, or one command's options: vmaconv help convert."`
	Completion completionCmd    `cmd:"" help:"Print shell code for tab completion: source <(vmaconv completion bash) (or zsh, fish)."`
	Man        manCmd           `cmd:"" help:"Print the manual page (roff): vmaconv man > vmaconv.1."`
	Version    kong.VersionFlag `help:"Print the version and exit."`
	Quiet      bool             `short:"q" help:"Quiet: no notes on stderr, and no messages from compare (as qemu-img's -q); errors are still printed."`

	ZstdMemory mibSize `name:"zstd-memory" placeholder:"SIZE" default:"128" help:"Largest zstd window to decompress, in MiB or with a suffix (512M, 2G) (as zstd --memory): a .vma.zst needing more is refused rather than allowed to take that much memory."`
}

// env is what commands get from the process: streams and a context that is
// cancelled on SIGINT or SIGTERM.
type env struct {
	ctx        context.Context
	zstdMemory int64    // MiB
	notes      []string // said when the command ends
	quiet      bool     // -q: no notes
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	stderrTTY  bool // progress is drawn in place only on a terminal
	stdoutTTY  bool // binary output is not written to a terminal
	noSync     bool // -t unsafe: outputs are not synced
}

// note records an informational line for stderr, control characters
// escaped. Notes are printed when the command ends, unless it fails: a
// failure is one line.
func (e *env) note(format string, args ...any) {
	if e.quiet {
		return
	}
	e.notes = append(e.notes, "vmaconv: note: "+escapeControls(fmt.Sprintf(format, args...)))
}

// flushNotes prints the notes so far, for commands that run until they
// are stopped (serve, mount).
func (e *env) flushNotes() {
	for _, n := range e.notes {
		fmt.Fprintln(e.stderr, n)
	}
	e.notes = nil
}

// checkedWriter remembers the first error writing to standard output
// (/dev/full, a closed descriptor), which fails the command at its end.
type checkedWriter struct {
	w   io.Writer
	err error
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

// commandWords returns the command words (names and aliases) of the CLI's
// model, for telling an unknown command from a source file.
func commandWords(app *kong.Application) []string {
	var words []string
	for _, n := range app.Children {
		if n.Type == kong.CommandNode {
			words = append(append(words, n.Name), n.Aliases...)
		}
	}
	return words
}

// bareWord reports whether s looks like a command (lower-case letters and
// dashes) rather than a path.
func bareWord(s string) bool {
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '-' {
			return false
		}
	}
	return s != "" && s[0] != '-'
}

// versionString is the version set at link time, or the one the build
// recorded (internal/buildinfo).
func versionString() string { return "vmaconv " + buildinfo.Version(version) }

// helpVars are the variables of the CLI's help texts: the version, and
// the formats of the registry, so that no help text names a format.
func helpVars(version string) kong.Vars {
	var in, out []string
	for _, f := range registry.Formats() {
		if f.Open != nil || f.OpenAt != nil || f.OpenStream != nil {
			in = append(in, f.Name)
		}
		if f.Create != nil {
			out = append(out, f.Name)
		}
	}
	return kong.Vars{"version": version, "formats": strings.Join(in, ", "), "oformats": strings.Join(out, ", "), "tree": treeHelp}
}

// kongExit carries kong's exit status (after --help or --version) out of
// kong to run, which returns it instead of exiting the process.
type kongExit int

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (status int) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("vmaconv"),
		kong.Description("Convert disk images to and from Proxmox VMA backup archives (vzdump-qemu-*.vma); read, check and restore archives."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(kongExit(code)) }),
		helpVars(versionString()),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "vmaconv: %s\n", oneLine(err))
		return exitFailure
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			status = int(code)
		}
	}()
	// Tab completion requests (COMP_LINE set by the shell) are answered
	// here. bash runs the program as PROGRAM WORD PREVIOUS.
	if answerCompletion(parser, stdout, argAt(args, 1), len(args) >= 2) {
		return exitOK
	}
	// Bare vmaconv shows the commands.
	if len(args) == 0 {
		parser.Stdout = stderr
		parser.Exit = func(int) { panic(kongExit(exitUsage)) }
		parser.Parse([]string{"--help"})
		return exitUsage
	}
	if msg := argsMistake(args, commandWords(parser.Model)); msg != "" {
		fmt.Fprint(stderr, msg)
		return exitUsage
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "vmaconv: %s\n", oneLine(err))
		hint := "vmaconv --help"
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			if f := strings.Fields(pe.Context.Command()); len(f) > 0 && !strings.HasPrefix(f[0], "<") {
				hint = "vmaconv " + f[0] + " --help"
			}
		}
		fmt.Fprintf(stderr, "Run '%s' for usage.\n", hint)
		return exitUsage
	}
	if c.ZstdMemory < 1<<20 || c.ZstdMemory > 1<<40 {
		fmt.Fprintf(stderr, "vmaconv: --zstd-memory %s: want 1 MiB to 1 TiB\n", humanSize(int64(c.ZstdMemory)))
		return exitUsage
	}
	out := &checkedWriter{w: stdout}
	e := &env{ctx: ctx, stdin: stdin, stdout: out, stderr: stderr, zstdMemory: int64(c.ZstdMemory) >> 20, quiet: c.Quiet}
	if f, ok := stderr.(*os.File); ok {
		e.stderrTTY = term.IsTerminal(int(f.Fd()))
	}
	if f, ok := stdout.(*os.File); ok {
		e.stdoutTTY = term.IsTerminal(int(f.Fd()))
	}
	err = kctx.Run(e)
	if err == nil && out.err != nil {
		err = fmt.Errorf("writing to standard output: %w", out.err)
	}
	var ie incompleteError
	if err == nil || errors.As(err, &ie) {
		for _, n := range e.notes {
			fmt.Fprintln(stderr, n)
		}
	}
	if err != nil {
		endLine(stderr)
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "vmaconv: interrupted")
			return exitInterrupted
		}
		// One line, whatever names from an archive or a file the error
		// quotes.
		hint := ""
		var ml format.MemoryLimited
		if errors.As(err, &ml) {
			need, limit := ml.MemoryNeeded()
			need = max((need+1<<20-1)>>20, 2*limit>>20)
			hint = fmt.Sprintf("; to allow it, pass --zstd-memory %d (MiB)", need)
		}
		var qe quietError
		var se statusError
		switch {
		case errors.As(err, &se) && se.err == nil: // said already
		case !errors.As(err, &qe) || len(qe.Error()) > 0:
			fmt.Fprintf(stderr, "vmaconv: %s%s\n", oneLine(err), hint)
		}
		if errors.As(err, &se) {
			return se.status
		}
		if errors.As(err, &ie) {
			return exitIncomplete
		}
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

// interruptGrace is how long an interrupted command may take to stop
// (a var only for tests).
var interruptGrace = 2 * time.Second

// The interrupt machinery (internal/interrupt), by the names the
// commands use.
var (
	atInterrupt     = interrupt.AtInterrupt
	holdOnInterrupt = interrupt.Hold
)

// incompleteError reports a result written in part (exit status 3).
type incompleteError struct{ error }

// quietError is a failure whose details were reported already (one line
// per failed file); its text is the summary line.
type quietError struct{ error }

// usageError is a command-line mistake found after parsing; it exits with
// status 2 like kong's own parse errors.
type usageError struct{ error }

func main() {
	// SIGINT or SIGTERM cancels the command, which cleans up and exits with
	// status 128+signal (130, 143); see internal/interrupt.
	os.Exit(interrupt.Run(func(ctx context.Context) int { return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr) },
		interrupt.Options{Grace: interruptGrace, Status: exitInterrupted, GaveUp: func() {
			endLine(os.Stderr)
			fmt.Fprintln(os.Stderr, "vmaconv: interrupted")
		}}))
}

// argsMistake returns the lines that explain a command line kong would
// misread, or "": a device of standard input (-:scsi1) before --, which
// kong takes for a flag; and a first word that is neither a command nor
// a file. A first word with a dot, a slash or a colon is a path, and
// opening it says what is missing.
func argsMistake(args, commands []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-:") {
			fixed := append(append(append([]string{}, args[:i]...), "--"), args[i:]...)
			return fmt.Sprintf("vmaconv: unknown flag %s (device %s of an archive on standard input? put it after --: vmaconv %s)\n",
				escapeControls(a), escapeControls(a[2:]), text.ShellJoin(fixed))
		}
	}
	w := args[0]
	if !bareWord(w) || slices.Contains(commands, w) {
		return ""
	}
	if _, err := os.Stat(w); err == nil {
		return "" // a file, converted
	}
	msg := fmt.Sprintf("vmaconv: unknown command %q", w)
	if s := text.Suggest(w, commands); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	} else if len(args) > 1 {
		// vmaconv SRC DST with a SRC that does not exist.
		msg = fmt.Sprintf("vmaconv: %s: no such file or directory, and no command of that name", w)
	}
	return msg + "\nRun 'vmaconv help' for the commands.\n"
}

// argAt returns args[i], or "".
func argAt(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

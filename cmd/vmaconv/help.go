package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	kongcompletion "github.com/jotaen/kong-completion"
	"github.com/posener/complete"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/completion"
	"github.com/vmaconv/vmaconv/internal/manpage"
	"github.com/vmaconv/vmaconv/internal/text"
)

type helpCmd struct {
	Command []string `arg:"" optional:"" help:"The command to explain."`
}

// Run prints the help of the command named, or of vmaconv. A word that
// names no command is an error (kong would take it for convert's SRC).
func (c *helpCmd) Run(kctx *kong.Context) error {
	if len(c.Command) > 0 {
		words := commandWords(kctx.Model)
		if w := c.Command[0]; !slices.Contains(words, w) {
			msg := fmt.Sprintf("help: unknown command %q", w)
			if s := text.Suggest(w, words); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			return usageError{errors.New(msg + "; run 'vmaconv help' for the commands")}
		}
	}
	args := append(append([]string(nil), c.Command...), "--help")
	if _, err := kctx.Kong.Parse(args); err != nil {
		return usageError{fmt.Errorf("help: %v", err)}
	}
	return nil
}

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

// Run prints the shell code that makes the shell ask vmaconv for
// completions (kong-completion answers them, from the CLI's definition).
func (c *completionCmd) Run(kctx *kong.Context) error {
	return (&kongcompletion.Completion{Shell: c.Shell, Code: true}).Run(kctx)
}

type manCmd struct{}

// Run prints the manual page, generated from the CLI's definition: every
// command with its arguments and flags as kong knows them, so that a new
// flag appears by itself; the rest (exit statuses, environment, files,
// examples) is written here.
func (c *manCmd) Run(kctx *kong.Context) error {
	_, err := io.WriteString(kctx.Stdout, manPage(kctx.Model, manDate()))
	return err
}

// manDate is the date of the build's revision, else today's.
func manDate() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" && len(s.Value) >= 10 {
				return s.Value[:10]
			}
		}
	}
	return time.Now().UTC().Format("2006-01-02")
}

// manPage is the page in man(7) roff: kong's model of the CLI, around
// the texts below.
func manPage(app *kong.Application, date string) string {
	var b strings.Builder
	manpage.Write(&b, app, &manpage.Page{ // a strings.Builder never fails
		Section: "1",
		Date:    date,
		Source:  strings.TrimPrefix(versionString(), "vmaconv "),
		Manual:  "User Commands",
		Summary: "convert disk images to and from Proxmox VMA backups, and read,\ncheck, compare and restore the backups",
		Description: []string{
			`vmaconv is to Proxmox VE backup archives (VMA, the vzdump-qemu-*.vma files vzdump writes, and their .vma.zst, .vma.gz and .vma.lzo compressions) what qemu-img is to disk images, with qemu-img's habits: vmaconv SRC DST converts (the convert command); -f, -O, -n, -m, -p, -q and -t mean what they mean to qemu-img; compare and map print what qemu-img compare and qemu-img map print.`,
			`A disk is named as a file (a raw or qcow2 image), as ARCHIVE:DEVICE (vm.vma:drive-scsi0, or by its Proxmox key, vm.vma:scsi0), or as an archive that holds one disk. - reads an archive from standard input; its devices are named after --, as in vmaconv checksum -- -:scsi0. Formats are recognised by their magic bytes; anything else is raw, with a note. A destination's format comes from -O or its extension: .vma, .vma.zst and .vma.gz are archives, .qcow2 a qcow2 image, .raw and .img raw; any other name is raw with a note, and the suffixes of compressors vmaconv does not write (.bz2, .xz, .lz4, ...) are refused.`,
			`Outputs are written to a temporary file beside the destination and renamed into place only when complete; an existing file is replaced only with --overwrite. Errors are one line naming what and where. Notes come on standard error when a command ends, never before a failure's line; -q silences them.`,
		},
		ExitStatus: []manpage.Item{
			{Tag: "0", Text: "Success; for compare, the disks are identical."},
			{Tag: "1", Text: "Failure (one line on standard error says what and where); for compare, the disks differ (the first differing offset is printed)."},
			{Tag: "2", Text: "A usage error: an unknown command or flag, a missing argument, a bad value, a refused destination; for compare, a disk could not be opened."},
			{Tag: "3", Text: "extract --salvage wrote what it could of a damaged archive, and reported what it could not; for compare, a disk's map of zeros could not be read."},
			{Tag: "4", Text: "For compare, a disk could not be read (as qemu-img compare)."},
			{Tag: "128+N", Text: "Ended by signal N: 130 for SIGINT (Ctrl-C), 143 for SIGTERM. Partial outputs are removed."},
		},
		Environment: []manpage.Item{
			{Tag: "XDG_CACHE_HOME", Text: "Where the decompression cache is kept: $XDG_CACHE_HOME/vmaconv (see FILES)."},
			{Tag: "HOME", Text: "The cache is in ~/.cache/vmaconv when XDG_CACHE_HOME is not set."},
			{Tag: "XDG_RUNTIME_DIR", Text: "Where serve puts its Unix socket unless --socket names one."},
			{Tag: "TMPDIR", Text: "Where serve puts its socket when XDG_RUNTIME_DIR is not set (default /tmp)."},
			{Tag: "COMP_LINE, COMP_POINT", Text: "Set by the shell to ask vmaconv for tab completions (see the completion command); vmaconv then prints the candidates and exits."},
		},
		Files: []manpage.Item{
			{Tag: "$XDG_CACHE_HOME/vmaconv/, else ~/.cache/vmaconv/", Text: "The decompression cache: serve, mount, compare and map read a compressed archive (.vma.zst that is not seekable, .vma.gz, .vma.lzo) at random through a decompressed copy of it, made once, checked, and reused while the archive keeps its path, size, time and inode. --cache-dir names another directory."},
			{Tag: "$XDG_RUNTIME_DIR/vmaconv-PID.sock", Text: "The Unix socket of serve (else in TMPDIR), for the owner only, removed when serve ends."},
			{Tag: "DIR/.vmaconv-*.tmp", Text: "An output being written beside its destination; renamed into place when complete, removed on failure or interruption."},
		},
		Examples: []manpage.Example{
			{Text: "Convert an image into an archive Proxmox restores, and back:", Lines: []string{"vmaconv disk.qcow2 vm.vma", "vmaconv vm.vma:drive-scsi0 disk.raw"}},
			{Text: "Write a backup that qmrestore finds, named as vzdump names it:", Lines: []string{"vmaconv disk.qcow2 /var/lib/vz/dump/ --vmid 120 --compress zstd"}},
			{Text: "Show and check an archive, then restore its disks and configs:", Lines: []string{"vmaconv info vzdump-qemu-100.vma.zst", "vmaconv verify vzdump-qemu-100.vma.zst", "vmaconv extract vzdump-qemu-100.vma.zst restored/"}},
			{Text: "Prove that a conversion kept every byte:", Lines: []string{"vmaconv compare vm.vma:scsi0 disk.qcow2", "vmaconv map --output json vm.vma:scsi0"}},
			{Text: "Restore one disk onto a block device, from a pipe:", Lines: []string{"ssh pve cat /var/lib/vz/dump/vzdump-qemu-100.vma.zst |", "  vmaconv -n -- -:scsi0 /dev/sdX"}},
			{Text: "Read a backup's disks without restoring them:", Lines: []string{"vmaconv serve vzdump-qemu-100.vma.zst", "vmaconv mount vzdump-qemu-100.vma /mnt/backup"}},
			{Text: "Enable tab completion in bash:", Lines: []string{"source <(vmaconv completion bash)"}},
		},
		SeeAlso: []string{"qemu-img(1)", "vzdump(1)", "qmrestore(1)", "qm(1)", "zstd(1)"},
	})
	return b.String()
}

// completeValues are the candidates for flag values, by flag name: the
// formats are the registry's.
func completeValues() map[string][]string {
	var writable []string
	for _, n := range registry.Names() {
		if f, _ := registry.Lookup(n); f.Create != nil {
			writable = append(writable, n)
		}
	}
	return map[string][]string{
		"output-format": writable,
		"format":        registry.Names(),
		"second-format": registry.Names(),
		"compress":      {"zstd", "gzip", "zlib", "none"},
		"cache":         {"writeback", "unsafe"},
	}
}

// answerCompletion answers the shell's request for completions (COMP_LINE
// set), with the values of -O, -f, --compress and -t, and the devices of
// an archive after ARCHIVE: for the arguments that take a disk. It
// reports whether it answered (see completion.Answer).
func answerCompletion(parser *kong.Kong, stdout io.Writer, bashWord string, hasWord bool) bool {
	ref := completion.Inside(func(path string) []string { return archiveDevices(path, time.Second) })
	return completion.Answer(parser, stdout, completion.Rules{
		Values: completeValues(),
		Args:   map[string]complete.Predictor{"src": ref, "file": ref, "a": ref, "b": ref},
	}, bashWord, hasWord)
}

// archiveDevices returns the names of the devices of the archive at path
// (compressed or not), each by its name and its short name, or nothing if
// it is not an archive or takes longer than limit to read. Only the
// header is read (and decompressed).
func archiveDevices(path string, limit time.Duration) []string {
	names := make(chan []string, 1)
	go func() {
		in, err := input.Open(context.Background(), registry, format.Ref{Path: path}, input.Options{Stream: true})
		if err != nil {
			names <- nil
			return
		}
		defer in.Close()
		var n []string
		for i, d := range in.Devices() {
			if in.Archive() {
				n = append(n, d.Name)
			}
			if short := in.ShortName(i); short != "" {
				n = append(n, short)
			}
		}
		names <- n
	}()
	select {
	case n := <-names:
		return n
	case <-time.After(limit):
		return nil
	}
}

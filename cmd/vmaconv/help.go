package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	kongcompletion "github.com/jotaen/kong-completion"
	"github.com/posener/complete"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/buildinfo"
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
	_, err := io.WriteString(kctx.Stdout, manPage(kctx.Model, buildinfo.Date()))
	return err
}

// manPage is the page in man(7) roff: kong's model of the CLI, around
// vmaconv's texts (internal/manpage).
func manPage(app *kong.Application, date string) string {
	var b strings.Builder
	manpage.Write(&b, app, manpage.Vmaconv(date, strings.TrimPrefix(versionString(), "vmaconv "))) // a strings.Builder never fails
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
	ref := completion.Inside(func(path string) []string { return input.Names(registry, path, time.Second) })
	return completion.Answer(parser, stdout, completion.Rules{
		Values: completeValues(),
		Args:   map[string]complete.Predictor{"src": ref, "file": ref, "a": ref, "b": ref},
	}, bashWord, hasWord)
}

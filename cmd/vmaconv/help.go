package main

import (
	"errors"
	"fmt"
	"slices"

	"github.com/alecthomas/kong"
	mangokong "github.com/alecthomas/mango-kong"
	kongcompletion "github.com/jotaen/kong-completion"
	"github.com/muesli/roff"
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
			if s := suggest(w, words); s != "" {
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

// Run prints the manual page, generated from the CLI's definition.
func (c *manCmd) Run(kctx *kong.Context) error {
	page := mangokong.NewManPage(1, kctx.Model)
	_, err := fmt.Fprint(kctx.Stdout, page.Build(roff.NewDocument()))
	return err
}

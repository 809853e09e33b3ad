package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/internal/manpage"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestManPage: the manual page has every section a man page needs, every
// command and every flag of the CLI's definition (a flag added to a
// command appears by itself), and mandoc -Tlint has nothing to say about
// it, not even style.
func TestManPage(t *testing.T) {
	mandoc := testutil.RequireTool(t, "mandoc")
	var page, stderr bytes.Buffer
	if st := run(t.Context(), []string{"man"}, nil, &page, &stderr); st != 0 {
		t.Fatalf("status %d: %s", st, stderr.String())
	}
	cmd := exec.Command(mandoc, "-Tlint", "-W", "all")
	cmd.Stdin = bytes.NewReader(page.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("mandoc -Tlint -W all: %v\n%s", err, out)
	}
	text := page.String()
	for _, sec := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "ENVIRONMENT", "FILES", "EXAMPLES", `"SEE ALSO"`, `"EXIT STATUS"`} {
		if !strings.Contains(text, "\n.SH "+sec+"\n") {
			t.Errorf("no %s section", sec)
		}
	}
	for _, want := range []string{"XDG_CACHE_HOME", "130 for SIGINT", "143 for SIGTERM", "qemu\\-img\\fR(1)", "qmrestore", "vzdump\\fR(1)", "~/.cache/vmaconv"} {
		if !strings.Contains(text, want) {
			t.Errorf("the page does not mention %s", want)
		}
	}
	p, err := kong.New(&cli{}, kong.Name("vmaconv"), helpVars(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range p.Model.Children {
		if !strings.Contains(text, "\n.SS "+n.Name) && !strings.Contains(text, "\n.SS \""+n.Name) {
			t.Errorf("command %s is missing", n.Name)
		}
		for _, f := range n.Flags {
			if !strings.Contains(text, manpage.Escape(f.String())) {
				t.Errorf("%s: flag %s is missing", n.Name, f.String())
			}
		}
	}
	// A command and a flag the page was never told about.
	type extra struct {
		cli
		Frob struct {
			Knob string `placeholder:"K" help:"Turn the knob."`
		} `cmd:"" help:"Frobnicate."`
	}
	p, err = kong.New(&extra{}, kong.Name("vmaconv"), helpVars(""))
	if err != nil {
		t.Fatal(err)
	}
	if m := manPage(p.Model, "2026-01-01"); !strings.Contains(m, "\n.SS frob\nFrobnicate.\n") || !strings.Contains(m, "\\-\\-knob=K\\fR\nTurn the knob.\n") {
		t.Errorf("a new command's flag is not on the page:\n%s", m[strings.Index(m, ".SS frob"):])
	}
}

package manpage

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

type testCLI struct {
	Run struct {
		Src    string `arg:"" help:"Where from."`
		Dst    string `arg:"" optional:"" help:"Where to."`
		Level  int    `default:"3" help:"How hard."`
		Mode   string `enum:"a,b" default:"a" help:"Which way."`
		Secret bool   `hidden:"" help:"Never shown."`
	} `cmd:"" default:"withargs" help:"Run it: the default command."`
	List  struct{} `cmd:"" aliases:"ls" help:"List them."`
	Ghost struct{} `cmd:"" hidden:"" help:"Never shown."`
	Quiet bool     `short:"q" help:"Say less."`
}

var testPage = Page{
	Section: "1",
	Date:    "2026-01-31",
	Source:  "t 1.0",
	Manual:  "User Commands",
	Summary: "run things,\nand list them",
	Description: []string{
		"A paragraph long enough to be wrapped: it goes on and on about --level and -q, until its words no longer fit on one line of the page's source.",
	},
	ExitStatus:  []Item{{"0", "Success."}, {"128+N", "Ended by signal N."}},
	Environment: []Item{{"T_HOME", "Where t-files are."}},
	Files:       []Item{{"~/.t-rc", "What t reads first."}},
	Examples: []Example{
		{"Run:", []string{"t run a b", "  --level 2"}},
		{"A line that looks like a request:", []string{".t"}},
	},
	SeeAlso: []string{"qemu-img(1)", "plain"},
}

// wantPage is testPage of testCLI: every section, in order; hidden
// commands and flags left out; the default command's synopsis first;
// text escaped (dashes, backslashes, a leading dot) and wrapped.
const wantPage = `.TH T 1 2026-01-31 "t 1.0" "User Commands"
.SH NAME
t \- run things,
and list them
.SH SYNOPSIS
\fBt\fR [\fIflags\fR] \fISRC\fR [\fIDST\fR]
.br
\fBt\fR \fBrun\fR <src> [<dst>] [flags]
.br
\fBt\fR \fBlist\fR (ls) [flags]
.SH DESCRIPTION
A tool.
.PP
A paragraph long enough to be wrapped: it goes on and on about \-\-level
and \-q, until its words no longer fit on one line of the page's source.
.SH OPTIONS
These flags are taken by every command.
.TP
\fB\-h, \-\-help\fR
Show context\-sensitive help.
.TP
\fB\-q, \-\-quiet\fR
Say less.
.SH COMMANDS
.SS run
Run it: the default command.
.TP
\fI<src>\fR
Where from.
.TP
\fI[<dst>]\fR
Where to.
.TP
\fB\-\-level=3\fR
How hard. Default: 3.
.TP
\fB\-\-mode="a"\fR
Which way. One of: a, b. Default: a.
.SS "list (ls)"
List them.
.SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB128+N\fR
Ended by signal N.
.SH ENVIRONMENT
.TP
\fBT_HOME\fR
Where t\-files are.
.SH FILES
.TP
\fI~/.t\-rc\fR
What t reads first.
.SH EXAMPLES
Run:
.RS 4
.nf
t run a b
  \-\-level 2
.fi
.RE
.PP
A line that looks like a request:
.RS 4
.nf
\&.t
.fi
.RE
.SH "SEE ALSO"
\fBqemu\-img\fR(1), \fBplain\fR
`

// TestWrite: a page of a small CLI, byte for byte, and mandoc -Tlint -W
// all has nothing to say about it.
func TestWrite(t *testing.T) {
	p, err := kong.New(&testCLI{}, kong.Name("t"), kong.Description("A tool."))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, p.Model, &testPage); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != wantPage {
		t.Errorf("page:\n%s\nwant:\n%s", got, wantPage)
	}
	cmd := exec.Command(testutil.RequireTool(t, "mandoc"), "-Tlint", "-W", "all")
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("mandoc -Tlint -W all: %v\n%s", err, out)
	}
}

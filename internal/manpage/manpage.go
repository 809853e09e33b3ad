// Package manpage writes a command's manual page in man(7) roff from
// kong's model of its command line: the synopsis, and every command with
// its arguments and flags as kong knows them (so that a flag added to the
// CLI appears on the page by itself), around the sections only the
// program can write (what it does, exit statuses, environment, files,
// examples), which it gives as plain text in a Page.
//
// Lines of text are wrapped under 73 bytes, and the page is one mandoc
// -Tlint -W all accepts without a message. The sections come in the order
// of man-pages(7).
package manpage

import (
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// Page is what a manual page says besides kong's model. Every text is
// plain text, escaped here (and wrapped, but for Summary, the examples'
// lines and SeeAlso); an empty section is left out.
type Page struct {
	Section string // the manual's section: "1"
	Date    string // the page's date: "2026-01-31"
	Source  string // the program's version
	Manual  string // the manual's title: "User Commands"
	// Summary is the NAME line after "NAME \-": what the program does. A
	// newline in it starts a line of the page's source.
	Summary string
	// Description is the DESCRIPTION's paragraphs, after the help kong
	// has of the application.
	Description []string
	ExitStatus  []Item // EXIT STATUS: the statuses, in bold
	Environment []Item // ENVIRONMENT: variables, in bold
	Files       []Item // FILES: paths, in italics
	Examples    []Example
	// SeeAlso names other pages as name(section): "qemu-img(1)".
	SeeAlso []string
}

// Item is one entry of a tagged list: a tag (an exit status, a variable,
// a path) and what it means.
type Item struct {
	Tag, Text string
}

// Example is a sentence and the command lines it introduces.
type Example struct {
	Text  string
	Lines []string // shown as typed, indentation kept
}

// Write writes app's manual page to w. The page lists every command and
// flag that is not hidden, and the default command's arguments (kong's
// default:"withargs") as the first line of the synopsis.
func Write(w io.Writer, app *kong.Application, p *Page) error {
	var r roff
	r.macro("TH", strings.ToUpper(app.Name), p.Section, p.Date, p.Source, p.Manual)
	r.macro("SH", "NAME")
	for i, l := range strings.Split(p.Summary, "\n") {
		if i == 0 {
			l = app.Name + " - " + l
		}
		r.line(Escape(l))
	}
	r.macro("SH", "SYNOPSIS")
	if d := app.DefaultCmd; d != nil && d.Tag.Default == "withargs" {
		r.synopsis(app.Name, defaultSummary(d))
	}
	var cmds []*kong.Node
	for _, n := range app.Children {
		if n.Type == kong.CommandNode && !n.Hidden {
			cmds = append(cmds, n)
			r.synopsis(app.Name, summary(n))
		}
	}
	r.macro("SH", "DESCRIPTION")
	r.text(app.Help)
	for _, s := range p.Description {
		r.para(s)
	}
	r.macro("SH", "OPTIONS")
	r.text("These flags are taken by every command.")
	r.flags(app.Flags)
	r.macro("SH", "COMMANDS")
	for _, n := range cmds {
		name := n.Name
		if len(n.Aliases) > 0 {
			name += " (" + strings.Join(n.Aliases, ", ") + ")"
		}
		r.macro("SS", name)
		r.text(n.Help)
		for _, a := range n.Positional {
			r.macro("TP")
			r.line(`\fI` + Escape(a.Summary()) + `\fR`)
			r.text(a.Help)
		}
		r.flags(n.Flags)
	}
	r.items("EXIT STATUS", `\fB`, p.ExitStatus)
	r.items("ENVIRONMENT", `\fB`, p.Environment)
	r.items("FILES", `\fI`, p.Files)
	if len(p.Examples) > 0 {
		r.macro("SH", "EXAMPLES")
		for i, ex := range p.Examples {
			if i > 0 {
				r.macro("PP")
			}
			r.text(ex.Text)
			r.example(ex.Lines)
		}
	}
	if len(p.SeeAlso) > 0 {
		r.macro("SH", "SEE ALSO")
		refs := make([]string, len(p.SeeAlso))
		for i, s := range p.SeeAlso {
			name, sect := s, ""
			if j := strings.LastIndexByte(s, '('); j > 0 {
				name, sect = s[:j], s[j:]
			}
			refs[i] = `\fB` + Escape(name) + `\fR` + Escape(sect)
		}
		r.line(strings.Join(refs, ", "))
	}
	_, err := io.WriteString(w, r.b.String())
	return err
}

// summary is a command's synopsis: its name in bold, the rest as kong
// summarises it.
func summary(n *kong.Node) string {
	rest := strings.TrimPrefix(n.Summary(), n.Name)
	return `\fB` + Escape(n.Name) + `\fR` + Escape(rest)
}

// defaultSummary is the synopsis of the default command run without its
// name: the flags, then its arguments in italics, in capitals.
func defaultSummary(n *kong.Node) string {
	s := `[\fIflags\fR]`
	for _, a := range n.Positional {
		arg := `\fI` + Escape(strings.ToUpper(a.Name)) + `\fR`
		if a.IsCumulative() {
			arg += " ..."
		}
		if !a.Required {
			arg = "[" + arg + "]"
		}
		s += " " + arg
	}
	return s
}

// Escape escapes text for roff as the page shows every text it is
// given: backslashes, and dashes as minus signs (options are typed with
// them).
func Escape(s string) string { return escaper.Replace(s) }

var escaper = strings.NewReplacer(`\`, `\e`, "-", `\-`)

// roff writes man(7) source.
type roff struct {
	b        strings.Builder
	synopses int
}

// macro writes a request, quoting the arguments that need it.
func (r *roff) macro(name string, args ...string) {
	r.b.WriteString("." + name)
	for _, a := range args {
		if strings.ContainsAny(a, " \t") || a == "" {
			a = `"` + a + `"`
		}
		r.b.WriteString(" " + a)
	}
	r.b.WriteByte('\n')
}

// line writes one line of roff as it is (escapes included), guarded
// from being read as a request.
func (r *roff) line(s string) {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	r.b.WriteString(s + "\n")
}

// text writes plain text, escaped and wrapped.
func (r *roff) text(s string) {
	var cur string
	for _, w := range strings.Fields(s) {
		w = Escape(w)
		if cur != "" && len(cur)+1+len(w) > 72 {
			r.line(cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		r.line(cur)
	}
}

func (r *roff) para(s string) {
	r.macro("PP")
	r.text(s)
}

// synopsis writes one synopsis line, each on a line of its own.
func (r *roff) synopsis(cmd, rest string) {
	if r.synopses > 0 {
		r.macro("br")
	}
	r.synopses++
	r.line(`\fB` + Escape(cmd) + `\fR ` + rest)
}

// items writes a section of tagged paragraphs, the tags in font (\fB or
// \fI).
func (r *roff) items(section, font string, items []Item) {
	if len(items) == 0 {
		return
	}
	r.macro("SH", section)
	for _, it := range items {
		r.macro("TP")
		r.line(font + Escape(it.Tag) + `\fR`)
		r.text(it.Text)
	}
}

func (r *roff) example(lines []string) {
	r.macro("RS", "4")
	r.macro("nf")
	for _, l := range lines {
		r.line(Escape(l))
	}
	r.macro("fi")
	r.macro("RE")
}

// flags writes a flag list: each flag as kong shows it in --help, then
// its help, its choices and its default.
func (r *roff) flags(flags []*kong.Flag) {
	for _, f := range flags {
		if f.Hidden {
			continue
		}
		r.macro("TP")
		r.line(`\fB` + Escape(f.String()) + `\fR`)
		help := f.Help
		if f.Enum != "" && !strings.Contains(help, f.Enum) {
			help += " One of: " + strings.Join(f.EnumSlice(), ", ") + "."
		}
		if f.Default != "" && !f.IsBool() && !strings.Contains(help, "default") {
			help += " Default: " + f.Default + "."
		}
		r.text(help)
	}
}

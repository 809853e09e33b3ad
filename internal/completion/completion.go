// Package completion answers a shell's tab completion requests for a kong
// CLI from kong's model of it (through kong-completion and
// posener/complete), with what the model cannot tell: the values of
// flags, arguments that name something inside a file (FILE:NAME), and,
// for a default command that takes arguments, its words at the top level.
//
// The shell asks by running the program with COMP_LINE (and COMP_POINT)
// set, as bash's complete -C does; the code that makes bash, zsh and fish
// ask is kong-completion's.
package completion

import (
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	kongcompletion "github.com/jotaen/kong-completion"
	"github.com/posener/complete"
)

// Rules are the candidates kong's model does not give.
type Rules struct {
	// Values are the candidates for a flag's value, by the flag's name
	// (its long and its short form).
	Values map[string][]string
	// Args predict positional arguments, by the argument's name. Any
	// other argument without an enum or a predictor tag completes file
	// names.
	Args map[string]complete.Predictor
}

// Answer answers the shell's request for completions, if there is one
// (COMP_LINE is set): it writes the candidates to w, one a line, and
// reports whether it answered. bashWord, if hasWord, is the word bash says
// it completes (its second argument to the program), which stops at a
// colon: the candidates are cut to match it.
func Answer(parser *kong.Kong, w io.Writer, r Rules, bashWord string, hasWord bool) bool {
	if _, ok := os.LookupEnv("COMP_LINE"); !ok {
		return false
	}
	cmd, err := kongcompletion.Command(parser)
	if err != nil {
		return false
	}
	files := complete.PredictFiles("*")
	var fix func(c *complete.Command, n *kong.Node)
	fix = func(c *complete.Command, n *kong.Node) {
		for _, f := range n.Flags {
			if vals, ok := r.Values[f.Name]; ok {
				for _, name := range []string{"--" + f.Name, "-" + string(f.Short)} {
					if _, ok := c.GlobalFlags[name]; ok {
						c.GlobalFlags[name] = complete.PredictSet(vals...)
					}
				}
			}
		}
		if pp, ok := c.Args.(*kongcompletion.PositionalPredictor); ok {
			for i, p := range n.Positional {
				if a, ok := r.Args[p.Name]; ok {
					pp.Predictors[i] = a
				} else if p.Enum == "" && p.Tag.Get("predictor") == "" {
					pp.Predictors[i] = files
				}
			}
		}
		for _, child := range n.Children {
			if sub, ok := c.Sub[child.Name]; ok {
				fix(&sub, child)
				c.Sub[child.Name] = sub
			}
		}
	}
	fix(&cmd, parser.Model.Node)
	// PROGRAM ARGS...: the default command's arguments and flags at the
	// top level.
	if d := parser.Model.DefaultCmd; d != nil && d.Tag.Default == "withargs" {
		if def, ok := cmd.Sub[d.Name]; ok {
			cmd.Args = def.Args
			cmd.Flags = complete.Flags{}
			for name, p := range def.GlobalFlags {
				if _, global := cmd.GlobalFlags[name]; !global {
					cmd.Flags[name] = p
				}
			}
		}
	}
	if hasWord {
		w = &cutWriter{w: w, word: bashWord}
	}
	c := complete.New(parser.Model.Name, cmd)
	c.Out = w
	return c.Complete()
}

// cutWriter writes candidates as bash wants them when its word stops at a
// colon: "m.vma:drive-scsi0" for the word "drive-s" becomes "drive-scsi0".
type cutWriter struct {
	w    io.Writer
	word string
}

func (c *cutWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	if i := strings.LastIndexByte(line, ':'); i >= 0 && !strings.Contains(c.word, ":") && strings.HasPrefix(line[i+1:], c.word) {
		line = line[i+1:]
	}
	_, err := io.WriteString(c.w, line+"\n")
	return len(p), err
}

// Inside predicts FILE:NAME words: after the path of a regular file and a
// colon, FILE:NAME for each name that names(FILE) returns (nothing else:
// it is not a file name then); otherwise file names.
func Inside(names func(path string) []string) complete.Predictor {
	return complete.PredictFunc(func(a complete.Args) []string {
		if i := strings.LastIndexByte(a.Last, ':'); i > 0 {
			path := a.Last[:i]
			if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
				var out []string
				for _, n := range names(path) {
					out = append(out, path+":"+n)
				}
				return out
			}
		}
		return complete.PredictFiles("*").Predict(a)
	})
}

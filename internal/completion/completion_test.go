package completion

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"
)

type testCLI struct {
	Run struct {
		Src    string `arg:"" help:"Where from."`
		Dst    string `arg:"" help:"Where to."`
		Format string `short:"f" help:"A format."`
	} `cmd:"" default:"withargs" help:"Run."`
	List struct {
		File string `arg:"" help:"A file."`
	} `cmd:"" help:"List."`
	Quiet bool `short:"q" help:"Say less."`
}

// TestAnswer: flag values (long and short), an argument's own predictor
// (names inside a file after FILE:, cut to bash's word after the colon),
// file names for the other arguments, and the default command's
// arguments and flags at the top level; nothing without COMP_LINE.
func TestAnswer(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := kong.New(&testCLI{}, kong.Name("t"))
	if err != nil {
		t.Fatal(err)
	}
	inside := Inside(func(path string) []string {
		if path != img {
			t.Errorf("names of %s, want %s", path, img)
		}
		return []string{"x1", "x2"}
	})
	rules := Rules{Values: map[string][]string{"format": {"qcow2", "raw"}}, Args: map[string]complete.Predictor{"src": inside}}
	answer := func(line, word string) []string {
		t.Helper()
		t.Setenv("COMP_LINE", line)
		t.Setenv("COMP_POINT", "")
		var out bytes.Buffer
		if !Answer(p, &out, rules, word, word != "") {
			t.Fatalf("%q: not answered", line)
		}
		got := strings.Fields(out.String())
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		line, word string
		want       []string
	}{
		{"t run --format ", "", []string{"qcow2", "raw"}},
		{"t run -f q", "", []string{"qcow2"}},
		{"t --format r", "", []string{"raw"}},
		{"t run " + img + ":", "", []string{img + ":x1", img + ":x2"}},
		{"t " + img + ":x", "x", []string{"x1", "x2"}},
		{"t run " + dir + "/", "", []string{dir + "/", img}},
		{"t run " + img + " " + dir + "/", "", []string{dir + "/", img}},
		{"t list " + dir + "/", "", []string{dir + "/", img}},
		{"t --fo", "", []string{"--format"}},
	} {
		if got := answer(tc.line, tc.word); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.line, got, tc.want)
		}
	}
	os.Unsetenv("COMP_LINE")
	var out bytes.Buffer
	if Answer(p, &out, rules, "", false) || out.Len() > 0 {
		t.Errorf("answered without COMP_LINE: %q", out.String())
	}
}

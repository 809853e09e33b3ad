package text

import "testing"

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 540672: "528 KiB", 3156000: "3.01 MiB",
		1023 << 20: "1023 MiB", 1000 << 20: "1000 MiB", 1 << 40: "1 TiB", 1<<63 - 1: "8 EiB",
	} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"drive-scsi0": "drive-scsi0", "": `""`, "a b": `"a b"`, `a"b`: `"a\"b"`,
		"é": `"é"`, "a\x7f": `"a\x7f"`, "a\nb": `"a\nb"`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEscapeControls(t *testing.T) {
	for in, want := range map[string]string{
		"plain é text": "plain é text",
		"a\nb\x1b[2J":  `a\nb\x1b[2J`,
		"del\x7f":      `del\x7f`,
		"c1\u0085":     `c1\u0085`,
		"bad\xff utf8": `bad\xff utf8`,
		"\ttab":        `\ttab`,
		"ok\u00a0nbsp": "ok\u00a0nbsp",
	} {
		if got := EscapeControls(in); got != want {
			t.Errorf("EscapeControls(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPlural(t *testing.T) {
	for _, c := range []struct {
		n          int
		noun, want string
	}{{0, "device", "0 devices"}, {1, "device", "1 device"}, {2, "file", "2 files"}, {1, "entry", "1 entry"}, {3, "entry", "3 entries"}} {
		if got := Plural(c.n, c.noun); got != c.want {
			t.Errorf("Plural(%d, %q) = %q, want %q", c.n, c.noun, got, c.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	words := []string{"convert", "compare", "checksum", "info", "list", "verify", "extract", "mount", "map"}
	for in, want := range map[string]string{
		"convrt": "convert", "compar": "compare", "verfiy": "verify", "inof": "info", "mpa": "map",
		"xyzzy": "", "checksums": "checksum", "extractt": "extract", "": "",
	} {
		if got := Suggest(in, words); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := ShellJoin([]string{"vmaconv", "checksum", "--", "-:scsi0", "a b", "it's", "", "x\ny", "ok/path_1.2,3:4=5@6+7%8"})
	want := `vmaconv checksum -- -:scsi0 'a b' 'it'\''s' '' 'x\ny' ok/path_1.2,3:4=5@6+7%8`
	if got != want {
		t.Errorf("ShellJoin = %s, want %s", got, want)
	}
}

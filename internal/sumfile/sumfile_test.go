package sumfile

import (
	"errors"
	"strings"
	"testing"
)

const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// TestLine: names are written as sha256sum writes them, escaped where
// they hold a backslash or a newline, and read back as they were.
func TestLine(t *testing.T) {
	for name, want := range map[string]string{
		"disk.raw":       sum + "  disk.raw",
		"a b":            sum + "  a b",
		`a\b`:            `\` + sum + `  a\\b`,
		"a\nb":           `\` + sum + `  a\nb`,
		"vm.vma:\x1b[2J": `\` + sum + `  vm.vma:\x1b[2J`,
		"vm.vma:scsi0":   sum + "  vm.vma:scsi0",
	} {
		got := Line(sum, name)
		if got != want {
			t.Errorf("Line(%q) = %q, want %q", name, got, want)
		}
		if strings.ContainsAny(name, "\x1b") {
			continue // escaped for the terminal, not read back
		}
		s, n, ok := Parse(got)
		if !ok || s != sum || n != name {
			t.Errorf("Parse(%q) = %q, %q, %v", got, s, n, ok)
		}
	}
}

// TestScan: every line is given with its checksum in lower case (binary
// mode's '*' too); a line that is not a checksum line stops the scan,
// naming its place; fn's error stops it.
func TestScan(t *testing.T) {
	in := strings.ToUpper(sum) + "  a\n" + sum + " *b\n" + `\` + sum + "  c\\nd\n"
	var got []string
	if err := Scan(strings.NewReader(in), "SUMS", func(s, name string) error {
		got = append(got, s+"|"+name)
		return nil
	}); err != nil || strings.Join(got, ",") != sum+"|a,"+sum+"|b,"+sum+"|c\nd" {
		t.Errorf("Scan: %q, %v", got, err)
	}
	for text, want := range map[string]string{
		sum + "  a\nnot a line\n":  "SUMS:2: not a checksum line (HEX  NAME)",
		sum[:63] + "x  a\n":        "SUMS:1: not a checksum line (HEX  NAME)",
		sum + "  \n":               "SUMS:1: not a checksum line (HEX  NAME)",
		sum + "\ta\n":              "SUMS:1: not a checksum line (HEX  NAME)",
		strings.Repeat("0", 2<<20): "SUMS: bufio.Scanner: token too long",
	} {
		err := Scan(strings.NewReader(text), "SUMS", func(string, string) error { return nil })
		if err == nil || err.Error() != want {
			t.Errorf("Scan(%.40q): %v, want %s", text, err, want)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := Scan(strings.NewReader(in), "SUMS", func(string, string) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("Scan with fn failing: %v after %d lines", err, n)
	}
}

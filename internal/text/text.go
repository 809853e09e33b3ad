// Package text formats what vmaconv shows on a terminal: sizes as
// qemu-img writes them, names from files made safe to print, counts of
// things, and the command closest to a mistyped one.
package text

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Size formats n bytes the way qemu-img does: "3.01 MiB", "528 KiB".
func Size(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	s := fmt.Sprintf("%.3g", v)
	if v >= 1000 {
		s = fmt.Sprintf("%.0f", v)
	}
	return s + " " + units[u]
}

// Printable returns name as it is if it is plain printable ASCII without
// spaces, and quoted otherwise, so that names from an archive cannot play
// tricks on a terminal.
func Printable(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f || name[i] == '"' {
			return strconv.Quote(name)
		}
	}
	if name == "" {
		return `""`
	}
	return name
}

// EscapeControls replaces control characters (newlines, escape
// sequences, DEL, the C1 range) and bytes that are not UTF-8 with Go
// escapes, so that text holding names from an archive stays on one line
// and cannot drive the terminal.
func EscapeControls(s string) string {
	bad := func(r rune, size int) bool {
		return r < ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError && size == 1
	}
	clean := true
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if bad(r, size) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case bad(r, size):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Plural formats a count of nouns: "1 device", "2 devices"; a noun
// ending in y takes ies: "2 entries".
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if stem, ok := strings.CutSuffix(noun, "y"); ok {
		return fmt.Sprintf("%d %sies", n, stem)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Suggest returns the word of words closest to s (at most two edits
// away), or "": the command a user probably meant.
func Suggest(s string, words []string) string {
	best, dist := "", 3
	for _, w := range words {
		if d := editDistance(s, w); d < dist {
			best, dist = w, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// ShellJoin joins args as a shell reads them back, quoting where
// needed, control characters escaped.
func ShellJoin(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/=@+%") == "" {
			b.WriteString(EscapeControls(a))
			continue
		}
		b.WriteString("'" + EscapeControls(strings.ReplaceAll(a, "'", `'\''`)) + "'")
	}
	return b.String()
}

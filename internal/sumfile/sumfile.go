// Package sumfile reads and writes checksum lines as sha256sum does:
// "HEX  NAME", and "\HEX  NAME" with the name escaped when it holds a
// backslash or a control character.
package sumfile

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/vmaconv/vmaconv/internal/text"
)

// Line formats a line as sha256sum does; a name with a backslash or a
// control character is escaped and the line starts with a backslash, as
// coreutils marks escaped names.
func Line(sum, name string) string {
	esc := text.EscapeControls(name)
	if esc == name && !strings.Contains(name, `\`) && !strings.Contains(name, "\n") {
		return sum + "  " + name
	}
	return `\` + sum + "  " + text.EscapeControls(strings.ReplaceAll(name, `\`, `\\`))
}

// Parse reads "HEX  NAME" (or "HEX *NAME"), and the escaped form
// "\HEX  NAME" that Line and sha256sum write for odd names.
func Parse(line string) (sum, name string, ok bool) {
	escaped := strings.HasPrefix(line, `\`)
	line = strings.TrimPrefix(line, `\`)
	if len(line) < 66 || (line[64] != ' ') || (line[65] != ' ' && line[65] != '*') {
		return "", "", false
	}
	sum, name = line[:64], line[66:]
	if _, err := hex.DecodeString(sum); err != nil || name == "" {
		return "", "", false
	}
	if escaped {
		var b strings.Builder
		for i := 0; i < len(name); i++ {
			if name[i] == '\\' && i+1 < len(name) {
				i++
				switch name[i] {
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				default:
					b.WriteByte(name[i])
				}
				continue
			}
			b.WriteByte(name[i])
		}
		name = b.String()
	}
	return sum, name, true
}

// Scan calls fn with the checksum (lower case) and the name of every line
// of r, a file of checksum lines that file names in errors, and stops at
// the first error fn returns. A line that is not a checksum line is an
// error naming its place ("FILE:N"); so is a line longer than 1 MiB.
func Scan(r io.Reader, file string, fn func(sum, name string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		sum, name, ok := Parse(sc.Text())
		if !ok {
			return fmt.Errorf("%s:%d: not a checksum line (HEX  NAME)", file, n)
		}
		if err := fn(strings.ToLower(sum), name); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

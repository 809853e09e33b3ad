package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
)

// archiveArg is an ARCHIVE argument: a path, or "-" for standard input.
type archiveArg struct {
	Archive string `arg:"" help:"VMA archive, or - for standard input."`
}

// name is how the archive is called in messages.
func (a archiveArg) name() string {
	if a.Archive == "-" {
		return "<stdin>"
	}
	return a.Archive
}

// open opens the archive, compressed or not, and reads its header. The
// returned function closes the file.
func (a archiveArg) open(e *env) (*vma.Reader, func(), error) {
	rd, done, _, err := a.openCounted(e)
	return rd, done, err
}

// openCounted is open, and also returns how many bytes of the file have
// been read so far (compressed ones, for a compressed archive).
func (a archiveArg) openCounted(e *env) (*vma.Reader, func(), func(int64) int64, error) {
	var r io.Reader = e.stdin
	closeFn := func() {}
	if a.Archive != "-" {
		f, err := os.Open(a.Archive)
		if err != nil {
			return nil, nil, nil, err
		}
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			f.Close()
			return nil, nil, nil, fmt.Errorf("%s: is a directory, not an archive", a.Archive)
		}
		r, closeFn = f, func() { f.Close() }
	}
	rd, stop, counted, err := openArchiveStreamCounted(e, r, a.name())
	if err != nil {
		closeFn()
		return nil, nil, nil, err
	}
	return rd, func() { stop(); closeFn() }, counted, nil
}

// openArchiveStream reads an archive from r, through a decompression layer
// if r starts with the magic of zstd, gzip or lzop. stop ends the
// decompressing goroutine; it does not close r.
// counted turns the archive bytes read into the input's bytes read: the
// same for a plain archive, the compressed bytes consumed for a compressed
// one (for progress against the file's size).
func openArchiveStreamCounted(e *env, r io.Reader, name string) (rd *vma.Reader, stop func(), counted func(int64) int64, err error) {
	plain := func(n int64) int64 { return n }
	// A plain archive file is read directly, so that the reader can seek
	// over data it is not asked for (vma.Reader.Want).
	if f, ok := r.(*os.File); ok {
		if head, err := format.ReadHead(f); err == nil && compress.Detect(head) == "" {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				rd, err = vma.NewReader(f)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
				}
				return rd, func() {}, plain, nil
			}
		}
	}
	dr, comp, err := compress.NewReader(r, compress.ReaderOptions{MaxWindow: e.zstdMemory << 20})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	rd, err = vma.NewReader(dr)
	if err != nil {
		dr.Close()
		if comp != "" && errors.Is(err, vma.ErrNotVMA) {
			return nil, nil, nil, fmt.Errorf("%s: %s-compressed, but not a VMA archive inside: %w", name, comp, err)
		}
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	counted = plain
	if c, ok := dr.(interface{ Consumed() int64 }); ok && comp != "" {
		counted = func(int64) int64 { return c.Consumed() }
	}
	return rd, func() { dr.Close() }, counted, nil
}

// size returns the archive's file size, or -1 for standard input.
func (a archiveArg) size() int64 {
	if a.Archive == "-" {
		return -1
	}
	fi, err := os.Stat(a.Archive)
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	return fi.Size()
}

// humanSize formats n bytes the way qemu-img does: "3.01 MiB", "528 KiB".
func humanSize(n int64) string {
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

// printable returns name as it is if it is plain printable ASCII without
// spaces, and quoted otherwise, so that names from an archive cannot play
// tricks on a terminal.
func printable(name string) string {
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

// escapeControls replaces control characters (newlines, escape
// sequences, DEL, the C1 range) and bytes that are not UTF-8 with Go
// escapes, so that text holding names from an archive stays on one line
// and cannot drive the terminal.
func escapeControls(s string) string {
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

// plural formats "1 device", "2 devices".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

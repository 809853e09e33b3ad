package format

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vmaconv/vmaconv/internal/text"
)

// Info is what info shows of a file, as qemu-img info shows an image: its
// fields in order, each a line of text, a member of a JSON object, or
// both. Drivers build it (Format.InfoAt, Informer); the caller renders it,
// as text or as JSON (Info is a json.Marshaler), without knowing the
// format.
type Info []Field

// Field is one item of an Info.
type Field struct {
	// Key is the JSON member's name, qemu-img's where it has one
	// ("virtual-size"); "" leaves the field out of the JSON.
	Key string
	// Label is the text's label ("virtual size"), shown as "label: value".
	// A field without one shows its value alone (a cell of a row), or, if
	// its value is an Info, that Info's fields in its place.
	Label string
	// Value is a string, an int, an int64, a bool, an Info (an object:
	// in the text, a line "label:" followed by its fields, indented by
	// four spaces) or a []Info (an array of objects: in the text, a line
	// "label: N" followed by a row per object, indented by two spaces, its
	// fields cells aligned in columns).
	Value any
	// Show says how the text shows the value; ShowHidden leaves the field out
	// of the text.
	Show Show
}

// Show is how a field's value is shown as text.
type Show int

// Ways a value is shown as text.
const (
	ShowPlain    Show = iota // as it is
	ShowHidden               // not at all: the field is JSON only
	ShowName                 // a name from a file: quoted if it holds spaces or controls
	ShowSize                 // bytes, as qemu-img shows a virtual size: "3 MiB (3145728 bytes)"
	ShowDiskSize             // bytes, rounded, as qemu-img shows a disk size: "196 KiB"
	ShowBytes                // a count of bytes: "746 bytes"
)

// FileStat is what the caller knows of the file a description is made
// of.
type FileStat struct {
	// Name is how the file is called: its path as given, or <stdin>.
	Name string
	// Size is the file's size in bytes, or -1 if it has none (a pipe,
	// standard input).
	Size int64
	// Allocated is the bytes the file takes on disk (qemu-img's disk
	// size), or its size where that is not known (a remote object's).
	Allocated int64
	// Remote is set for an object read over the network (s3://,
	// http(s)://; Name is its URL, without secrets): it has no files
	// beside it to read (a VMDK's extents, an OVF's manifest), and no
	// allocation of its own to show, only its size (DiskSize).
	Remote bool
}

// DiskSize is the field info shows of what the file takes, where
// qemu-img info shows its disk size: a local file's Allocated, labelled
// "disk size"; a remote object's, which is its size, labelled "object
// size", as the bytes its server allocates are not known. Its JSON key is
// qemu-img's actual-size either way.
func (st FileStat) DiskSize() Field {
	label := "disk size"
	if st.Remote {
		label = "object size"
	}
	return Field{Key: "actual-size", Label: label, Value: st.Allocated, Show: ShowDiskSize}
}

// Informer is implemented by inputs read as streams (an archive on
// standard input, or compressed) that describe themselves for info, as
// Format.InfoAt describes a file read at random.
type Informer interface {
	Info(st FileStat) Info
}

// MarshalJSON writes the fields that have a Key as one JSON object, in
// order.
func (in Info) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for _, f := range in {
		if f.Key == "" {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		if err := writeJSON(&b, f.Key); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := writeJSON(&b, f.Value); err != nil {
			return nil, fmt.Errorf("info field %s: %w", f.Key, err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// writeJSON appends v's JSON without escaping <, > and & (names such as
// "<stdin>" stay readable); a nil []Info is an empty array.
func writeJSON(b *bytes.Buffer, v any) error {
	if l, ok := v.([]Info); ok && l == nil {
		v = []Info{}
	}
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode's newline
	return nil
}

// WriteText writes in as text, as qemu-img info writes an image: "label:
// value" lines, an object's fields indented under its label, an array's
// objects as rows of aligned cells. Names are quoted and control
// characters escaped, so that names from a file cannot drive the
// terminal.
func (in Info) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	in.writeFields(tw, "")
	return tw.Flush()
}

func (in Info) writeFields(w io.Writer, indent string) {
	for _, f := range in {
		if f.Show == ShowHidden {
			continue
		}
		switch v := f.Value.(type) {
		case Info:
			if f.Label == "" {
				v.writeFields(w, indent)
				continue
			}
			fmt.Fprintf(w, "%s%s:\n", indent, f.Label)
			v.writeFields(w, indent+"    ")
		case []Info:
			fmt.Fprintf(w, "%s%s: %d\n", indent, f.Label, len(v))
			for _, row := range v {
				var cells []string
				for _, cell := range row {
					if cell.Show != ShowHidden {
						cells = append(cells, cell.Text())
					}
				}
				fmt.Fprintf(w, "%s  %s\n", indent, strings.Join(cells, "\t"))
			}
		default:
			fmt.Fprintf(w, "%s%s\n", indent, f.Text())
		}
	}
}

// Text is the field's text, as its Show says: "label: value", or the
// value alone.
func (f Field) Text() string {
	var v string
	switch f.Show {
	case ShowName:
		v = text.Printable(fmt.Sprint(f.Value))
	case ShowSize:
		n := toInt64(f.Value)
		v = fmt.Sprintf("%s (%d bytes)", text.Size(n), n)
	case ShowDiskSize:
		v = text.Size(toInt64(f.Value))
	case ShowBytes:
		v = fmt.Sprintf("%d bytes", toInt64(f.Value))
	default:
		v = text.EscapeControls(fmt.Sprint(f.Value))
	}
	if f.Label == "" {
		return v
	}
	return f.Label + ": " + v
}

// toInt64 returns an integer field's value.
func toInt64(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	}
	return 0
}

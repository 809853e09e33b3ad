package format_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

// TestInfoJSON: an Info is one JSON object of the fields that have a
// Key, in order (text-only fields left out, hidden ones kept), objects
// and arrays nested, an empty array as [], names not HTML-escaped.
func TestInfoJSON(t *testing.T) {
	in := format.Info{
		{Key: "filename", Label: "file", Value: "<stdin>"},
		{Key: "version", Value: 1, Show: format.ShowHidden},
		{Label: "format", Value: "x (version 1)"},
		{Key: "actual-size", Value: int64(1) << 40, Show: format.ShowHidden},
		{Key: "dirty", Value: false},
		{Key: "specific", Label: "Specific", Value: format.Info{
			{Key: "type", Value: "x", Show: format.ShowHidden},
			{Key: "data", Value: format.Info{{Key: "b", Value: true}, {Key: "a", Value: "&"}}},
			{Label: "text only", Value: true},
		}},
		{Key: "none", Value: []format.Info(nil)},
		{Key: "rows", Value: []format.Info{{{Key: "z", Value: 1}, {Key: "y", Value: "2"}}, {}}},
	}
	// As info writes it: with an encoder that leaves <, > and & alone,
	// which MarshalJSON must too.
	marshal := func(v any) (string, error) {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		err := enc.Encode(v)
		return strings.TrimSuffix(b.String(), "\n"), err
	}
	b, err := marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"filename":"<stdin>","version":1,"actual-size":1099511627776,"dirty":false,"specific":{"type":"x","data":{"b":true,"a":"&"}},"none":[],"rows":[{"z":1,"y":"2"},{}]}`
	if b != want {
		t.Errorf("JSON:\n%s\nwant:\n%s", b, want)
	}
	if b, err := marshal([]format.Info{{{Key: "a", Value: 1}}, {}}); err != nil || b != `[{"a":1},{}]` {
		t.Errorf("two reports: %s, %v", b, err)
	}
	if _, err := json.Marshal(format.Info{{Key: "bad", Value: func() {}}}); err == nil {
		t.Error("a value JSON cannot hold was marshalled")
	}
}

// TestInfoText: an Info as text, as qemu-img info writes it: label:
// value lines by their Show, hidden and JSON-only fields left out, an
// object indented under its label (or in place without one), an array's
// rows as aligned cells, names quoted and controls escaped.
func TestInfoText(t *testing.T) {
	in := format.Info{
		{Key: "filename", Label: "image", Value: "sp ace.vma", Show: format.ShowName},
		{Key: "hidden", Label: "hidden", Value: 1, Show: format.ShowHidden},
		{Label: "virtual size", Value: int64(3 << 20), Show: format.ShowSize},
		{Label: "disk size", Value: 200704, Show: format.ShowDiskSize},
		{Label: "config", Value: 746, Show: format.ShowBytes},
		{Label: "note", Value: "a\nb\x1b[2J"},
		{Value: format.Info{{Label: "inline", Value: true}}},
		{Label: "Format specific information", Value: format.Info{{Label: "compat", Value: "1.1"}}},
		{Label: "devices", Value: []format.Info{
			{{Value: "drive-scsi0", Show: format.ShowName}, {Value: int64(1 << 30), Show: format.ShowSize}, {Value: 9, Show: format.ShowHidden}},
			{{Value: "drive-x y", Show: format.ShowName}, {Value: 512, Show: format.ShowSize}},
		}},
	}
	var b strings.Builder
	if err := in.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `image: "sp ace.vma"
virtual size: 3 MiB (3145728 bytes)
disk size: 196 KiB
config: 746 bytes
note: a\nb\x1b[2J
inline: true
Format specific information:
    compat: 1.1
devices: 2
  drive-scsi0  1 GiB (1073741824 bytes)
  "drive-x y"  512 B (512 bytes)
`
	if b.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", b.String(), want)
	}
}

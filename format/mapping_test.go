package format_test

import (
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

// TestMappingText: qemu-img map's lines: data ranges only in the human
// format, with their place in the file or "-", C's %#x; every key in
// qemu-img's order in JSON, offset only where there is one.
func TestMappingText(t *testing.T) {
	data := format.Mapping{Start: 0, Length: 0x10000, Present: true, Data: true, Offset: 0x50000}
	if got, want := data.Text("d\n.qcow2"), "0               0x10000         0x50000         d\\n.qcow2\n"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	archived := format.Mapping{Start: 0x10000, Length: 512, Present: true, Data: true, Offset: -1}
	if got, want := archived.Text("a.vma"), "0x10000         0x200           -               a.vma\n"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	for _, m := range []format.Mapping{{Length: 1, Zero: true, Data: true}, {Length: 1, Present: true}} {
		if got := m.Text("x"); got != "" {
			t.Errorf("Text of %+v = %q, want none", m, got)
		}
	}
	if got, want := data.JSON(), `{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "compressed": false, "offset": 327680}`; got != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}
	back := format.Mapping{Start: 5, Length: 7, Depth: 1, Zero: true, Compressed: true, Offset: -1}
	if got, want := back.JSON(), `{ "start": 5, "length": 7, "depth": 1, "present": false, "zero": true, "data": false, "compressed": true}`; got != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}
}

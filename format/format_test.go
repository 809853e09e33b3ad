package format_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/formattest"
)

func TestRegistry(t *testing.T) {
	r := all.Registry()
	if got := strings.Join(r.Names(), ","); got != "ova,qcow2,raw,vdi,vhdx,vma,vmdk,vpc" {
		t.Errorf("Names() = %s", got)
	}
	for head, want := range map[string]string{"QFI\xfb\x00\x00\x00\x03": "qcow2", "VMA\x00\x00\x00\x00\x01": "vma", "KDMV\x01\x00\x00\x00": "vmdk", "vhdxfile": "vhdx",
		`<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">`: "ova"} {
		f, err := r.Detect([]byte(head))
		if err != nil || f.Name != want {
			t.Errorf("Detect(%q) = %s, %v", head, f.Name, err)
		}
	}
	// Raw is never detected: an image that merely starts with other bytes
	// (or with nothing) is unknown, and the caller decides it is raw.
	for _, head := range []string{"", "QFI", "\x00\x00\x00\x00", "VMAE"} {
		if _, err := r.Detect([]byte(head)); !errors.Is(err, format.ErrUnknownFormat) {
			t.Errorf("Detect(%q): %v", head, err)
		}
	}
	if _, err := r.Lookup("qed"); !errors.Is(err, format.ErrUnknownFormat) || !strings.Contains(err.Error(), "known: ova, qcow2, raw, vdi, vhdx, vma, vmdk, vpc") {
		t.Errorf("Lookup(qed): %v", err)
	}
	for _, f := range []format.Format{{}, {Name: "raw"},
		{Name: "o1", Options: []format.Option{{Type: format.OptBool}}},
		{Name: "o2", Options: []format.Option{{Name: "a,b", Type: format.OptBool}}},
		{Name: "o3", Options: []format.Option{{Name: "a", Type: format.OptBool}, {Name: "a", Type: format.OptInt}}},
		{Name: "o4", Options: []format.Option{{Name: "a"}}},
		{Name: "o5", Options: []format.Option{{Name: "a", Type: format.OptEnum}}},
		{Name: "o6", Options: []format.Option{{Name: "a", Type: format.OptString, Values: []string{"x"}}}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", f.Name)
				}
			}()
			r.Register(f)
		}()
	}
}

// memSource is a Source over a byte slice, without an extent map.
type memSource struct{ b []byte }

func (m memSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m memSource) Size() int64  { return int64(len(m.b)) }
func (m memSource) Close() error { return nil }

// TestPad: a padded source reads as its bytes followed by zeros, and its
// extent map calls the padding zero.
func TestPad(t *testing.T) {
	b := bytes.Repeat([]byte{7}, 1000)
	p := format.Pad(memSource{b}, 1024)
	formattest.TestSource(t, p, append(bytes.Clone(b), make([]byte, 24)...))
	e, err := p.(format.ZeroMapper).Region(1000, 100)
	if err != nil || !e.Zero || e.Length != 24 {
		t.Errorf("Region(1000) = %+v, %v", e, err)
	}
	if _, same := format.Pad(memSource{b}, 1000).(memSource); !same {
		t.Error("Pad to the same size wraps the source")
	}
}

// TestMaxConfig: the registry's config limit is the largest of its
// formats'; Formats lists them in registration order.
func TestMaxConfig(t *testing.T) {
	var r format.Registry
	r.Register(format.Format{Name: "b", MaxConfig: 10})
	r.Register(format.Format{Name: "a", MaxConfig: 65535})
	r.Register(format.Format{Name: "c"})
	if n := r.MaxConfig(); n != 65535 {
		t.Errorf("MaxConfig() = %d", n)
	}
	var names []string
	for _, f := range r.Formats() {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "b,a,c" {
		t.Errorf("Formats() = %v", names)
	}
}

// TestDetectTail: a format recognised by its footer is found by the last
// 512 bytes of a file and its size, and only by a whole footer.
func TestDetectTail(t *testing.T) {
	r := &format.Registry{}
	r.Register(format.Format{Name: "head", Probe: func(h []byte) bool { return bytes.HasPrefix(h, []byte("HEAD")) }})
	r.Register(format.Format{Name: "foot", ProbeTail: func(tail []byte, size int64) bool {
		return bytes.HasPrefix(tail, []byte("FOOT")) && size >= 1024
	}})
	tail := append([]byte("FOOT"), make([]byte, 508)...)
	if f, err := r.DetectTail(tail, 1024); err != nil || f.Name != "foot" {
		t.Errorf("DetectTail = %s, %v", f.Name, err)
	}
	for _, c := range []struct {
		tail []byte
		size int64
	}{{tail, 512}, {tail[:511], 1024}, {make([]byte, 512), 1024}} {
		if _, err := r.DetectTail(c.tail, c.size); !errors.Is(err, format.ErrUnknownFormat) {
			t.Errorf("DetectTail(%q…, %d): %v", c.tail[:4], c.size, err)
		}
	}
	if _, err := r.Detect(tail); !errors.Is(err, format.ErrUnknownFormat) {
		t.Errorf("Detect of a footer: %v", err)
	}
}

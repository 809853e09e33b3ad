package format_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
)

func TestRegistry(t *testing.T) {
	r := all.Registry()
	if got := strings.Join(r.Names(), ","); got != "qcow2,raw,vma" {
		t.Errorf("Names() = %s", got)
	}
	for head, want := range map[string]string{"QFI\xfb\x00\x00\x00\x03": "qcow2", "VMA\x00\x00\x00\x00\x01": "vma"} {
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
	if _, err := r.Lookup("vmdk"); !errors.Is(err, format.ErrUnknownFormat) || !strings.Contains(err.Error(), "known: qcow2, raw, vma") {
		t.Errorf("Lookup(vmdk): %v", err)
	}
	for _, f := range []format.Format{{}, {Name: "raw"}} {
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

package format_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

// chdirFiles makes a directory with files named "a", "a:b" and "vm.vma"
// and changes into it for the test.
func chdirFiles(t testing.TB) {
	dir := t.TempDir()
	for _, n := range []string{"a", "a:b", "vm.vma"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
}

func TestParseRef(t *testing.T) {
	chdirFiles(t)
	for in, want := range map[string]format.Ref{
		"vm.vma":             {Path: "vm.vma"},
		"vm.vma:drive-scsi0": {Path: "vm.vma", Device: "drive-scsi0"},
		"a:b":                {Path: "a:b"}, // exists as given: a file
		"a:b:c":              {Path: "a:b", Device: "c"},
		"a:c":                {Path: "a", Device: "c"},
		"-":                  {Path: "-"},
		"-:drive-scsi0":      {Path: "-", Device: "drive-scsi0"},
		"missing:x":          {Path: "missing:x"}, // opening it says it does not exist
		"vm.vma:":            {Path: "vm.vma:"},
		":x":                 {Path: ":x"},
		// URLs: the device after the last slash, if it is a device name.
		"s3://bkt/vm.vma":                          {Path: "s3://bkt/vm.vma"},
		"s3://bkt/d/vm.vma:drive-scsi0":            {Path: "s3://bkt/d/vm.vma", Device: "drive-scsi0"},
		"https://h:8443/vm.vma.zst:scsi0":          {Path: "https://h:8443/vm.vma.zst", Device: "scsi0"},
		"https://h:8443":                           {Path: "https://h:8443"},
		"https://h:8443/":                          {Path: "https://h:8443/"},
		"http://h/a:b/vm.vma":                      {Path: "http://h/a:b/vm.vma"},
		"s3://bkt/vm-12:00:00.vma":                 {Path: "s3://bkt/vm-12:00:00.vma"},
		"s3://bkt/vm.vma:":                         {Path: "s3://bkt/vm.vma:"},
		"HTTPS://h/x.vma?sig=a%3Ab":                {Path: "HTTPS://h/x.vma?sig=a%3Ab"},
		"https://h/x.vma?X-Amz-Signature=ab:scsi0": {Path: "https://h/x.vma?X-Amz-Signature=ab", Device: "scsi0"},
		"s3://bkt/:x":                              {Path: "s3://bkt/:x"},
		"http://user:pw@h/vm.vma:drive-virtio0":    {Path: "http://user:pw@h/vm.vma", Device: "drive-virtio0"},
	} {
		got := format.ParseRef(in)
		if got != want {
			t.Errorf("ParseRef(%q) = %+v, want %+v", in, got, want)
		}
		if got.String() != in {
			t.Errorf("ParseRef(%q).String() = %q", in, got.String())
		}
	}
}

// FuzzParseRef: parsing never panics, String gives back the input, and
// parsing that again gives the same Ref.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"vm.vma:drive-scsi0", "a:b:c", "-", "-:x", ":", "a::", "/tmp/x.vma:drive-efidisk0"} {
		f.Add(s)
	}
	chdirFiles(f)
	f.Fuzz(func(t *testing.T, s string) {
		r := format.ParseRef(s)
		if r.String() != s {
			t.Fatalf("ParseRef(%q).String() = %q", s, r.String())
		}
		if r2 := format.ParseRef(r.String()); r2 != r {
			t.Fatalf("ParseRef(%q) = %+v, then %+v", s, r, r2)
		}
	})
}

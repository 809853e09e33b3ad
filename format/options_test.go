package format_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
)

// TestParseOptionList: qemu's -o syntax: key=value items, ",," for a
// comma inside a value, a bare key, an empty value, a trailing comma.
func TestParseOptionList(t *testing.T) {
	for in, want := range map[string][]format.Setting{
		"":                              nil,
		"level=5":                       {{Name: "level", Value: "5"}},
		"cluster_size=2M,compress=zstd": {{Name: "cluster_size", Value: "2M"}, {Name: "compress", Value: "zstd"}},
		"storage=a,,b,level=1":          {{Name: "storage", Value: "a,b"}, {Name: "level", Value: "1"}},
		"x=a,,,,b":                      {{Name: "x", Value: "a,,b"}},
		"x=,,":                          {{Name: "x", Value: ","}},
		"x=a,,":                         {{Name: "x", Value: "a,"}},
		"seekable":                      {{Name: "seekable", Bare: true}},
		"seekable,level=3":              {{Name: "seekable", Bare: true}, {Name: "level", Value: "3"}},
		"help":                          {{Name: "help", Bare: true}},
		"uuid=":                         {{Name: "uuid", Value: ""}},
		"level=5,":                      {{Name: "level", Value: "5"}},
		"ctime=2024-06-10T06:13:20Z":    {{Name: "ctime", Value: "2024-06-10T06:13:20Z"}},
		"a=b=c":                         {{Name: "a", Value: "b=c"}},
	} {
		got, err := format.ParseOptionList(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseOptionList(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{",", "=5", "level=5,,,=1", ",level=5", "a,,b"} {
		if got, err := format.ParseOptionList(in); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("ParseOptionList(%q) = %+v, %v; want a usage error", in, got, err)
		}
	}
	if !format.HelpRequested([]format.Setting{{Name: "level", Value: "1"}, {Name: "help", Bare: true}}) ||
		format.HelpRequested([]format.Setting{{Name: "help", Value: "x"}}) {
		t.Error("HelpRequested")
	}
}

// testFormat declares one option of each type.
var testFormat = format.Format{Name: "test", Options: []format.Option{
	{Name: "flag", Type: format.OptBool, Help: "A bool."},
	{Name: "count", Type: format.OptInt, Default: "3", Help: "An int.", Check: func(v any) error {
		if v.(int64) < 0 {
			return errors.New("want 0 or more")
		}
		return nil
	}},
	{Name: "size", Type: format.OptSize, Help: "A size."},
	{Name: "label", Type: format.OptString, Help: "A string."},
	{Name: "codec", Type: format.OptEnum, Values: []string{"zlib", "zstd", "none"}, Default: "none", Help: "An enum."},
}}

// TestCheckOptions: values of every type, typed; what a format does not
// take is refused with what it does take; bad values, duplicates.
func TestCheckOptions(t *testing.T) {
	v, err := format.ParseOptions(testFormat, "flag,count=7,size=2M", "label=a,,b,codec=zstd")
	if err != nil {
		t.Fatal(err)
	}
	if !v.Bool("flag") || v.Int("count") != 7 || v.Int("size") != 2<<20 || v.String("label") != "a,b" || v.String("codec") != "zstd" {
		t.Errorf("values: %v %d %d %q %q", v.Bool("flag"), v.Int("count"), v.Int("size"), v.String("label"), v.String("codec"))
	}
	if got := strings.Join(v.Names(), ","); got != "codec,count,flag,label,size" {
		t.Errorf("Names() = %s", got)
	}
	v, err = format.ParseOptions(testFormat, "flag=off,count=-0")
	if err != nil || v.Bool("flag") || !v.Has("flag") || v.Int("count") != 0 || !v.Has("count") || v.Has("size") || v.String("label") != "" {
		t.Errorf("flag=off,count=-0: %v %v", v.Names(), err)
	}
	if v, err := format.ParseOptions(testFormat); err != nil || len(v.Names()) != 0 {
		t.Errorf("no options: %v, %v", v.Names(), err)
	}
	var zero format.Values
	if zero.Has("flag") || zero.Int("count") != 0 || zero.String("codec") != "" || zero.Bool("flag") {
		t.Error("the zero Values holds something")
	}

	for _, c := range []struct {
		given []format.Setting
		want  string
	}{
		{[]format.Setting{{Name: "level", Value: "5"}}, "test does not take option level (it takes: codec, count, flag, label, size)"},
		{[]format.Setting{{Name: "level", Value: "5", Flag: "--level"}}, "--level: test does not take option level (it takes: codec, count, flag, label, size)"},
		{[]format.Setting{{Name: "flag", Value: "yes"}}, "-o flag=yes: want on or off"},
		{[]format.Setting{{Name: "count", Value: "x"}}, "-o count=x: want an integer"},
		{[]format.Setting{{Name: "count", Value: "1.5"}}, "-o count=1.5: want an integer"},
		{[]format.Setting{{Name: "count", Bare: true}}, "-o count: want count=<num>"},
		{[]format.Setting{{Name: "count", Value: "-1"}}, "-o count=-1: want 0 or more"},
		{[]format.Setting{{Name: "count", Value: "-1", Flag: "--count"}}, "--count -1: want 0 or more"},
		{[]format.Setting{{Name: "size", Value: "2Q"}}, `-o size=2Q: size "2Q": want a number of bytes, optionally with a suffix K, M, G, T, P or E (powers of 1024)`},
		{[]format.Setting{{Name: "codec", Value: "gzip"}}, "-o codec=gzip: test takes zlib, zstd or none"},
		{[]format.Setting{{Name: "codec", Value: "gzip", Flag: "--codec"}}, "--codec gzip: test takes zlib, zstd or none"},
		{[]format.Setting{{Name: "codec", Value: "ZSTD"}}, "-o codec=ZSTD: test takes zlib, zstd or none"},
		{[]format.Setting{{Name: "label", Bare: true}}, "-o label: want label=<str>"},
		{[]format.Setting{{Name: "count", Value: "1", Flag: "--count"}, {Name: "count", Value: "1"}}, "option count given twice (--count 1, -o count=1)"},
		{[]format.Setting{{Name: "flag", Bare: true}, {Name: "flag", Value: "off"}}, "option flag given twice (-o flag, -o flag=off)"},
		{[]format.Setting{{Name: "help", Bare: true}}, "test does not take option help (it takes: codec, count, flag, label, size)"},
	} {
		_, err := format.CheckOptions(testFormat, c.given)
		if err == nil || err.Error() != c.want || !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("%+v: %v, want %q", c.given, err, c.want)
		}
	}
	if _, err := format.ParseOptions(format.Format{Name: "raw"}, "level=5"); err == nil || err.Error() != "raw does not take option level (it takes none)" {
		t.Errorf("a format without options: %v", err)
	}
	// A string flag's value is quoted, as the flags' own messages quote
	// it.
	label := testFormat
	label.Options = []format.Option{{Name: "label", Type: format.OptString, Check: func(any) error { return errors.New("no") }}}
	if _, err := format.CheckOptions(label, []format.Setting{{Name: "label", Value: "a b", Flag: "--label"}}); err == nil || err.Error() != `--label "a b": no` {
		t.Errorf("string flag: %v", err)
	}
}

// TestOptionsHelp: -o help as qemu-img prints it: sorted, name=<type>
// padded to 24 columns, help, default.
func TestOptionsHelp(t *testing.T) {
	want := `Supported test options:
  codec=<zlib|zstd|none> - An enum. (default: none)
  count=<num>            - An int. (default: 3)
  flag=<bool (on/off)>   - A bool.
  label=<str>            - A string.
  size=<size>            - A size.
`
	if got := format.OptionsHelp(testFormat); got != want {
		t.Errorf("OptionsHelp:\n%s\nwant:\n%s", got, want)
	}
	if got := format.OptionsHelp(format.Format{Name: "raw"}); got != "raw takes no options\n" {
		t.Errorf("OptionsHelp(raw) = %q", got)
	}
}

// TestGivenAs: a value says how it was given, for notes: by the flag that
// stands for it, or by -o.
func TestGivenAs(t *testing.T) {
	v, err := format.CheckOptions(testFormat, []format.Setting{{Name: "count", Value: "7", Flag: "--count"}, {Name: "label", Value: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"count": "--count", "label": "-o label", "size": ""} {
		if got := v.GivenAs(name); got != want {
			t.Errorf("GivenAs(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestTargets: a target stands for options of its format, checked with
// the rest (one given again by -o is given twice) and named in messages
// and -o help; a target a format lacks, or one declared amiss, is refused.
func TestTargets(t *testing.T) {
	f := format.Format{Name: "disk",
		Options: []format.Option{{Name: "fixed", Type: format.OptBool}, {Name: "mode", Type: format.OptEnum, Values: []string{"a", "b"}}},
		Targets: []format.Target{{Name: "cloud", Help: "what the cloud takes", Options: "fixed,mode=b"}}}
	ss, err := format.TargetSettings(f, "cloud")
	if err != nil {
		t.Fatal(err)
	}
	v, err := format.CheckOptions(f, ss)
	if err != nil || !v.Bool("fixed") || v.String("mode") != "b" || v.GivenAs("mode") != "--target cloud" {
		t.Errorf("--target cloud: %v, %v", v.Names(), err)
	}
	if _, err := format.CheckOptions(f, append(ss, format.Setting{Name: "mode", Value: "a"})); err == nil || err.Error() != "option mode given twice (--target cloud, -o mode=a)" {
		t.Errorf("a target's option given again: %v", err)
	}
	if _, err := format.TargetSettings(f, "nope"); !errors.Is(err, format.ErrUnsupportedOption) || err.Error() != "--target nope: disk has no target nope (it has: cloud)" {
		t.Errorf("--target nope: %v", err)
	}
	if _, err := format.TargetSettings(format.Format{Name: "raw"}, "cloud"); err == nil || err.Error() != "--target cloud: raw has no target cloud (it has none)" {
		t.Errorf("a format without targets: %v", err)
	}
	if h := format.OptionsHelp(f); !strings.Contains(h, "Targets (--target NAME):\n  cloud                  - what the cloud takes (-o fixed,mode=b)\n") {
		t.Errorf("-o help:\n%s", h)
	}
	for _, bad := range [][]format.Target{{{Name: "x", Options: "size=1"}}, {{Name: "x", Options: "mode=c"}}, {{Name: "", Options: "fixed"}}, {{Name: "x", Options: "fixed"}, {Name: "x", Options: "fixed"}}} {
		g := f
		g.Targets = bad
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register with targets %+v did not panic", bad)
				}
			}()
			(&format.Registry{}).Register(g)
		}()
	}
	(&format.Registry{}).Register(f)
}

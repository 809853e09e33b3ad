package format

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// OptionType is the kind of value an Option takes.
type OptionType int

// Option types, as qemu's QemuOpts types (an enum is qemu's string
// checked against a list).
const (
	OptBool   OptionType = iota + 1 // on or off
	OptInt                          // a decimal integer
	OptSize                         // bytes, with qemu-img's suffixes (64K, 2M): see ParseSize
	OptString                       // any text
	OptEnum                         // one of Option.Values
)

// Option declares one option of a format's Create, as qemu's create_opts
// do: -o NAME=VALUE. A format's Create receives only the options it
// declares (see Values).
type Option struct {
	// Name is qemu-img's name where qemu has the option (cluster_size,
	// compression_type), lower case with underscores otherwise. A
	// command-line flag that stands for an option (--cluster-size) has the
	// option's name with dashes.
	Name   string
	Type   OptionType
	Values []string // OptEnum: the values it takes
	// Default is the value the format uses when the option is not given,
	// as -o help shows it; "" when there is none or it depends on
	// something (Help says on what).
	Default string
	Help    string
	// Check, if set, refuses a value of the right type that the format
	// cannot take (a VMID out of range, a UUID that does not parse): v is
	// a bool, an int64 or a string, by Type. Its error is the explanation
	// alone ("want 100 to 999999999").
	Check func(v any) error
}

// Target is a platform a format writes for, as --target NAME asks (a
// fixed VHD of whole MiB for Azure): the options of the format it stands
// for.
type Target struct {
	Name string // lower case: "azure"
	Help string
	// Options are the format's options the target stands for, in -o's
	// syntax ("azure=on"); they must be valid options of the format.
	Options string
}

// TargetSettings returns the settings --target name stands for in f, to
// be checked with the rest (CheckOptions): an option also given with -o
// is refused as given twice. Its error, for a target f does not have,
// matches ErrUnsupportedOption.
func TargetSettings(f Format, name string) ([]Setting, error) {
	i := slices.IndexFunc(f.Targets, func(t Target) bool { return t.Name == name })
	if i < 0 {
		var ns []string
		for _, t := range f.Targets {
			ns = append(ns, t.Name)
		}
		has := "it has none"
		if len(ns) > 0 {
			has = "it has: " + strings.Join(ns, ", ")
		}
		return nil, Unsupported("--target %s: %s has no target %s (%s)", name, f.Name, name, has)
	}
	ss, err := ParseOptionList(f.Targets[i].Options)
	if err != nil {
		return nil, err
	}
	for k := range ss {
		ss[k].Target = name
	}
	return ss, nil
}

// checkTargets refuses targets declared amiss: without a name, twice, or
// standing for options f does not take.
func checkTargets(f Format) error {
	seen := map[string]bool{}
	for _, t := range f.Targets {
		if t.Name == "" || seen[t.Name] || strings.ContainsAny(t.Name, "=, ") {
			return fmt.Errorf("target %q: no name, or one given twice", t.Name)
		}
		seen[t.Name] = true
		ss, err := TargetSettings(f, t.Name)
		if err == nil {
			_, err = CheckOptions(f, ss)
		}
		if err != nil {
			return fmt.Errorf("target %s: %v", t.Name, err)
		}
	}
	return nil
}

// checkDeclarations refuses options declared amiss.
func checkDeclarations(opts []Option) error {
	seen := map[string]bool{}
	for _, o := range opts {
		switch {
		case o.Name == "" || strings.ContainsAny(o.Name, "=, "):
			return fmt.Errorf("option %q: not a name -o can give", o.Name)
		case seen[o.Name]:
			return fmt.Errorf("option %s declared twice", o.Name)
		case o.Type < OptBool || o.Type > OptEnum:
			return fmt.Errorf("option %s: no type", o.Name)
		case (o.Type == OptEnum) != (len(o.Values) > 0):
			return fmt.Errorf("option %s: values are an enum's, and an enum has values", o.Name)
		}
		seen[o.Name] = true
	}
	return nil
}

// Setting is an option as given, before it is checked against a format:
// an item of -o's key=value list, or a flag that stands for an option.
type Setting struct {
	Name  string
	Value string
	// Bare is set for a key given without "=" (on, for a bool; "help").
	Bare bool
	// Flag is the flag the setting comes from ("--level"), for messages;
	// "" for -o.
	Flag string
	// Target is the target the setting comes from (--target azure: see
	// TargetSettings), for messages; "" for -o and flags.
	Target string
}

// String says how the setting was given: "-o level=5", "--level 5".
func (s Setting) String() string {
	switch {
	case s.Target != "":
		return "--target " + s.Target
	case s.Flag != "" && s.Bare:
		return s.Flag
	case s.Flag != "":
		return s.Flag + " " + s.Value
	case s.Bare:
		return "-o " + s.Name
	}
	return "-o " + s.Name + "=" + s.Value
}

// ParseOptionList splits an -o argument into settings, in qemu's syntax:
// key=value items separated by commas, a comma inside a value written
// twice (",,"). A key without "=" is Bare. The list says nothing of any
// format: CheckOptions checks it against one.
func ParseOptionList(s string) ([]Setting, error) {
	var out []Setting
	rest := s
	for rest != "" {
		i := strings.IndexAny(rest, "=,")
		var st Setting
		switch {
		case i < 0:
			st, rest = Setting{Name: rest, Bare: true}, ""
		case rest[i] == ',':
			st, rest = Setting{Name: rest[:i], Bare: true}, rest[i+1:]
		default:
			st.Name = rest[:i]
			st.Value, rest = optionValue(rest[i+1:])
		}
		if st.Name == "" {
			return nil, Unsupported("-o %s: an option without a name (want key=value[,key=value…])", s)
		}
		out = append(out, st)
	}
	return out, nil
}

// optionValue reads a value up to the next single comma, ",," standing
// for a comma, and returns it and what follows that comma.
func optionValue(s string) (value, rest string) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, ',')
		if i < 0 {
			b.WriteString(s)
			return b.String(), ""
		}
		b.WriteString(s[:i])
		if i+1 < len(s) && s[i+1] == ',' {
			b.WriteByte(',')
			s = s[i+2:]
			continue
		}
		return b.String(), s[i+1:]
	}
}

// HelpRequested reports whether the settings ask for the format's options
// (-o help, or "?" as qemu also takes it).
func HelpRequested(given []Setting) bool {
	return slices.ContainsFunc(given, func(s Setting) bool { return s.Bare && (s.Name == "help" || s.Name == "?") })
}

// Values are the options given to one format's Create, checked against
// its declarations by CheckOptions: each names an Option of the format
// and holds a value of its type. An option not given reads as the zero
// value, which a driver takes as its default. The zero Values holds none.
type Values struct {
	m    map[string]any    // bool, int64 or string, by the option's type
	from map[string]string // how each was given, for messages (GivenAs)
}

// Has reports whether the option was given.
func (v Values) Has(name string) bool {
	_, ok := v.m[name]
	return ok
}

// GivenAs says how an option was given, for messages: the flag that
// stands for it ("--vmid") or "-o vmid"; "" if it was not given.
func (v Values) GivenAs(name string) string { return v.from[name] }

// Bool returns an OptBool option's value; false if not given.
func (v Values) Bool(name string) bool {
	b, _ := v.m[name].(bool)
	return b
}

// Int returns an OptInt or OptSize option's value; 0 if not given.
func (v Values) Int(name string) int64 {
	n, _ := v.m[name].(int64)
	return n
}

// String returns an OptString or OptEnum option's value; "" if not given.
func (v Values) String(name string) string {
	s, _ := v.m[name].(string)
	return s
}

// Names returns the names of the options given, sorted.
func (v Values) Names() []string {
	var ns []string
	for n := range v.m {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// CheckOptions checks the settings against f's declared options and
// returns their values, typed. It refuses an option f does not declare
// (naming those it does), one given twice, and a value not of the
// option's type, not among an enum's values, or refused by its Check.
// Its errors match ErrUnsupportedOption: they are usage errors.
func CheckOptions(f Format, given []Setting) (Values, error) {
	v := Values{m: map[string]any{}, from: map[string]string{}}
	from := map[string]Setting{}
	for _, s := range given {
		i := slices.IndexFunc(f.Options, func(o Option) bool { return o.Name == s.Name })
		if i < 0 {
			prefix := ""
			if s.Flag != "" {
				prefix = s.Flag + ": "
			}
			return Values{}, Unsupported("%s%s does not take option %s (%s)", prefix, f.Name, s.Name, takes(f))
		}
		if prev, ok := from[s.Name]; ok {
			return Values{}, Unsupported("option %s given twice (%s, %s)", s.Name, prev, s)
		}
		from[s.Name] = s
		o := f.Options[i]
		val, err := o.parse(s, f.Name)
		if err == nil && o.Check != nil {
			err = o.Check(val)
		}
		if err != nil {
			return Values{}, Unsupported("%s: %v", describe(s, o), err)
		}
		v.m[s.Name] = val
		v.from[s.Name] = cmp.Or(s.Flag, "-o "+s.Name)
		if s.Target != "" {
			v.from[s.Name] = s.String()
		}
	}
	return v, nil
}

// ParseOptions checks -o arguments (each a key=value list) against f: the
// options of f's Create, as a library caller writes them
// ("cluster_size=2M,compression_type=zstd").
func ParseOptions(f Format, lists ...string) (Values, error) {
	var given []Setting
	for _, l := range lists {
		ss, err := ParseOptionList(l)
		if err != nil {
			return Values{}, err
		}
		given = append(given, ss...)
	}
	return CheckOptions(f, given)
}

// takes lists f's options for a refusal: "it takes: a, b" or "it takes
// none".
func takes(f Format) string {
	if len(f.Options) == 0 {
		return "it takes none"
	}
	var ns []string
	for _, o := range f.Options {
		ns = append(ns, o.Name)
	}
	slices.Sort(ns)
	return "it takes: " + strings.Join(ns, ", ")
}

// describe is how a setting is named in a message about its value: a
// flag's string value quoted, as the flags' own messages quote it.
func describe(s Setting, o Option) string {
	if s.Flag != "" && o.Type == OptString {
		return s.Flag + " " + strconv.Quote(s.Value)
	}
	return s.String()
}

// parse returns s's value as o's type holds it; format names the format
// in a refusal.
func (o Option) parse(s Setting, format string) (any, error) {
	if s.Bare && o.Type != OptBool {
		return nil, fmt.Errorf("want %s=<%s>", o.Name, o.Type.placeholder(o))
	}
	switch o.Type {
	case OptBool:
		switch {
		case s.Bare, s.Value == "on":
			return true, nil
		case s.Value == "off":
			return false, nil
		}
		return nil, fmt.Errorf("want on or off")
	case OptInt:
		n, err := strconv.ParseInt(s.Value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("want an integer")
		}
		return n, nil
	case OptSize:
		return ParseSize(s.Value)
	case OptEnum:
		if !slices.Contains(o.Values, s.Value) {
			return nil, fmt.Errorf("%s takes %s", format, orList(o.Values))
		}
		return s.Value, nil
	}
	return s.Value, nil
}

// orList joins values as "a, b or c".
func orList(vs []string) string {
	if len(vs) < 2 {
		return strings.Join(vs, "")
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
}

// placeholder is how -o help shows the type's values, as qemu-img does:
// <size>, <num>, <str>, <bool (on/off)>; an enum lists its values.
func (t OptionType) placeholder(o Option) string {
	switch t {
	case OptBool:
		return "bool (on/off)"
	case OptInt:
		return "num"
	case OptSize:
		return "size"
	case OptEnum:
		return strings.Join(o.Values, "|")
	}
	return "str"
}

// OptionsHelp describes f's options as qemu-img create -f FMT -o help
// does: one line each, name=<type> - help (default: value).
func OptionsHelp(f Format) string {
	var b strings.Builder
	if len(f.Options) == 0 {
		fmt.Fprintf(&b, "%s takes no options\n", f.Name)
		return b.String()
	}
	fmt.Fprintf(&b, "Supported %s options:\n", f.Name)
	opts := slices.Clone(f.Options)
	slices.SortFunc(opts, func(a, b Option) int { return strings.Compare(a.Name, b.Name) })
	for _, o := range opts {
		line := fmt.Sprintf("  %s=<%s>", o.Name, o.Type.placeholder(o))
		if len(line) < 24 {
			line += strings.Repeat(" ", 24-len(line))
		}
		line += " - " + o.Help
		if o.Default != "" {
			line += " (default: " + o.Default + ")"
		}
		b.WriteString(line + "\n")
	}
	if len(f.Targets) > 0 {
		fmt.Fprintf(&b, "Targets (--target NAME):\n")
		for _, t := range f.Targets {
			line := "  " + t.Name
			if len(line) < 24 {
				line += strings.Repeat(" ", 24-len(line))
			}
			fmt.Fprintf(&b, "%s - %s (-o %s)\n", line, t.Help, t.Options)
		}
	}
	return b.String()
}

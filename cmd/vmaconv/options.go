package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/format"
)

// optionsFlag is -o: options of the output's format, as qemu-img's.
type optionsFlag struct {
	Options optionList `short:"o" name:"options" sep:"none" placeholder:"KEY=VALUE,…" help:"Options of the output's format, as qemu-img's -o (repeatable): -o cluster_size=2M,compress=zstd; a comma in a value is written twice. -o help lists the format's options (that of -O FMT, or of the destination's name). --compress, --level, --cluster-size, --seekable, --uuid, --ctime, --vmid and --storage set the options of their names. An option the format does not take is refused."`
}

// optionList is the -o arguments, each a KEY=VALUE[,KEY=VALUE…] list.
type optionList []string

// BeforeApply answers -o help before kong asks for the arguments it
// needs no more, as qemu-img create -f qcow2 -o help does: it prints the
// options of -O's format, else of the destination's, and exits.
func (optionList) BeforeApply(kctx *kong.Context, trace *kong.Path) error {
	lists, _ := kctx.Value(trace).Interface().(optionList)
	var given []format.Setting
	for _, l := range lists {
		ss, err := format.ParseOptionList(l)
		if err != nil {
			return nil // said when the command checks -o
		}
		given = append(given, ss...)
	}
	if !format.HelpRequested(given) {
		return nil
	}
	fm, err := helpFormat(kctx)
	if err != nil {
		return err
	}
	fmt.Fprint(kctx.Stdout, format.OptionsHelp(fm))
	kctx.Exit(exitOK)
	return nil
}

// helpFormat is the format -o help describes: -O's, else that of the
// command's output.
func helpFormat(kctx *kong.Context) (format.Format, error) {
	var ofmt, dst string
	for _, p := range kctx.Path {
		switch {
		case p.Flag != nil && p.Flag.Name == "output-format":
			ofmt, _ = kctx.Value(p).Interface().(string)
		case p.Positional != nil && (p.Positional.Name == "dst" || p.Positional.Name == "archive"):
			dst, _ = kctx.Value(p).Interface().(string)
		}
	}
	cmd := ""
	if n := kctx.Selected(); n != nil {
		cmd = n.Name
	}
	switch {
	case ofmt != "":
		f, err := registry.Lookup(ofmt)
		if err == nil && f.Create == nil {
			err = fmt.Errorf("%s cannot be written", ofmt)
		}
		return f, err
	case cmd == "create":
		if f, ok := registry.ForPath(dst); ok && f.Multi {
			return f, nil
		}
		return archiveFormat(), nil
	case cmd == "extract":
		return registry.Lookup("raw")
	case dst == "" || dst == "-":
		return format.Format{}, errors.New("-o help: name the format whose options to list: -O FMT")
	}
	return outputFormat(&env{quiet: true}, dst, "", nil)
}

// sinkOptions are what a command tells its output's sink: the configs,
// where the disks come from, and the options its flags and -o give,
// checked against the output's format (check) once it is known, before
// anything is read or written.
type sinkOptions struct {
	Configs  []format.Config
	From     *format.Origin // for an archive: see format.Origin
	settings []format.Setting
	target   string // --target: the format's options for a platform
}

// flagSetting is the setting a flag stands for: the option of its name
// (--cluster-size is cluster_size). A bool flag is given bare.
func flagSetting(flag, value string) format.Setting {
	name := strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_")
	return format.Setting{Name: name, Value: value, Bare: value == "", Flag: flag}
}

// newSinkOptions gathers the flags' settings and -o's, in that order.
// Only -o's syntax is checked here; what the settings mean depends on
// the output's format.
func newSinkOptions(o optionList, flags ...format.Setting) (sinkOptions, error) {
	s := sinkOptions{settings: flags}
	for _, l := range o {
		ss, err := format.ParseOptionList(l)
		if err != nil {
			return s, usageError{err}
		}
		s.settings = append(s.settings, ss...)
	}
	return s, nil
}

// check checks the settings against fm, refusing what it does not take.
func (o *sinkOptions) check(fm format.Format) error {
	_, err := o.createOptions(fm)
	return err
}

// createOptions returns what fm's Create is told: the configs, where the
// disks come from, and the options.
func (o sinkOptions) createOptions(fm format.Format) (format.CreateOptions, error) {
	settings := o.settings
	if o.target != "" {
		ts, err := format.TargetSettings(fm, o.target)
		if err != nil {
			return format.CreateOptions{}, usageError{err}
		}
		settings = append(ts, settings...)
	}
	v, err := format.CheckOptions(fm, settings)
	if err != nil {
		return format.CreateOptions{}, usageError{err}
	}
	return format.CreateOptions{Configs: o.Configs, Options: v, From: o.From}, nil
}

// intFlag is a given int flag's value as a setting's text.
func intFlag(n *int) (string, bool) {
	if n == nil {
		return "", false
	}
	return strconv.Itoa(*n), true
}

// writeSettings are the settings of the write flags that stand for
// options.
func (w *writeFlags) writeSettings() []format.Setting {
	var ss []format.Setting
	if w.Compress != "" {
		ss = append(ss, flagSetting("--compress", w.Compress))
	}
	if v, ok := intFlag(w.Level); ok {
		ss = append(ss, flagSetting("--level", v))
	}
	if w.Seekable {
		ss = append(ss, flagSetting("--seekable", ""))
	}
	if w.UUID != "" {
		ss = append(ss, flagSetting("--uuid", w.UUID))
	}
	if w.CTime != "" {
		ss = append(ss, flagSetting("--ctime", w.CTime))
	}
	return ss
}

// archiveSettings are the settings of --vmid (if given: it has a
// default) and --storage.
func (a *archiveFlags) archiveSettings(vmidGiven bool) []format.Setting {
	var ss []format.Setting
	if vmidGiven {
		ss = append(ss, flagSetting("--vmid", strconv.Itoa(a.VMID)))
	}
	if a.Storage != "" {
		ss = append(ss, flagSetting("--storage", a.Storage))
	}
	return ss
}

// clusterSetting is the setting of --cluster-size, if given.
func clusterSetting(b *byteSize) []format.Setting {
	if b == nil {
		return nil
	}
	return []format.Setting{flagSetting("--cluster-size", strconv.FormatInt(int64(*b), 10))}
}

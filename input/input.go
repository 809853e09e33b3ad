// Package input opens what vmaconv reads, whatever it is: a disk image or an
// archive, in a file, on standard input ("-") or through a pipe, compressed
// or not, whole or one device of an archive (ARCHIVE:DEVICE). Open is the
// one way to do it: it finds the format by its magic bytes (a format the
// user names is taken as it is), refuses images of formats vmaconv knows
// but does not read, takes what no format claims for raw, and decompresses.
// It reads the disks at random where the input allows and as a stream
// where it does not (standard input, a pipe, a compressed archive, an
// archive too far out of order to index); a caller that needs random
// access gets a compressed archive through the seekable zstd format or the
// decompression cache instead.
//
// Like every library package of vmaconv it never prints: what the user
// should know goes to Options.Note.
package input

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/text"
	"github.com/vmaconv/vmaconv/remote"
)

// Options say how Open opens an input: what the command reading it needs.
// The zero value detects the format and reads at random where it can.
type Options struct {
	// Format names the format (-f): it is not detected, and the input is
	// never taken for raw.
	Format string
	// AllowBacking lets a qcow2 image read its backing files.
	AllowBacking bool
	// Stream reads an input that can be read as a stream (an archive) as
	// one even from a file: to read it through once (verify, extract
	// --salvage), or only its header (info, config).
	Stream bool
	// RandomAccess is set by callers that read the disks at random
	// (serve, mount, compare, map): a compressed archive is then read
	// through the seekable zstd format, or decompressed once into the
	// cache (Cache); an input that can only be read as a stream (standard
	// input, a pipe) fails with an error matching ErrSequential.
	RandomAccess bool
	// Cache places and limits the decompression cache (RandomAccess).
	Cache CacheOptions
	// MaxWindow bounds the zstd window of a compressed input, in bytes
	// (default compress.DefaultMaxWindow).
	MaxWindow int64
	// Stdin is what "-" reads (default: os.Stdin).
	Stdin io.Reader
	// Remote configures the reading of remote objects (s3://, https://,
	// http://).
	Remote remote.Options
	// NoIndex ignores an archive's sidecar index (IndexSuffix).
	NoIndex bool
	// IndexEvery is the distance in decompressed bytes between the restart
	// points BuildIndex finds in a zstd archive without a seek table (0
	// for compress.DefaultRestartEvery).
	IndexEvery int64
	// Note, if set, is told of what the user should know: a raw fallback,
	// each backing file followed, a cache entry built. Notes come only
	// from an Open that succeeds, except the cache's own.
	Note func(msg string)
}

// ErrSequential matches (errors.Is) Open's errors, with
// Options.RandomAccess, for an input that can only be read as a stream:
// standard input, a pipe, an archive on a block device.
var ErrSequential = errors.New("random access unavailable")

type sequential struct{ msg string }

func (e *sequential) Error() string        { return e.msg }
func (e *sequential) Is(target error) bool { return target == ErrSequential }

// Input is an opened input: its disks (Devices), read at random (Image,
// Source) or as a stream (Stream), and the configs stored with them.
type Input struct {
	ref      format.Ref
	name     string // for messages, if not ref.Path (a remote object's)
	format   format.Format
	comp     string // the compression layer (compress.Zstd, …), "" for none
	size     int64  // the file's size; -1 if unknown
	img      format.Image
	stream   format.Stream
	consumed format.Consumed // a stream's input bytes read
	closers  []func()

	devices []format.Device
	configs []format.Config
	sel     []int // the devices the ref selects: one, or all of them
	sectors bool  // disks are read as whole 512-byte sectors
}

// Open opens ref for reading, as o says. An error for an option that
// cannot be honoured (a format not registered, or one that cannot be read
// from where ref points) matches format.ErrUnsupportedOption: a usage
// error. An image of a format vmaconv does not read is a *ForeignError.
func Open(ctx context.Context, reg *format.Registry, ref format.Ref, o Options) (*Input, error) {
	op := &opener{ctx: ctx, reg: reg, ref: ref, o: o}
	in, err := op.open()
	if err != nil {
		return nil, err
	}
	if err := in.selectDevice(); err != nil {
		in.Close()
		return nil, err
	}
	// Said once the input is open, so that a failure stays one line.
	if o.Note != nil {
		for _, n := range op.notes {
			o.Note(n)
		}
	}
	return in, nil
}

// opener is one Open under way.
type opener struct {
	ctx   context.Context
	reg   *format.Registry
	ref   format.Ref
	o     Options
	notes []string
}

func (op *opener) note(format string, args ...any) {
	op.notes = append(op.notes, fmt.Sprintf(format, args...))
}

// streamable returns the format named by -f, if it can be read as a
// stream (from a pipe); ok is false if another format is named. With none
// named, it returns the zero Format: the stream's format is not known.
func (op *opener) streamable() (format.Format, bool) {
	if op.o.Format == "" {
		return format.Format{}, true
	}
	fm, err := op.reg.Lookup(op.o.Format)
	return fm, err == nil && fm.OpenStream != nil
}

func (op *opener) open() (*Input, error) {
	path := op.ref.Path
	if IsRemote(path) {
		return op.openRemote()
	}
	if path == "-" {
		fm, ok := op.streamable()
		if !ok {
			return nil, format.Unsupported("standard input can only be a VMA archive (random access is needed for %s)", op.o.Format)
		}
		if op.o.RandomAccess {
			return nil, &sequential{"reading at random needs an archive file, not standard input"}
		}
		var stdin io.Reader = os.Stdin
		if op.o.Stdin != nil {
			stdin = op.o.Stdin
		}
		return op.openStream(fm, stdin, "<stdin>", nil, -1)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, missingArchive(err)
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is a directory", path)
		}
		return nil, err
	}
	regular := fi.Mode().IsRegular()
	// A pipe (a FIFO, <(…)) cannot be probed at offset 0 or read at
	// random: it can only be an archive, read as a stream.
	if m := fi.Mode(); !regular && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		fm, ok := op.streamable()
		if !ok {
			f.Close()
			return nil, format.Unsupported("%s is not a regular file or block device: only a VMA archive can be read from it (random access is needed for %s)", path, op.o.Format)
		}
		if op.o.RandomAccess {
			f.Close()
			return nil, &sequential{fmt.Sprintf("%s is not a regular file: reading at random needs one (save the archive to a file first)", path)}
		}
		return op.openStream(fm, f, path, f, -1)
	}
	head, err := format.ReadHead(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var fm format.Format
	comp := compress.Detect(head)
	if op.o.Format != "" {
		if fm, err = op.reg.Lookup(op.o.Format); err != nil {
			f.Close()
			return nil, format.Unsupported("%v", err)
		}
		if fm.OpenStream == nil {
			comp = "" // a compressed file taken as the format named
		}
	} else {
		var fallback bool
		if fm, fallback, err = detect(op.reg, path, f, fi, head); err != nil {
			f.Close()
			return nil, err
		}
		if fallback {
			defer func() { op.note("%s: no known format found, reading it as raw (pass -f raw to say so)", path) }()
		}
	}
	if op.ref.Device != "" && !fm.Multi {
		f.Close()
		return nil, fmt.Errorf("%s is a %s image, not an archive: ':%s' selects a device of a VMA archive", path, fm.Name, op.ref.Device)
	}
	size := int64(-1)
	if regular {
		size = fi.Size() // progress counts the file's bytes, compressed or not
	}
	if fm.OpenStream != nil && (comp != "" || op.o.Stream || !regular) {
		switch {
		case !op.o.RandomAccess:
			return op.openStream(fm, f, path, f, size)
		case !regular:
			f.Close()
			return nil, &sequential{fmt.Sprintf("%s is not a regular file: reading at random needs one (save the archive to a file first)", path)}
		case comp != "":
			return op.openDecompressed(fm, f, comp, size)
		}
	}
	in, err := op.openRandom(fm, f, size)
	if errors.Is(err, format.ErrStreamOnly) && fm.OpenStream != nil && !op.o.RandomAccess {
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
		return op.openStream(fm, f, path, f, size)
	}
	return in, err
}

// openRandom opens f for reading at random with fm's Open, which takes
// it over.
func (op *opener) openRandom(fm format.Format, f *os.File, size int64) (*Input, error) {
	if fm.Open == nil {
		f.Close()
		return nil, fmt.Errorf("%s: %s cannot be read at random", op.ref.Path, fm.Name)
	}
	// The driver's notes are said only if it opens the file.
	var notes []string
	o := op.openOptions()
	o.Note = func(msg string) { notes = append(notes, msg) }
	img, err := fm.Open(f, o)
	if err != nil {
		return nil, err
	}
	op.notes = append(op.notes, notes...)
	return op.newInput(fm, img, "", size, func() { img.Close() }), nil
}

// openOptions are the options of the format's Open; its notes are kept
// until Open succeeds.
func (op *opener) openOptions() format.OpenOptions {
	return format.OpenOptions{Forced: op.o.Format != "", AllowBacking: op.o.AllowBacking, Note: func(msg string) { op.note("%s", msg) }}
}

// newInput returns the Input of an image read at random; closers run in
// order on Close.
func (op *opener) newInput(fm format.Format, img format.Image, comp string, size int64, closers ...func()) *Input {
	in := &Input{ref: op.ref, format: fm, comp: comp, size: size, img: img, closers: closers, configs: img.Configs()}
	for _, d := range img.Disks() {
		in.devices = append(in.devices, format.Device{Name: d.Name, Size: d.Source.Size()})
	}
	return in
}

// remoteReaders is how many parallel readers a remote input read at random
// asks for (pipeline.Parallel): enough requests in flight to hide the
// round trips, each reading a chunk (1 MiB) at a time.
const remoteReaders = 16

// Readers implements pipeline.Parallel: a remote input read at random asks
// for remoteReaders parallel readers; any other for the default (0).
func (in *Input) Readers() int {
	if in.name != "" && in.img != nil {
		return remoteReaders
	}
	return 0
}

// Close closes the input.
func (in *Input) Close() error {
	for _, c := range in.closers {
		c()
	}
	in.closers = nil
	return nil
}

// Ref returns the reference the input was opened by.
func (in *Input) Ref() format.Ref { return in.ref }

// Format returns the input's format.
func (in *Input) Format() format.Format { return in.format }

// Compression returns the compression layer around the input
// (compress.Zstd, compress.Gzip, compress.Lzop), or "".
func (in *Input) Compression() string { return in.comp }

// Size returns the size of the input's file, or -1 if it is not known
// (standard input, a pipe).
func (in *Input) Size() int64 { return in.size }

// Name is how the input is called in messages: its path, or "<stdin>",
// or a remote object's URL without credentials (remote.Object.Name).
func (in *Input) Name() string {
	if in.ref.Path == "-" {
		return "<stdin>"
	}
	if in.name != "" {
		return in.name
	}
	return in.ref.Path
}

// Archive reports whether the input holds named devices and configs.
func (in *Input) Archive() bool { return in.format.Multi }

// Devices returns the input's disks, as it presents them (see
// WholeSectors).
func (in *Input) Devices() []format.Device { return in.devices }

// Configs returns the files stored with the disks (archives only).
func (in *Input) Configs() []format.Config { return in.configs }

// Selected returns the devices the ref selects (indices into Devices): the
// one it names, or all of them.
func (in *Input) Selected() []int { return in.sel }

// Image returns the input read at random, or nil for a stream.
func (in *Input) Image() format.Image { return in.img }

// Stream returns the input read as a stream, or nil.
func (in *Input) Stream() format.Stream { return in.stream }

// Source returns disk i for reading at random, as the input presents it
// (padded to whole sectors after WholeSectors), or nil for a stream.
func (in *Input) Source(i int) format.Source {
	if in.img == nil {
		return nil
	}
	return format.Pad(in.img.Disks()[i].Source, in.devices[i].Size)
}

// Consumed returns the bytes of the input's file a stream has read so
// far: the compressed ones for a compressed input (for progress against
// Size).
func (in *Input) Consumed() int64 {
	if in.consumed == nil {
		return 0
	}
	return in.consumed.Consumed()
}

// WholeSectors makes a plain image read as a disk of whole 512-byte
// sectors, zero-padded, as QEMU presents a raw file to a VM (and so as
// Proxmox stores it in an archive).
func (in *Input) WholeSectors() {
	if in.Archive() || in.sectors {
		return
	}
	in.sectors = true
	for i := range in.devices {
		in.devices[i].Size = (in.devices[i].Size + 511) &^ 511
	}
}

// selectDevice resolves the ref's device: a device by its name, or by the
// short name the format knows it by (Format.DiskName); or all of them.
func (in *Input) selectDevice() error {
	in.sel = nil
	if in.ref.Device == "" {
		for i := range in.devices {
			in.sel = append(in.sel, i)
		}
		return nil
	}
	wants := []string{in.ref.Device}
	if in.format.DiskName != nil {
		wants = append(wants, in.format.DiskName(in.ref.Device))
	}
	for _, want := range wants {
		for i, d := range in.devices {
			if d.Name == want {
				in.sel = []int{i}
				return nil
			}
		}
	}
	return fmt.Errorf("%s: no device %q in the archive (%s)", in.Name(), in.ref.Device, in.DeviceList())
}

// missingArchive rewrites "open ARCHIVE:DEVICE: no such file" as the
// missing archive's error: the device suffix is not part of the file
// name (format.ParseRef keeps the whole text as a path when the archive
// does not exist).
func missingArchive(err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) || err.Error() != pe.Error() || pe.Op != "open" || !errors.Is(pe.Err, fs.ErrNotExist) {
		return err // not just "open PATH: no such file"
	}
	i := strings.LastIndexByte(pe.Path, ':')
	if i <= 0 || !deviceLike(pe.Path[i+1:]) {
		return err
	}
	if _, serr := os.Stat(pe.Path[:i]); serr == nil {
		return err
	}
	return &fs.PathError{Op: "open", Path: pe.Path[:i], Err: pe.Err}
}

// deviceLike reports whether s can be an archive's device name or disk
// key (drive-scsi0, scsi0), not the rest of a file name.
func deviceLike(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

// ShortName returns the shortest name a user may give device i by, as
// FILE:DISK, other than its own (Format.DiskName: "scsi0" for
// "drive-scsi0"): a run of the dash-separated words of its name that
// DiskName turns into the name. It returns "" if there is none.
func (in *Input) ShortName(i int) string {
	name := in.devices[i].Name
	if in.format.DiskName == nil {
		return ""
	}
	words := strings.Split(name, "-")
	short := ""
	for a := range words {
		for b := a + 1; b <= len(words); b++ {
			s := strings.Join(words[a:b], "-")
			if s != name && (short == "" || len(s) < len(short)) && in.format.DiskName(s) == name {
				short = s
			}
		}
	}
	return short
}

// Exported returns the disks of an input read at random to serve or mount
// (all, or those named), each with the name it is known by: an archive's
// disks by their names (shown, if set, leaves out those it refuses: a
// RAM-state stream), an image's one disk as image. They are seen in whole
// 512-byte sectors, as QEMU presents a raw file (WholeSectors).
func (in *Input) Exported(names []string, image string, shown func(name string) bool) ([]format.Disk, error) {
	in.WholeSectors()
	var disks []format.Disk
	var have []string
	for i, d := range in.devices {
		name := d.Name
		if !in.Archive() {
			name = image
		} else if shown != nil && !shown(name) {
			continue
		}
		have = append(have, name)
		if len(names) == 0 || slices.Contains(names, name) {
			disks = append(disks, format.Disk{Name: name, Source: in.Source(i)})
		}
	}
	for _, n := range names {
		if !slices.Contains(have, n) {
			return nil, fmt.Errorf("%s: no device %q in the archive (devices: %s)", in.path(), text.Printable(n), strings.Join(have, ", "))
		}
	}
	if len(disks) == 0 {
		return nil, fmt.Errorf("%s: no disk devices in the archive", in.path())
	}
	return disks, nil
}

// DeviceList lists the devices for messages: "devices: a, b", or "it has
// none".
func (in *Input) DeviceList() string {
	if len(in.devices) == 0 {
		return "it has none"
	}
	var names []string
	for _, d := range in.devices {
		names = append(names, text.Printable(d.Name))
	}
	return "devices: " + strings.Join(names, ", ")
}

// One returns the only selected device, or an error asking for one.
func (in *Input) One() (int, error) {
	if len(in.sel) == 1 {
		return in.sel[0], nil
	}
	return 0, fmt.Errorf("%s: name one device as %s:DEVICE (%s)", in.Name(), in.path(), in.DeviceList())
}

// DiskName returns how device i is named as a source: FILE for a plain
// image, FILE:DEVICE in an archive.
func (in *Input) DiskName(i int) string {
	if !in.Archive() {
		return in.path()
	}
	return format.Ref{Path: in.path(), Device: in.devices[i].Name}.String()
}

// path is the ref's path as messages show it: a remote object's without
// credentials (Name), any other as given ("-" included).
func (in *Input) path() string {
	if in.name != "" {
		return in.name
	}
	return in.ref.Path
}

// Check refuses, before any output exists, devices that reading would fail
// on (format.Checker).
func (in *Input) Check(sel []int) error {
	if in.img == nil {
		return nil
	}
	for _, i := range sel {
		if c, ok := in.img.Disks()[i].Source.(format.Checker); ok {
			if err := c.Check(); err != nil {
				return fmt.Errorf("%s: %w", in.DiskName(i), err)
			}
		}
	}
	return nil
}

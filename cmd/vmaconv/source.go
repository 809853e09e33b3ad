package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/pipeline"
)

var registry = all.Registry()

// input is an opened SRC: a file read at random (a disk image, or an
// archive file through its index), or an archive read as a stream
// (standard input, a pipe, a compressed archive, or --salvage).
type input struct {
	ref     format.Ref
	format  format.Format
	img     format.Image      // random access
	ar      *vma.Reader       // stream
	file    *os.File          // an archive file read at random: the file (img closes it)
	comp    string            // an archive's compression layer (compress.Zstd, …), "" for none
	size    int64             // the file's size, for a stream's progress; -1 unknown
	counted func(int64) int64 // stream: archive bytes read -> file bytes read
	close   func()

	devices []format.Device // all of them
	ids     []int           // stream: the archive id of each device
	configs []format.Config
	sel     []int // the devices selected by ref.Device (all if none)
	sectors bool  // disks are read as whole 512-byte sectors
}

// wholeSectors makes a plain image read as a disk of whole 512-byte
// sectors, zero-padded, as QEMU presents a raw file to a VM (and so as
// Proxmox stores it in an archive).
func (in *input) wholeSectors() {
	if in.archive() || in.sectors {
		return
	}
	in.sectors = true
	for i := range in.devices {
		in.devices[i].Size = (in.devices[i].Size + 511) &^ 511
	}
}

// Close closes the input.
func (in *input) Close() error {
	in.close()
	return nil
}

// name is how the input is called in messages.
func (in *input) name() string {
	if in.ref.Path == "-" {
		return "<stdin>"
	}
	return in.ref.Path
}

// archive reports whether the input holds named devices and configs.
func (in *input) archive() bool { return in.format.Multi }

// source returns the random-access source of device i.
func (in *input) source(i int) format.Source {
	return format.Pad(in.img.Disks()[i].Source, in.devices[i].Size)
}

type sourceOpts struct {
	format       string // -f: forced format
	allowBacking bool
	stream       bool // read an archive as a stream even if it is a file (--salvage)
}

// openInput opens ref. Formats are probed by magic bytes unless forced;
// what no driver claims is raw, with a note, so that a raw image is never
// taken for something else once -f raw is given. An archive file is opened
// for random access unless it is compressed, not a regular file, or too
// far out of order to index; then it is read as a stream.
func openInput(e *env, ref format.Ref, o sourceOpts) (in *input, err error) {
	if ref.Path == "-" {
		if o.format != "" && o.format != vma.Name {
			return nil, usageError{fmt.Errorf("standard input can only be a VMA archive (random access is needed for %s)", o.format)}
		}
		r, comp := sniff(e.stdin)
		ar, stop, counted, err := openArchiveStreamCounted(e, r, "<stdin>")
		if err != nil {
			return nil, err
		}
		in, err := newStreamInput(ref, ar, -1, counted, stop)
		if in != nil {
			in.comp = comp()
		}
		return in, err
	}
	f, err := os.Open(ref.Path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is a directory", ref.Path)
		}
		return nil, err
	}
	// A pipe (a FIFO, <(…)) cannot be probed at offset 0 or read at
	// random: it can only be an archive, read as a stream.
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		if o.format != "" && o.format != vma.Name {
			f.Close()
			return nil, usageError{fmt.Errorf("%s is not a regular file or block device: only a VMA archive can be read from it (random access is needed for %s)", ref.Path, o.format)}
		}
		return openStreamFile(e, ref, f, fi)
	}
	var fm format.Format
	head, err := format.ReadHead(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", ref.Path, err)
	}
	// vzdump compresses archives only.
	compressed := compress.Detect(head) != "" && (o.format == "" || o.format == vma.Name)
	if o.format != "" {
		if fm, err = registry.Lookup(o.format); err != nil {
			f.Close()
			return nil, usageError{err}
		}
	} else {
		fm, err = registry.Detect(head)
		if compressed {
			fm, err = vma.Format, nil
		}
		if errors.Is(err, format.ErrUnknownFormat) {
			var tail []byte
			if fi.Mode().IsRegular() && fi.Size() >= 512 {
				tail = make([]byte, 512)
				if _, err := f.ReadAt(tail, fi.Size()-512); err != nil {
					tail = nil
				}
			}
			if ff, ok := format.DetectForeign(head, tail); ok {
				f.Close()
				return nil, fmt.Errorf("%s: a %s image, which vmaconv does not read: convert it first (qemu-img convert -f %s -O qcow2 %s disk.qcow2), or pass -f raw to take its bytes as they are", ref.Path, ff.Name, ff.QEMU, ref.Path)
			}
			fm = raw.Format
			// Said once the source is open, so a failure stays one line.
			defer func() {
				if in != nil {
					e.note("%s: no known format found, reading it as raw (pass -f raw to say so)", ref.Path)
				}
			}()
		}
	}
	if ref.Device != "" && !fm.Multi {
		f.Close()
		return nil, fmt.Errorf("%s is a %s image, not an archive: ':%s' selects a device of a VMA archive", ref.Path, fm.Name, ref.Device)
	}
	if fm.Name == vma.Name && (compressed || o.stream || !fi.Mode().IsRegular()) {
		return openStreamFile(e, ref, f, fi)
	}
	// Notes are said once the source is open, so a failure stays one line.
	var notes []string
	img, err := fm.Open(f, format.OpenOptions{Forced: o.format != "", AllowBacking: o.allowBacking,
		Note: func(msg string) { notes = append(notes, msg) }})
	if err == nil {
		for _, n := range notes {
			e.note("%s", n)
		}
	}
	if errors.Is(err, format.ErrStreamOnly) && fm.Name == vma.Name {
		if f, err = os.Open(ref.Path); err != nil {
			return nil, err
		}
		return openStreamFile(e, ref, f, fi)
	}
	if err != nil {
		return nil, err
	}
	in = &input{ref: ref, format: fm, img: img, size: fi.Size(), close: func() { img.Close() }, configs: img.Configs()}
	if fm.Multi {
		in.file = f
	}
	for _, d := range img.Disks() {
		in.devices = append(in.devices, format.Device{Name: d.Name, Size: d.Source.Size()})
	}
	if err := in.selectDevice(); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// openStreamFile reads the archive file f as a stream.
func openStreamFile(e *env, ref format.Ref, f *os.File, fi os.FileInfo) (*input, error) {
	r, comp := sniff(f)
	ar, stop, counted, err := openArchiveStreamCounted(e, r, ref.Path)
	if err != nil {
		f.Close()
		return nil, err
	}
	size := int64(-1)
	if fi.Mode().IsRegular() {
		size = fi.Size() // progress counts the file's bytes, compressed or not
	}
	in, err := newStreamInput(ref, ar, size, counted, func() { stop(); f.Close() })
	if in != nil {
		in.comp = comp()
	}
	return in, err
}

// sniff returns what to read an archive stream from, r or a reader
// through it, and a function that tells its compression layer (by magic,
// as openArchiveStreamCounted does) once it has been opened. A regular
// file is read as it is (it may be read directly, seeking), and its head
// read at offset 0; anything else goes through a reader that keeps the
// first bytes read.
func sniff(r io.Reader) (io.Reader, func() string) {
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			head, _ := format.ReadHead(f)
			return f, func() string { return compress.Detect(head) }
		}
	}
	s := &sniffer{r: r}
	return s, func() string { return compress.Detect(s.head) }
}

// sniffer keeps the first bytes read through it.
type sniffer struct {
	r    io.Reader
	head []byte
}

func (s *sniffer) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if k := min(n, 16-len(s.head)); k > 0 {
		s.head = append(s.head, p[:k]...)
	}
	return n, err
}

// header returns an archive input's header.
func (in *input) header() *vma.Header {
	if in.ar != nil {
		return in.ar.Header()
	}
	return vma.ArchiveOf(in.img).Header()
}

func newStreamInput(ref format.Ref, ar *vma.Reader, size int64, counted func(int64) int64, stop func()) (*input, error) {
	in := &input{ref: ref, format: vma.Format, ar: ar, size: size, counted: counted, close: stop}
	h := ar.Header()
	for _, d := range h.Devices {
		in.devices = append(in.devices, format.Device{Name: d.Name, Size: d.Size})
		in.ids = append(in.ids, d.ID)
	}
	for _, c := range h.Configs {
		in.configs = append(in.configs, format.Config{Name: c.Name, Data: c.Data})
	}
	if err := in.selectDevice(); err != nil {
		stop()
		return nil, err
	}
	return in, nil
}

// selectDevice resolves ref.Device: a named device, or all of them.
func (in *input) selectDevice() error {
	in.sel = nil
	if in.ref.Device == "" {
		for i := range in.devices {
			in.sel = append(in.sel, i)
		}
		return nil
	}
	// A device by its name, or a Proxmox disk by its config key
	// (scsi0 for drive-scsi0).
	for _, want := range []string{in.ref.Device, vma.DeviceName(in.ref.Device)} {
		for i, d := range in.devices {
			if d.Name == want {
				in.sel = []int{i}
				return nil
			}
		}
	}
	return fmt.Errorf("%s: no device %q in the archive (%s)", in.name(), in.ref.Device, in.deviceList())
}

// deviceList lists the devices for messages.
func (in *input) deviceList() string {
	if len(in.devices) == 0 {
		return "it has none"
	}
	var names []string
	for _, d := range in.devices {
		names = append(names, printable(d.Name))
	}
	return "devices: " + strings.Join(names, ", ")
}

// one returns the only selected device, or an error asking for one.
func (in *input) one() (int, error) {
	if len(in.sel) == 1 {
		return in.sel[0], nil
	}
	return 0, fmt.Errorf("%s: name one device as %s:DEVICE (%s)", in.name(), in.ref.Path, in.deviceList())
}

// refOf returns how device i is named as a source: FILE for a plain image,
// FILE:DEVICE in an archive.
func (in *input) refOf(i int) string {
	if !in.archive() {
		return in.ref.Path
	}
	return format.Ref{Path: in.ref.Path, Device: in.devices[i].Name}.String()
}

// check refuses, before any output exists, devices that reading would
// fail on (format.Checker).
func (in *input) check(sel []int) error {
	if in.img == nil {
		return nil
	}
	for _, i := range sel {
		if c, ok := in.img.Disks()[i].Source.(format.Checker); ok {
			if err := c.Check(); err != nil {
				return fmt.Errorf("%s: %w", in.refOf(i), err)
			}
		}
	}
	return nil
}

// transfer copies the selected devices sel (indices into in.devices) to
// the sink's disks 0, 1, …: from a random-access input with parallel
// readers, device after device; from a stream in one pass, in archive
// order. progress gets the bytes done.
func transfer(e *env, in *input, sel []int, sink format.Sink, o pipeline.Options, p *progress) (*vma.Result, error) {
	if in.ar == nil {
		done := int64(0)
		for k, i := range sel {
			src := in.source(i)
			base := done
			o.Progress = func(n int64) { p.update(base + n) }
			if err := pipeline.Copy(e.ctx, sink.Disk(k), src, o); err != nil {
				return nil, fmt.Errorf("%s: %w", in.refOf(i), err)
			}
			done += src.Size()
		}
		return nil, nil
	}
	targets := map[int]io.WriterAt{}
	streams := map[int]io.Writer{}
	var ids []int
	for k, i := range sel {
		id := in.ids[i]
		ids = append(ids, id)
		dw := sink.Disk(k)
		if _, ok := dw.(format.Sequential); ok {
			streams[id] = &seqWriter{w: dw}
		} else {
			targets[id] = dw
		}
	}
	in.ar.Want(ids...) // skip the other devices' data where the input allows
	res, err := vma.Unpack(e.ctx, in.ar, targets, vma.UnpackOptions{Streams: streams, Progress: in.progressFunc(p), Workers: o.Workers})
	if errors.Is(err, format.ErrReorder) {
		err = fmt.Errorf("%w; a pipe needs them in order: write a file instead, or read the archive from a file", err)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", in.name(), err)
	}
	return res, nil
}

// seqWriter writes a stream of bytes to a Sequential disk writer.
type seqWriter struct {
	w   format.DiskWriter
	pos int64
}

func (s *seqWriter) Write(p []byte) (int, error) {
	n, err := s.w.WriteAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}

// progressFunc returns the Progress callback of a stream's Unpack: it
// reports the file's bytes read (the compressed ones for a compressed
// archive), against progressTotal.
func (in *input) progressFunc(p *progress) func(int64) {
	return func(n int64) { p.update(in.counted(n)) }
}

// totalSize returns the bytes of the selected devices.
func (in *input) totalSize(sel []int) int64 {
	n := int64(0)
	for _, i := range sel {
		n += in.devices[i].Size
	}
	return n
}

// progressTotal is what a transfer's progress counts up to: the devices'
// bytes for random access, the archive's bytes (if known) for a stream.
func (in *input) progressTotal(sel []int) int64 {
	if in.ar != nil {
		return in.size
	}
	return in.totalSize(sel)
}

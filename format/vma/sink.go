package vma

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/outfile"
)

// Format is the VMA driver, for a format.Registry: archives are probed by
// their magic, opened for random access with Open, and written by a sink
// over Writer, compressed as the destination's extension (.vma.zst,
// .vma.gz) or CreateOptions.Compress says.
var Format = format.Format{
	Name:       Name,
	Probe:      func(head []byte) bool { return len(head) >= 4 && [4]byte(head[:4]) == Magic },
	Open:       openImage,
	OpenAt:     openAt,
	OpenStream: OpenStream,
	DiskName:   DeviceName,
	Extensions: []string{".vma", ".vma.zst", ".vma.gz", ".vma.lzo"},
	Multi:      true,
	Create:     Create,
	MaxConfig:  MaxBlobSize,
	Options:    options,
	InfoAt:     fileInfo,
	Archive:    archiveRules{},
}

// options are the options Create takes.
var options = []format.Option{
	{Name: "compress", Type: format.OptEnum, Values: []string{compress.Zstd, compress.Gzip, "none"},
		Default: "the extension's: zstd for .vma.zst, gzip for .vma.gz, else none",
		Help:    "Compress the archive"},
	{Name: "level", Type: format.OptInt,
		Help: "Compression level: zstd 1 to 22 (default 3), gzip 1 to 9 (default 6)"},
	{Name: "seekable", Type: format.OptBool, Default: "off",
		Help: "Write a zstd-compressed archive in the zstd seekable format, which vmaconv reads at random without decompressing it whole"},
	{Name: "uuid", Type: format.OptString, Default: "random",
		Help: "Archive UUID, for reproducible archives",
		Check: func(v any) error {
			_, err := uuid.Parse(v.(string))
			return err
		}},
	{Name: "ctime", Type: format.OptString, Default: "now",
		Help: "Creation time, Unix seconds or RFC 3339 (2024-06-10T06:13:20Z), for reproducible archives",
		Check: func(v any) error {
			_, err := ParseCTime(v.(string))
			return err
		}},
	{Name: "vmid", Type: format.OptInt, Default: "100",
		Help: "Proxmox VMID: of the qemu-server.conf written when none is given, and in the name of an archive written into a directory",
		Check: func(v any) error {
			if n := v.(int64); n != int64(int(n)) || !ValidVMID(int(n)) {
				return errors.New("want 100 to 999999999, as Proxmox VMIDs")
			}
			return nil
		}},
	{Name: "storage", Type: format.OptString,
		Help: "Proxmox storage to restore the disks to, written into every #qmdump#map line (default: each disk's storage in the given qemu-server.conf)",
		Check: func(v any) error {
			if !ValidStorageID(v.(string)) {
				return errors.New("not a Proxmox storage ID (a letter, then letters, digits, '-', '_' or '.', ending with a letter or digit)")
			}
			return nil
		}},
}

// ParseCTime reads an archive creation time (the ctime option): Unix
// seconds, or RFC 3339.
func ParseCTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n == 0 {
			return time.Time{}, errors.New("want a time after 1970-01-01T00:00:00Z")
		}
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("want Unix seconds or RFC 3339 (2024-06-10T06:13:20Z)")
	}
	return t, nil
}

// openImage opens an archive file for random access as a format.Image:
// its devices are the disks (a vmstate stream among them), its config
// blobs the configs.
func openImage(f *os.File, _ format.OpenOptions) (format.Image, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w: not a regular file", f.Name(), format.ErrStreamOnly)
	}
	a, err := Open(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &image{a: a, f: f}, nil
}

// openAt opens the archive of size bytes in r for random access as a
// format.Image; its Close does not close r.
func openAt(r io.ReaderAt, size int64, _ format.OpenOptions) (format.Image, error) {
	a, err := Open(r, size)
	if err != nil {
		return nil, err
	}
	return &image{a: a}, nil
}

type image struct {
	a *Archive
	f *os.File // nil for openAt's
}

// ArchiveOf returns the Archive behind an Image opened by Format.Open, or
// nil.
func ArchiveOf(img format.Image) *Archive {
	if i, ok := img.(*image); ok {
		return i.a
	}
	return nil
}

func (i *image) Close() error {
	if i.f == nil {
		return nil
	}
	return i.f.Close()
}

func (i *image) Disks() []format.Disk {
	var ds []format.Disk
	for _, d := range i.a.devs {
		ds = append(ds, format.Disk{Name: d.dev.Name, Source: d})
	}
	return ds
}

func (i *image) Configs() []format.Config { return configs(i.a.hdr) }

// Repack implements format.Repacker: the extent headers are walked again,
// and the data read by parallel readers (see Repack).
func (i *image) Repack(ctx context.Context, dst format.Sink, disks []int, o format.RepackOptions) error {
	r, err := NewReader(io.NewSectionReader(i.a.r, 0, i.a.size))
	if err != nil {
		return err
	}
	return Repack(ctx, r, dst, deviceIDs(i.a.hdr, disks), RepackOptions{Data: i.a.r, Workers: o.Workers, Progress: o.Progress})
}

// compression returns the compression d gets: the compress option, else
// the extension's.
func compression(d format.Dest, o format.Values) (string, error) {
	c := o.String("compress")
	if c == "" {
		lower := strings.ToLower(d.Path)
		for ext, name := range map[string]string{".vma.zst": compress.Zstd, ".vma.gz": compress.Gzip, ".vma.lzo": compress.Lzop} {
			if strings.HasSuffix(lower, ext) {
				c = name
			}
		}
	}
	switch c {
	case "", "none":
		if o.Has("level") {
			return "", format.Unsupported("--level needs a compressed archive (.vma.zst, .vma.gz or --compress)")
		}
		return "", nil
	case compress.Lzop:
		return "", format.Unsupported("%s: lzop output is not supported (no lzop compressor under a compatible licence); write .vma and pipe it: vmaconv … vm.vma && lzop vm.vma", d.Path)
	}
	return c, nil
}

// Create starts an archive of the given devices and o.Configs at d.
// Devices are added in order (ids 1, 2, …) with the sizes given (a caller
// packing a raw image rounds its size up to whole 512-byte sectors, as
// QEMU does: see format.Pad); a device named VMStateName is a RAM-state
// stream.
//
// With o.From set, Create applies Proxmox's rules first (see
// format.Origin): it completes the configs Proxmox's restore needs (a
// generated qemu-server.conf, the #qmdump#map lines, with the options
// vmid and storage), refuses what it would refuse or extract could not
// write, notes what it would not take, and names an archive written into
// a directory as vzdump names backups. Without it, the options vmid and
// storage are only checked.
//
// The sink's disks assemble whole clusters from whatever pieces they get
// and hand each to Writer once complete; they may be written in any
// order, from one goroutine at a time. Commit fails, leaving nothing, if a
// cluster of a disk was not delivered.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	var ctime time.Time
	if o.From != nil {
		var err error
		if d, o.Configs, ctime, err = applyRules(d, disks, o); err != nil {
			return nil, err
		}
	}
	if d.InPlace {
		return nil, format.Unsupported("an archive is never written in place (-n)")
	}
	comp, err := compression(d, o.Options)
	if err != nil {
		return nil, err
	}
	seekable, level := o.Options.Bool("seekable"), int(o.Options.Int("level"))
	if seekable && comp != compress.Zstd {
		return nil, format.Unsupported("--seekable needs a zstd-compressed archive (.vma.zst or --compress zstd)")
	}
	var opts []WriterOption
	if s := o.Options.String("uuid"); s != "" {
		id, err := uuid.Parse(s)
		if err != nil {
			return nil, format.Unsupported("uuid %q: %v", s, err)
		}
		opts = append(opts, WithUUID(id))
	}
	if s := o.Options.String("ctime"); s != "" && ctime.IsZero() {
		if ctime, err = ParseCTime(s); err != nil {
			return nil, format.Unsupported("ctime %q: %v", s, err)
		}
	}
	if !ctime.IsZero() {
		opts = append(opts, WithCTime(ctime))
	}
	// Check what the Writer would refuse before a file is created.
	w := NewWriter(io.Discard, opts...)
	for _, c := range o.Configs {
		if err := w.AddConfig(c.Name, c.Data); err != nil {
			return nil, fmt.Errorf("config %s: %w", c.Name, err)
		}
	}
	s := &sink{}
	for _, dev := range disks {
		id, err := w.AddDevice(dev.Name, dev.Size)
		if err != nil {
			return nil, err
		}
		s.disks = append(s.disks, &diskWriter{s: s, id: id, name: dev.Name, size: dev.Size, partial: map[int64]*partial{}})
	}

	var out io.Writer
	if d.Stream != nil {
		s.buf = bufio.NewWriterSize(d.Stream, 1<<20)
		out = s.buf
	} else {
		if s.file, err = outfile.Create(d); err != nil {
			return nil, err
		}
		out = s.file
	}
	s.finish = func() error { return nil }
	if comp != "" {
		var cw io.WriteCloser
		if seekable {
			cw, err = compress.NewSeekableWriter(out, level)
		} else {
			cw, err = compress.NewWriter(out, comp, level)
		}
		if err != nil {
			s.Abort()
			return nil, format.Unsupported("%v", err)
		}
		out, s.finish = cw, cw.Close
	}
	s.w = NewWriter(out, opts...)
	for _, c := range o.Configs {
		s.w.AddConfig(c.Name, c.Data)
	}
	for _, dw := range s.disks {
		s.w.AddDevice(dw.name, dw.size)
	}
	return s, nil
}

// ExtentWriter is implemented by the sinks Create returns: WriteExtent
// writes clusters as a Reader gives them as one extent of their own (see
// Writer.WriteExtent), a cluster's Device.ID being i+1 for the sink's
// Disk(i). An archive is repacked this way with its extents as they were.
type ExtentWriter interface {
	WriteExtent(cs []Cluster) error
}

// sink writes an archive. One mutex serialises its disks.
type sink struct {
	mu     sync.Mutex
	w      *Writer
	disks  []*diskWriter
	file   *outfile.File // nil for a stream
	buf    *bufio.Writer // stream
	finish func() error  // flushes the compression layer
	done   bool
	err    error
}

func (s *sink) Disk(i int) format.DiskWriter { return s.disks[i] }

// Commit writes the last extent, flushes and commits the output.
func (s *sink) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return s.err
	}
	s.done = true
	s.err = s.commit()
	if s.err != nil && s.file != nil {
		s.file.Abort()
	}
	return s.err
}

func (s *sink) commit() error {
	for _, d := range s.disks {
		for c, p := range d.partial {
			return fmt.Errorf("vma: %s: cluster %d got %d of %d bytes", d.name, c, p.got, d.valid(c))
		}
	}
	if err := s.w.Close(); err != nil {
		return err
	}
	if err := s.finish(); err != nil {
		return err
	}
	if s.file != nil {
		return s.file.Commit()
	}
	return s.buf.Flush()
}

// Abort removes the output file; a stream keeps what it was sent.
func (s *sink) Abort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	if s.file != nil {
		return s.file.Abort()
	}
	return nil
}

// WriteExtent implements ExtentWriter.
func (s *sink) WriteExtent(cs []Cluster) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return ErrWriteAfterClose
	}
	return s.w.WriteExtent(cs)
}

// diskWriter is one device of the archive being written.
type diskWriter struct {
	s       *sink
	id      int
	name    string
	size    int64
	partial map[int64]*partial
}

// partial is a cluster delivered in pieces.
type partial struct {
	buf *[]byte
	got int64
}

var partialPool = sync.Pool{New: func() any { b := make([]byte, ClusterSize); return &b }}

// valid returns how many of cluster c's bytes are delivered.
func (d *diskWriter) valid(c int64) int64 { return min(d.size-c*ClusterSize, ClusterSize) }

// WriteAt takes data for the device at off: whole clusters go to the
// Writer at once, pieces are assembled first.
func (d *diskWriter) WriteAt(p []byte, off int64) (int, error) {
	return len(p), d.put(off, int64(len(p)), p)
}

// ZeroAt takes a zero range.
func (d *diskWriter) ZeroAt(off, n int64) error { return d.put(off, n, nil) }

func (d *diskWriter) put(off, n int64, p []byte) error {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return ErrWriteAfterClose
	}
	if off < 0 || off+n > d.size {
		return fmt.Errorf("vma: %s: write of %d bytes at %d outside the device (%d bytes)", d.name, n, off, d.size)
	}
	for n > 0 {
		c := off / ClusterSize
		inner := off - c*ClusterSize
		k := min(n, ClusterSize-inner)
		valid := d.valid(c)
		var piece []byte
		if p != nil {
			piece = p[:k]
			p = p[k:]
		}
		if inner == 0 && k >= valid && d.partial[c] == nil {
			if err := s.w.WriteCluster(d.id, c, piece); err != nil {
				return err
			}
		} else {
			pc := d.partial[c]
			if pc == nil {
				pc = &partial{buf: partialPool.Get().(*[]byte)}
				clear(*pc.buf)
				d.partial[c] = pc
			}
			if piece != nil {
				copy((*pc.buf)[inner:], piece)
			} else {
				clear((*pc.buf)[inner : inner+k])
			}
			pc.got += k
			if pc.got >= valid {
				delete(d.partial, c)
				err := s.w.WriteCluster(d.id, c, (*pc.buf)[:valid])
				partialPool.Put(pc.buf)
				if err != nil {
					return err
				}
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/qcow2"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/pipeline"
)

// readFlags are the source options convert, create and checksum share.
type readFlags struct {
	Format       string `short:"f" placeholder:"FMT" help:"Source format (qcow2, raw, vma); default: detected from the file's magic bytes, raw if none."`
	AllowBacking bool   `help:"Let a qcow2 image read its backing file (its format must be recorded in the image)."`
	Workers      int    `short:"m" placeholder:"N" help:"Parallel readers (default: the number of CPUs)."`
	Progress     bool   `short:"p" help:"Show progress on stderr."`
}

// pipelineOptions checks -m; like every usage error, before a file is
// touched.
func (r *readFlags) pipelineOptions() (pipeline.Options, error) {
	o := pipeline.Options{Workers: r.Workers}
	if err := o.Validate(); err != nil {
		return o, usageError{err}
	}
	return o, nil
}

// openSrc opens SRC, which must come down to one disk.
func (c *convertCmd) openSrc(e *env) (*source, error) {
	return openSource(e, format.ParseRef(c.Src), sourceOpts{format: c.Format, allowBacking: c.AllowBacking, wantDevice: true})
}

// writeFlags are the options of commands that write a file.
type writeFlags struct {
	Overwrite bool     `help:"Replace DST if it exists."`
	Config    []string `short:"c" placeholder:"FILE" type:"existingfile" help:"Add a config file to an archive (repeatable), e.g. qemu-server.conf."`
	Compress  string   `placeholder:"zstd|gzip|none" help:"Compress the archive (default: from DST's extension: .vma.zst, .vma.gz)."`
	Level     int      `placeholder:"N" help:"Compression level (zstd 1-22, default 3; gzip 1-9, default 6)."`
	UUID      string   `placeholder:"UUID" help:"Archive UUID (default: random), for reproducible archives."`
	CTime     int64    `name:"ctime" placeholder:"UNIX-SECONDS" help:"Archive creation time (default: now), for reproducible archives."`
}

// writerOptions turns --uuid and --ctime into vma.Writer options.
func (w *writeFlags) writerOptions() ([]vma.WriterOption, error) {
	var opts []vma.WriterOption
	if w.UUID != "" {
		id, err := uuid.Parse(w.UUID)
		if err != nil {
			return nil, usageError{fmt.Errorf("--uuid %q: %v", w.UUID, err)}
		}
		opts = append(opts, vma.WithUUID(id))
	}
	if w.CTime != 0 {
		opts = append(opts, vma.WithCTime(time.Unix(w.CTime, 0)))
	}
	return opts, nil
}

type convertCmd struct {
	Src      string `arg:"" help:"Source: a disk image (qcow2, raw) or a VMA archive, as FILE or ARCHIVE:DEVICE; - for a VMA archive on stdin."`
	Dst      string `arg:"" help:"Destination file; its format comes from -O or the extension (.vma; anything else is raw)."`
	OFmt     string `short:"O" name:"output-format" placeholder:"FMT" help:"Destination format: vma or raw."`
	NoCreate bool   `short:"n" name:"no-create" help:"Write raw output into the existing DST (a block device, or a file at least as large) in place, zeros included, like qemu-img convert -n. No temporary file: a failure leaves DST partly written."`
	Name     string `placeholder:"DEVICE" help:"Device name in the archive (default drive-scsi0, or the source device's name)."`
	readFlags
	writeFlags
}

// archiveCompression decides how an archive destination is compressed:
// --compress, else the extension (.vma.zst, .vma.gz, .vma.lzo).
func (w *writeFlags) archiveCompression(dst string) (string, error) {
	c := w.Compress
	if c == "" {
		lower := strings.ToLower(dst)
		for ext, name := range map[string]string{".vma.zst": compress.Zstd, ".vma.gz": compress.Gzip, ".vma.lzo": compress.Lzop} {
			if strings.HasSuffix(lower, ext) {
				c = name
			}
		}
	}
	switch c {
	case "", "none":
		if w.Level != 0 {
			return "", usageError{fmt.Errorf("--level needs a compressed archive (.vma.zst, .vma.gz or --compress)")}
		}
		return "", nil
	case compress.Zstd, compress.Gzip:
		return c, nil
	case compress.Lzop:
		return "", usageError{fmt.Errorf("%s: lzop output is not supported (no lzop compressor under a compatible licence); write .vma and pipe it: vmaconv … vm.vma && lzop vm.vma", dst)}
	}
	return "", usageError{fmt.Errorf("--compress %q: want zstd, gzip or none", c)}
}

// archiveWriter wraps out in the chosen compression; finish flushes it.
func archiveWriter(out io.Writer, comp string, level int) (io.Writer, func() error, error) {
	if comp == "" {
		return out, func() error { return nil }, nil
	}
	cw, err := compress.NewWriter(out, comp, level)
	if err != nil {
		return nil, nil, usageError{err}
	}
	return cw, cw.Close, nil
}

// outputFormat decides the destination format.
func outputFormat(dst, forced string) (string, error) {
	name := forced
	if name == "" {
		lower := strings.ToLower(dst)
		switch {
		case strings.HasSuffix(lower, ".vma"), strings.HasSuffix(lower, ".vma.zst"), strings.HasSuffix(lower, ".vma.gz"), strings.HasSuffix(lower, ".vma.lzo"):
			name = vma.Name
		case strings.HasSuffix(lower, ".qcow2"):
			name = qcow2.Name
		default:
			name = raw.Name
		}
	}
	switch name {
	case vma.Name, raw.Name:
		return name, nil
	case qcow2.Name:
		return "", usageError{fmt.Errorf("%s: qcow2 output is not supported yet; write raw and use qemu-img convert -O qcow2", dst)}
	}
	return "", usageError{fmt.Errorf("unknown output format %q (known: raw, vma)", name)}
}

func (c *convertCmd) Run(e *env) error {
	if c.Dst == "-" {
		return c.toStdout(e)
	}
	if c.NoCreate {
		return c.inPlace(e)
	}
	ofmt, err := outputFormat(c.Dst, c.OFmt)
	if err != nil {
		return err
	}
	if len(c.Config) > 0 && ofmt != vma.Name {
		return usageError{fmt.Errorf("-c adds configs to an archive; %s is %s", c.Dst, ofmt)}
	}
	comp := ""
	if ofmt == vma.Name {
		if comp, err = c.archiveCompression(c.Dst); err != nil {
			return err
		}
	} else if c.Compress != "" && c.Compress != "none" {
		return usageError{fmt.Errorf("--compress applies to archives; %s is %s", c.Dst, ofmt)}
	}
	wopts, err := c.writerOptions()
	if err != nil {
		return err
	}
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	src, err := c.openSrc(e)
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := createOutput(c.Dst, c.Overwrite)
	if err != nil {
		return err
	}
	defer out.discard()
	if ofmt == raw.Name {
		if src.ar != nil {
			err = restoreDevice(e, src, out, o, c.Progress)
		} else {
			err = copyImage(e, src, out, o, c.Progress)
		}
		if err != nil {
			return err
		}
		return out.commit()
	}
	if err := c.writeArchive(e, out, src, comp, wopts, o); err != nil {
		return err
	}
	return out.commit()
}

// writeArchive writes src as an archive to w, compressed if comp says so:
// an image as device --name (default drive-scsi0), an archive device
// repacked with its configs.
func (c *convertCmd) writeArchive(e *env, w io.Writer, src *source, comp string, wopts []vma.WriterOption, o pipeline.Options) error {
	aw, finish, err := archiveWriter(w, comp, c.Level)
	if err != nil {
		return err
	}
	if src.ar != nil {
		err = repackDevice(e, src, aw, c.Name, c.Config, wopts, c.Progress)
	} else {
		name := c.Name
		if name == "" {
			name = "drive-scsi0"
		}
		err = packImages(e, aw, []namedSource{{name, src}}, c.Config, wopts, o, c.Progress)
	}
	if err != nil {
		return err
	}
	return finish()
}

type namedSource struct {
	name string
	src  *source
}

// deviceSize is the size an image gets in an archive: QEMU, and so
// Proxmox, round a raw image up to whole 512-byte sectors.
func deviceSize(n int64) int64 { return (n + 511) &^ 511 }

// packImages writes the images as one archive, one device after another.
func packImages(e *env, out io.Writer, srcs []namedSource, configs []string, wopts []vma.WriterOption, o pipeline.Options, showProgress bool) error {
	w := vma.NewWriter(out, wopts...)
	for _, path := range configs {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := w.AddConfig(filepath.Base(path), data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	var disks []pipeline.Disk
	total := int64(0)
	for _, s := range srcs {
		id, err := w.AddDevice(s.name, deviceSize(s.src.img.Size()))
		if err != nil {
			return fmt.Errorf("%s: %w", s.src.name(), err)
		}
		disks = append(disks, pipeline.Disk{ID: id, Src: s.src.img})
		total += s.src.img.Size()
	}
	p := newProgress(e, showProgress, "packing", total)
	o.Progress = p.update
	if err := pipeline.Pack(e.ctx, w, disks, o); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	p.finish()
	return nil
}

// copyImage writes an image as a sparse raw file of the same size.
// sparseFile is a raw destination: sized first, then written where not zero.
type sparseFile interface {
	io.WriterAt
	Truncate(size int64) error
}

func copyImage(e *env, src *source, out sparseFile, o pipeline.Options, showProgress bool) error {
	if err := out.Truncate(src.img.Size()); err != nil {
		return err
	}
	p := newProgress(e, showProgress, "copying", src.img.Size())
	o.Progress = p.update
	if err := pipeline.Copy(e.ctx, out, src.img, o); err != nil {
		return fmt.Errorf("%s: %w", src.name(), err)
	}
	p.finish()
	return nil
}

// restoreDevice writes one archive device as a sparse raw file; the other
// devices are read and checked, not written.
func restoreDevice(e *env, src *source, out sparseFile, o pipeline.Options, showProgress bool) error {
	if err := out.Truncate(src.dev.Size); err != nil {
		return err
	}
	p := newProgress(e, showProgress, "restoring "+src.dev.Name, src.size)
	src.ar.Want(src.dev.ID)
	_, err := pipeline.Unpack(e.ctx, src.ar, map[int]io.WriterAt{src.dev.ID: out}, pipeline.UnpackOptions{Progress: p.update, Workers: o.Workers})
	if err != nil {
		return fmt.Errorf("%s: %w", src.name(), err)
	}
	p.finish()
	return nil
}

// repackDevice copies one device of an archive, and its configs, into a new
// archive, cluster by cluster in the order stored.
func repackDevice(e *env, src *source, out io.Writer, name string, configs []string, wopts []vma.WriterOption, showProgress bool) error {
	if name == "" {
		name = src.dev.Name
	}
	w := vma.NewWriter(out, wopts...)
	if len(configs) == 0 {
		for _, c := range src.ar.Header().Configs {
			if err := w.AddConfig(c.Name, c.Data); err != nil {
				return err
			}
		}
	}
	for _, path := range configs {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := w.AddConfig(filepath.Base(path), data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	id, err := w.AddDevice(name, src.dev.Size)
	if err != nil {
		return err
	}
	p := newProgress(e, showProgress, "repacking "+src.dev.Name, src.size)
	src.ar.Want(src.dev.ID)
	buf := make([]byte, vma.ClusterSize)
	for {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		ext, err := src.ar.NextExtent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", src.name(), err)
		}
		for _, c := range ext.Clusters {
			if c.Device.ID != src.dev.ID {
				continue
			}
			var data []byte
			if c.Mask != 0 {
				c.Expand(buf)
				data = buf
			}
			if err := w.WriteCluster(id, c.Index, data); err != nil {
				return err
			}
		}
		p.update(src.ar.Offset())
	}
	if err := w.Close(); err != nil {
		return err
	}
	p.finish()
	return nil
}

// toStdout writes DST "-": an archive source's device as raw, or an image as
// an archive, unless -O says otherwise.
func (c *convertCmd) toStdout(e *env) error {
	wopts, err := c.writerOptions()
	if err != nil {
		return err
	}
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	ofmt := c.OFmt
	if ofmt != "" {
		if ofmt, err = outputFormat("-", ofmt); err != nil {
			return err
		}
	}
	comp, err := c.archiveCompression("-")
	if err != nil {
		return err
	}
	src, err := c.openSrc(e)
	if err != nil {
		return err
	}
	defer src.Close()
	if ofmt == "" {
		ofmt = vma.Name
		if src.ar != nil {
			ofmt = raw.Name
		}
	}
	if ofmt != vma.Name && (comp != "" || len(c.Config) > 0) {
		return usageError{fmt.Errorf("--compress and -c apply to archives; -O is %s", ofmt)}
	}
	bw := bufio.NewWriterSize(e.stdout, 1<<20)
	switch {
	case ofmt == raw.Name && src.ar != nil:
		src.ar.Want(src.dev.ID)
		_, err = pipeline.Unpack(e.ctx, src.ar, nil, pipeline.UnpackOptions{Streams: map[int]io.Writer{src.dev.ID: bw}})
		if errors.Is(err, pipeline.ErrReorder) {
			err = fmt.Errorf("%w; a pipe needs them in order: restore to a file instead (vmaconv %s out.raw)", err, src.ref)
		}
	case ofmt == raw.Name:
		err = pipeline.Stream(e.ctx, bw, src.img, o)
	default:
		err = c.writeArchive(e, bw, src, comp, wopts, o)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", src.name(), err)
	}
	return bw.Flush()
}

// inPlace writes raw output into an existing DST (-n).
func (c *convertCmd) inPlace(e *env) error {
	if ofmt, err := outputFormat(c.Dst, c.OFmt); err != nil || ofmt != raw.Name {
		if err != nil {
			return err
		}
		return usageError{fmt.Errorf("-n writes raw output; %s is %s", c.Dst, ofmt)}
	}
	o, err := c.pipelineOptions()
	if err != nil {
		return err
	}
	src, err := c.openSrc(e)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(c.Dst, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("-n needs an existing destination: %w", err)
	}
	defer dst.Close()
	dstSize, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Dst, err)
	}
	var size int64
	if src.img != nil {
		size = src.img.Size()
	} else {
		size = src.dev.Size
	}
	if dstSize < size {
		return fmt.Errorf("%s holds %d bytes, the source needs %d", c.Dst, dstSize, size)
	}
	// Sequential writes of everything, zeros included: the target may
	// hold old data.
	w := bufio.NewWriterSize(io.NewOffsetWriter(dst, 0), 1<<20)
	if src.img != nil {
		err = pipeline.Stream(e.ctx, w, src.img, o)
	} else {
		src.ar.Want(src.dev.ID)
		_, err = pipeline.Unpack(e.ctx, src.ar, nil, pipeline.UnpackOptions{Streams: map[int]io.Writer{src.dev.ID: w}})
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = dst.Sync()
	}
	if err != nil {
		return fmt.Errorf("%s (written in part): %w", c.Dst, err)
	}
	return nil
}

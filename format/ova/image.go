package ova

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/text"
)

// open opens an OVA, or a bare OVF descriptor with its files beside it,
// for reading at random (Format.Open).
func open(f *os.File, o format.OpenOptions) (format.Image, error) {
	img, err := openFile(f, o, vmdkDriver)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

// openAt opens the OVA of size bytes in r (Format.OpenAt). A bare OVF
// descriptor names files beside it, which r has not: it is refused.
func openAt(r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
	return openPackage(r, size, o, vmdkDriver)
}

// errBareOVF is openPackage's error for a bare OVF descriptor.
var errBareOVF = fmt.Errorf("%w: a bare OVF descriptor, whose files are beside it: open the .ovf file itself", ErrUnsupported)

// openFile opens f: an OVF descriptor if it reads as one, else an OVA.
// The image takes f over.
func openFile(f *os.File, o format.OpenOptions, dd diskDriver) (*image, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w: not a regular file", f.Name(), format.ErrStreamOnly)
	}
	head, err := format.ReadHead(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	var img *image
	if isOVF(head) {
		img, err = openOVF(f, fi.Size(), o, dd)
	} else {
		img, err = openPackage(f, fi.Size(), o, dd)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	img.closers = append(img.closers, f.Close)
	return img, nil
}

// image is an opened OVA or OVF: its disks, read through the VMDKs, and
// the qemu-server.conf made from its hardware.
type image struct {
	h       *Hardware
	disks   []format.Disk
	configs []format.Config
	ctime   time.Time
	closers []func() error
	once    sync.Once
}

func (i *image) Disks() []format.Disk     { return i.disks }
func (i *image) Configs() []format.Config { return i.configs }

// Created implements format.Created: the time of the descriptor's tar
// header, zero if it has none.
func (i *image) Created() time.Time { return i.ctime }

// Close closes the disks' images and the file.
func (i *image) Close() error {
	var errs []error
	i.once.Do(func() {
		for k := len(i.closers) - 1; k >= 0; k-- {
			errs = append(errs, i.closers[k]())
		}
	})
	return errors.Join(errs...)
}

// HardwareOf returns the hardware of an image Format.Open or OpenAt
// opened, or nil for another image.
func HardwareOf(img format.Image) *Hardware {
	if i, ok := img.(*image); ok {
		return i.h
	}
	return nil
}

// pkg is what a package's descriptor and manifest say: the VM, and the
// digests of its files.
type pkg struct {
	ovf     []byte
	h       *Hardware
	digests map[string]digest // by file, as the manifest names it
	mfName  string
}

// readDescriptor parses a package's descriptor and manifest (nil if it
// has none) and checks the descriptor's digest.
func readDescriptor(ovfName string, ovf, mf []byte, mfName string, note func(string)) (*pkg, error) {
	p := &pkg{ovf: ovf, mfName: mfName, digests: map[string]digest{}}
	h, err := ParseOVF(ovf, note)
	if err != nil {
		return nil, memberError(ovfName, err)
	}
	p.h = h
	if mf != nil {
		ds, err := parseManifest(mf)
		if err != nil {
			return nil, memberError(mfName, err)
		}
		for _, d := range ds {
			p.digests[d.File] = d
		}
		if err := p.check(path.Base(ovfName), bytes.NewReader(ovf)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// memberError is err, found in member, as a *FormatError: its message
// without the sentinel's text, which it wraps.
func memberError(member string, err error) error {
	s := ErrCorrupt
	for _, e := range []error{ErrChecksum, ErrUnsupported} {
		if errors.Is(err, e) {
			s = e
		}
	}
	return &FormatError{Member: member, Offset: -1, Msg: strings.Replace(err.Error(), s.Error()+": ", "", 1), Err: s}
}

// check compares the digest of file (read from r) with the manifest's,
// if it has one; a mismatch is an error naming the file.
func (p *pkg) check(file string, r io.Reader) error {
	d, ok := p.digests[file]
	if !ok {
		return nil
	}
	h := digests[d.Algorithm].new()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("%s: %w", text.Printable(file), err)
	}
	if sum := h.Sum(nil); subtle.ConstantTimeCompare(sum, d.Sum) != 1 {
		return &FormatError{Member: file, Offset: -1, Err: ErrChecksum,
			Msg: fmt.Sprintf("its %s is %s, the manifest %s says %s", d.Algorithm, hex.EncodeToString(sum), text.Printable(p.mfName), hex.EncodeToString(d.Sum))}
	}
	return nil
}

// readMember reads a member's data, at most limit bytes.
func readMember(r io.ReaderAt, m member, limit int64, what string) ([]byte, error) {
	if !m.regular() {
		return nil, &FormatError{Member: m.Name, Offset: m.Header, Err: ErrCorrupt, Msg: "the " + what + " is " + m.kind()}
	}
	if m.Size > limit {
		return nil, &FormatError{Member: m.Name, Offset: m.Header, Err: ErrCorrupt,
			Msg: fmt.Sprintf("%d bytes, over the %d an %s may have", m.Size, limit, what)}
	}
	b := make([]byte, m.Size)
	if _, err := r.ReadAt(b, m.Offset); err != nil {
		return nil, fmt.Errorf("%s: %w", text.Printable(m.Name), err)
	}
	return b, nil
}

// openPackage opens the OVA of size bytes of r: its descriptor (the
// first member named *.ovf), its manifest (the .mf of the descriptor's
// name, else the only one), whose digests are checked (the descriptor's
// now, each disk's by its source's Check), and each disk from the member
// its file reference names. Members are found by their cleaned names
// (cleanMember): a reference must name a regular member that the
// archive holds once, within its directory; nothing outside the archive
// is ever read.
func openPackage(r io.ReaderAt, size int64, o format.OpenOptions, dd diskDriver) (*image, error) {
	note := noter(o)
	if head, err := format.ReadHead(io.NewSectionReader(r, 0, size)); err == nil && isOVF(head) {
		return nil, errBareOVF
	}
	members, err := listMembers(r, size)
	if err != nil {
		return nil, err
	}
	ovfAt := -1
	byName := map[string][]int{}
	for i, m := range members {
		if m.Clean != "" {
			byName[m.Clean] = append(byName[m.Clean], i)
		}
		if ovfAt < 0 && strings.HasSuffix(strings.ToLower(m.Name), ".ovf") {
			ovfAt = i
		}
	}
	if ovfAt < 0 {
		return nil, fmt.Errorf("%w: no OVF descriptor (a member named *.ovf) among its %d members", ErrNotOVA, len(members))
	}
	om := members[ovfAt]
	if om.Clean == "" {
		return nil, &FormatError{Member: om.Name, Offset: om.Header, Err: ErrCorrupt, Msg: "the descriptor's name leaves the archive"}
	}
	ovf, err := readMember(r, om, MaxOVFSize, "OVF descriptor")
	if err != nil {
		return nil, err
	}
	dir := path.Dir(om.Clean)
	var mf []byte
	mfName := ""
	mfAt := -1
	if ms := byName[strings.TrimSuffix(om.Clean, path.Ext(om.Clean))+".mf"]; len(ms) > 0 {
		mfAt = ms[0]
	} else {
		for i, m := range members {
			if strings.HasSuffix(strings.ToLower(m.Name), ".mf") {
				if mfAt >= 0 {
					mfAt = -2 // several: none is the descriptor's
					break
				}
				mfAt = i
			}
		}
	}
	if mfAt >= 0 {
		if mf, err = readMember(r, members[mfAt], MaxManifestSize, "manifest"); err != nil {
			return nil, err
		}
		mfName = members[mfAt].Name
	}
	p, err := readDescriptor(om.Name, ovf, mf, mfName, note)
	if err != nil {
		return nil, err
	}
	for file := range p.digests {
		if file == path.Base(om.Clean) {
			continue
		}
		if _, ok := byName[path.Join(dir, file)]; !ok {
			return nil, &FormatError{Member: mfName, Offset: -1, Err: ErrCorrupt,
				Msg: fmt.Sprintf("the manifest names %s, which the archive does not hold", text.Printable(file))}
		}
	}
	img := &image{h: p.h}
	if !om.MTime.IsZero() && om.MTime.Unix() > 0 {
		img.ctime = om.MTime
	}
	err = img.openDisks(p, note, func(d *Disk) (format.Source, func() error, error) {
		name, err := reference(d.File)
		if err != nil {
			return nil, nil, err
		}
		if rel := path.Clean(name); path.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, nil, fmt.Errorf("%w: the file reference %s leaves the archive", ErrCorrupt, text.Printable(d.File))
		}
		key := path.Clean(name)
		name = path.Join(dir, key)
		at := byName[name]
		switch {
		case len(at) == 0:
			return nil, nil, fmt.Errorf("%w: the archive holds no member %s", ErrCorrupt, text.Printable(name))
		case len(at) > 1:
			return nil, nil, fmt.Errorf("%w: the archive holds %d members named %s", ErrCorrupt, len(at), text.Printable(name))
		}
		m := members[at[0]]
		if !m.regular() {
			return nil, nil, &FormatError{Member: m.Name, Offset: m.Header, Err: ErrCorrupt, Msg: "the disk's file is " + m.kind()}
		}
		sec := io.NewSectionReader(r, m.Offset, m.Size)
		di, err := dd.format.OpenAt(sec, m.Size, o)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", text.Printable(m.Name), err)
		}
		src, err := oneDisk(di, m.Name)
		if err != nil {
			return nil, nil, err
		}
		check := func() error {
			return p.check(key, io.NewSectionReader(r, m.Offset, m.Size))
		}
		if _, ok := p.digests[key]; !ok && mf != nil {
			note(fmt.Sprintf("%s: not in the manifest %s: not checked", text.Printable(m.Name), text.Printable(mfName)))
		}
		return &source{Source: src, check: check}, di.Close, nil
	})
	if err != nil {
		img.Close()
		return nil, err
	}
	return img, nil
}

// openOVF opens the bare OVF descriptor f (size bytes) with its files
// beside it: the manifest of its name (.mf), if any, and each disk's
// file, which must stay within the descriptor's directory (not absolute,
// no "..", no symbolic link out of it) unless o.AllowBacking consents;
// each file followed out of it is told to o.Note.
func openOVF(f *os.File, size int64, o format.OpenOptions, dd diskDriver) (*image, error) {
	note := noter(o)
	if size > MaxOVFSize {
		return nil, fmt.Errorf("%w: the OVF descriptor is %d bytes, over the %d it may have", ErrCorrupt, size, MaxOVFSize)
	}
	ovf := make([]byte, size)
	if _, err := f.ReadAt(ovf, 0); err != nil {
		return nil, err
	}
	dir := filepath.Dir(f.Name())
	mfPath := strings.TrimSuffix(f.Name(), filepath.Ext(f.Name())) + ".mf"
	var mf []byte
	if mff, err := os.Open(mfPath); err == nil {
		mf, err = io.ReadAll(io.LimitReader(mff, MaxManifestSize+1))
		mff.Close()
		if err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	p, err := readDescriptor(filepath.Base(f.Name()), ovf, mf, filepath.Base(mfPath), note)
	if err != nil {
		return nil, err
	}
	img := &image{h: p.h}
	err = img.openDisks(p, note, func(d *Disk) (format.Source, func() error, error) {
		name, err := reference(d.File)
		if err != nil {
			return nil, nil, err
		}
		full, out, err := beside(dir, name, o.AllowBacking)
		if err != nil {
			return nil, nil, err
		}
		if out {
			note(fmt.Sprintf("following %s (%s), outside the descriptor's directory", text.Printable(d.File), text.Printable(full)))
		}
		df, err := os.Open(full)
		if err != nil {
			return nil, nil, err
		}
		di, err := dd.format.Open(df, o) // takes df over
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", text.Printable(full), err)
		}
		src, err := oneDisk(di, full)
		if err != nil {
			return nil, nil, err
		}
		check := func() error {
			cf, err := os.Open(full)
			if err != nil {
				return err
			}
			defer cf.Close()
			return p.check(filepath.ToSlash(filepath.Clean(name)), cf)
		}
		return &source{Source: src, check: check}, di.Close, nil
	})
	if err != nil {
		img.Close()
		return nil, err
	}
	return img, nil
}

// beside returns the path of the file name (a relative path, or an
// absolute one) that a descriptor in dir refers to, and whether it is
// out of dir (absolute, "..", or a symbolic link out, links resolved):
// that only with consent (allow).
func beside(dir, name string, allow bool) (string, bool, error) {
	full := name
	if !filepath.IsAbs(name) {
		full = filepath.Join(dir, name)
	}
	out := !filepath.IsLocal(name)
	if !out {
		realDir, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return "", false, err
		}
		real, err := filepath.EvalSymlinks(full)
		if err != nil {
			return "", false, err // the file does not exist: said as it is
		}
		rel, err := filepath.Rel(realDir, real)
		out = err != nil || !filepath.IsLocal(rel)
	}
	if out && !allow {
		return "", true, format.Unsupported("the file reference %s leaves the descriptor's directory; pass --allow-backing to read it", text.Printable(name))
	}
	return full, out, nil
}

// reference returns the path a file reference (ovf:href, a URI
// reference) names: percent-escapes decoded; a URI with a scheme (http:,
// file:) is refused.
func reference(href string) (string, error) {
	u, err := url.Parse(href)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: the file reference %s is not a URI", ErrCorrupt, text.Printable(href))
	case u.Scheme != "" || u.Host != "":
		return "", fmt.Errorf("%w: the file reference %s is a URL: vmaconv reads the package's own files", ErrUnsupported, text.Printable(href))
	case u.Path == "" || strings.ContainsRune(u.Path, 0):
		return "", fmt.Errorf("%w: the file reference %s names no file", ErrCorrupt, text.Printable(href))
	}
	return u.Path, nil
}

// noter returns o's Note, or one that drops notes.
func noter(o format.OpenOptions) func(string) {
	if o.Note != nil {
		return o.Note
	}
	return func(string) {}
}

// oneDisk returns the one disk of a disk image.
func oneDisk(img format.Image, name string) (format.Source, error) {
	ds := img.Disks()
	if len(ds) != 1 {
		img.Close()
		return nil, fmt.Errorf("%s: %w: %d disks in a disk's file", text.Printable(name), ErrUnsupported, len(ds))
	}
	return ds[0].Source, nil
}

// openDisks opens the disks of the package's VM with opener and makes
// the config: each disk as large as its file's disk, or as the OVF's
// capacity where that is larger (the disk VMware would make, said), an
// empty disk (no file) of zeros; then the qemu-server.conf that restores
// them (Hardware.Config).
func (i *image) openDisks(p *pkg, note func(string), opener func(d *Disk) (format.Source, func() error, error)) error {
	for k := range p.h.Disks {
		d := &p.h.Disks[k]
		if d.CDROM {
			continue
		}
		what := d.Device
		var src format.Source
		if d.File == "" {
			if d.Capacity <= 0 {
				return fmt.Errorf("%w: %s: an empty disk without a capacity", ErrCorrupt, what)
			}
			src = &source{Source: zeroSource(d.Capacity)}
		} else {
			s, closer, err := opener(d)
			if err != nil {
				return fmt.Errorf("%s (%s): %w", what, text.Printable(d.File), err)
			}
			i.closers = append(i.closers, closer)
			src = s
			size := s.Size()
			switch {
			case d.Capacity > size:
				note(fmt.Sprintf("%s: the OVF gives it %d bytes, its file %d: the rest reads as zeros, as VMware grows the disk", what, d.Capacity, size))
				src = &source{Source: format.Pad(s, d.Capacity), check: s.(*source).check}
			case d.Capacity >= 0 && d.Capacity < size:
				note(fmt.Sprintf("%s: the OVF gives it %d bytes, its file %d: the file's size is kept", what, d.Capacity, size))
			}
		}
		d.Capacity = src.Size()
		i.disks = append(i.disks, format.Disk{Name: d.Device, Source: src})
	}
	i.configs = []format.Config{{Name: vma.ConfigName, Data: p.h.Config(p.ovf)}}
	return nil
}

// source is a disk of a package: its file's disk, with the manifest's
// check (format.Checker). Its Close does nothing: the image closes what
// it opened.
type source struct {
	format.Source
	check func() error
	once  sync.Once
	err   error
}

func (s *source) Close() error { return nil }

// Region implements format.ZeroMapper: the file's disk's zero map, if it
// has one.
func (s *source) Region(start, length int64) (format.Region, error) {
	if z, ok := s.Source.(format.ZeroMapper); ok {
		return z.Region(start, length)
	}
	return format.Region{Start: start, Length: min(length, s.Size()-start)}, nil
}

// Check implements format.Checker: the file's digest against the
// manifest's (the file is read once, whole).
func (s *source) Check() error {
	if s.check == nil {
		return nil
	}
	s.once.Do(func() { s.err = s.check() })
	return s.err
}

// zeroSource is an empty disk: zeros.
type zeroSource int64

func (z zeroSource) Size() int64  { return int64(z) }
func (z zeroSource) Close() error { return nil }

func (z zeroSource) ReadAt(b []byte, off int64) (int, error) {
	if off >= int64(z) {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), int64(z)-off))
	clear(b[:n])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (z zeroSource) Region(start, length int64) (format.Region, error) {
	return format.Region{Start: start, Length: min(length, int64(z)-start), Zero: true}, nil
}

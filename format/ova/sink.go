package ova

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/internal/text"
)

// options are the options Create takes.
var options = []format.Option{
	{Name: "hwversion", Type: format.OptInt, Default: "14",
		Help: "VMware virtual hardware version of the VM (VirtualSystemType vmx-NN): 14 deploys on ESXi 6.7 and later",
		Check: func(v any) error {
			if n := v.(int64); n < 7 || n > 99 {
				return errors.New("want 7 to 99 (vmx-07 to vmx-99)")
			}
			return nil
		}},
}

// defaultHWVersion is the virtual hardware version of an OVF written
// (vmx-14: ESXi 6.7 and later deploy it).
const defaultHWVersion = 14

// diskDriver is the format each disk of an OVA is written in and read
// with (VMDK), and the options it is created with for a disk on a bus.
type diskDriver struct {
	format   format.Format
	settings func(bus Bus) []format.Setting
}

// Create starts an OVA of the given devices at d, from the config
// qemu-server.conf among o.Configs (a Proxmox VM's; without one, a VM of
// one CPU and 512 MiB): a tar archive of the OVF descriptor generated
// from the config (see Hardware.OVF), the manifest (SHA256 of the
// descriptor and of each disk), and a streamOptimized VMDK per disk,
// named after d.Path's base name (vm.ovf, vm.mf, vm-disk1.vmdk, …), in
// that order, as ovftool and open-vmdk's ova-compose lay out an OVA
// (DSP0243: the manifest right after the descriptor).
//
// A vmstate stream, the EFI disk and a TPM state are not written (o.Note
// says so, with what else the VM loses on the way: see fromConfig). The
// OVA is written to a file through internal/outfile, never to a stream
// (d.Stream is refused): each disk goes straight into its place in the
// archive, its tar header completed with its size once written, and the
// descriptor and manifest, whose room is reserved before the disks, are
// written at Commit. The disk writers are format.Sequential: each takes
// its bytes in order. Disks are laid out in order: a disk whose data
// comes while an earlier one is being written (an archive read as a
// stream interleaves its disks) is written as a VMDK into a temporary
// file beside d.Path until its turn, then copied in: only compressed
// data is ever staged, and only then. Memory is that of the VMDK
// writers at work (one, or one per interleaved disk), with 1 MiB of
// buffer each and 1 MiB to copy a staged disk in: independent of the
// disks' sizes (TestHugeDisk writes 1 TiB in a few MiB).
//
// The same devices and configs give the same bytes: the tar headers'
// times are the source archive's ctime (o.From), or 0.
func Create(d format.Dest, disks []format.Device, o format.CreateOptions) (format.Sink, error) {
	return create(d, disks, o, vmdkDriver)
}

func create(d format.Dest, disks []format.Device, o format.CreateOptions, dd diskDriver) (format.Sink, error) {
	switch {
	case d.Stream != nil:
		return nil, format.Unsupported("an OVA is written to a file, not a stream: each disk's tar header is completed once the disk is written (write vm.ova, then copy it)")
	case d.InPlace:
		return nil, format.Unsupported("an OVA is never written in place (-n)")
	case strings.HasSuffix(strings.ToLower(d.Path), ".ovf"):
		return nil, format.Unsupported("%s: vmaconv writes OVF packages as one .ova file; write %s.ova (tar xf unpacks it into the .ovf and its files)", d.Path, strings.TrimSuffix(d.Path, filepath.Ext(d.Path)))
	}
	note := func(string) {}
	if o.Note != nil {
		note = o.Note
	}
	hw := defaultHWVersion
	if o.Options.Has("hwversion") {
		hw = int(o.Options.Int("hwversion"))
	}
	var conf []byte
	for _, c := range o.Configs {
		if c.Name == vma.ConfigName {
			conf = c.Data
		} else {
			note(fmt.Sprintf("config %s is not exported: an OVA holds the VM's hardware, not Proxmox's files", text.Printable(c.Name)))
		}
	}
	stem := memberStem(d.Path)
	h, exp, err := fromConfig(conf, disks, stem, hw, note)
	if err != nil {
		return nil, format.Unsupported("%v", err)
	}
	if conf == nil {
		note(fmt.Sprintf("no %s: the OVF describes a VM of %d CPU and %d MiB of memory", vma.ConfigName, h.CPUs(), h.MemoryMiB))
	}
	s := &sink{h: h, dd: dd, dest: d, note: note, workers: o.Workers,
		ovfName: stem + ".ovf", mfName: stem + ".mf", writers: make([]format.DiskWriter, len(disks))}
	if o.From != nil && o.From.CTime.Unix() > 0 && o.From.CTime.Unix() < 1<<33 {
		s.mtime = o.From.CTime
	} else {
		s.mtime = time.Unix(0, 0)
	}
	for i, dev := range disks {
		k := exp[i]
		if k < 0 {
			s.writers[i] = discard{}
			continue
		}
		disk := &h.Disks[k]
		disk.Capacity = (dev.Size + 511) &^ 511
		disk.File = fmt.Sprintf("%s-disk%d.vmdk", stem, len(s.members)+1)
		m := &diskOut{sink: s, disk: k, dev: dev.Name, size: dev.Size, bus: h.Controllers[disk.Controller].Bus}
		s.members = append(s.members, m)
		s.writers[i] = m
	}
	// Room for the descriptor: as long as it can get with every file's
	// size filled in.
	for _, m := range s.members {
		h.Disks[m.disk].FileSize = math.MaxInt64
	}
	s.ovfSpace = int64(len(h.OVF()))
	s.mfSize = int64(len(manifestLine("SHA256", s.ovfName, make([]byte, sha256.Size))))
	for _, m := range s.members {
		s.mfSize += int64(len(manifestLine("SHA256", h.Disks[m.disk].File, make([]byte, sha256.Size))))
	}
	s.mfHeader = blockSize + padded(s.ovfSpace)
	s.pos = s.mfHeader + blockSize + padded(s.mfSize)
	if s.file, err = outfile.Create(d); err != nil {
		return nil, err
	}
	return s, nil
}

// memberStem returns the name an OVA's members start with: the base name
// of its path without the extension, as a safe file name, short enough
// for a ustar name ("-disk99.vmdk" after it).
func memberStem(p string) string {
	base := filepath.Base(p)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	s := format.SafeName(base)
	if len(s) > 80 {
		s = s[:80]
	}
	if s == "" || s == "_" {
		s = "vm"
	}
	return s
}

// padded rounds n up to whole tar blocks.
func padded(n int64) int64 { return (n + blockSize - 1) &^ (blockSize - 1) }

// sink writes an OVA. One mutex serialises its disks.
type sink struct {
	h       *Hardware
	dd      diskDriver
	dest    format.Dest
	note    func(string)
	workers int
	mtime   time.Time
	file    *outfile.File

	ovfName, mfName  string
	ovfSpace, mfSize int64 // bytes of the descriptor's and the manifest's members
	mfHeader         int64 // the manifest's header offset

	writers []format.DiskWriter // by device
	members []*diskOut          // the disks written, in order

	mu   sync.Mutex
	pos  int64 // where the next member's header goes
	cur  int   // the member being written into place, or next to be
	done bool
	err  error
}

func (s *sink) Disk(i int) format.DiskWriter { return s.writers[i] }

// Member states: a member's VMDK is written into place (direct), or
// staged into a temporary file until its turn.
const (
	waiting    = iota // no byte yet
	direct            // being written into place
	staged            // being written into a temporary file
	stagedDone        // staged whole, waiting for its turn
	written           // in place, its header completed
)

// diskOut is a disk written as a VMDK member of the OVA.
type diskOut struct {
	sink  *sink
	disk  int // index in sink.h.Disks
	dev   string
	size  int64
	bus   Bus
	got   int64 // bytes delivered
	state int

	vs     format.Sink       // the VMDK being written
	vd     format.DiskWriter // its disk
	out    *memberOut
	stage  *outfile.File
	header int64 // offset of its tar header (direct, written)
	sum    []byte
	length int64 // bytes of the VMDK (written)
}

// Sequential implements format.Sequential: a VMDK is written in order.
func (m *diskOut) Sequential() {}

// WriteAt implements io.WriterAt, for data at the disk's next byte.
func (m *diskOut) WriteAt(p []byte, off int64) (int, error) {
	return len(p), m.put(off, int64(len(p)), p)
}

// ZeroAt records that the n bytes at the disk's next byte are zero.
func (m *diskOut) ZeroAt(off, n int64) error { return m.put(off, n, nil) }

// put delivers n bytes at off: p, or zeros if p is nil.
func (m *diskOut) put(off, n int64, p []byte) error {
	s := m.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return errors.New("ova: write after Commit or Abort")
	}
	if s.err != nil {
		return s.err
	}
	if off != m.got || n > m.size-off {
		return fmt.Errorf("ova: %s: %d bytes at byte %d: the VMDK is written in order, its next byte is %d of %d", m.dev, n, off, m.got, m.size)
	}
	s.err = m.write(off, n, p)
	return s.err
}

func (m *diskOut) write(off, n int64, p []byte) error {
	s := m.sink
	if m.state == waiting {
		if err := s.start(m, s.members[s.cur] == m); err != nil {
			return err
		}
	}
	var err error
	if p == nil {
		err = m.vd.ZeroAt(off, n)
	} else {
		_, err = m.vd.WriteAt(p, off)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", m.dev, err)
	}
	m.got += n
	if m.got == m.size && m.state == staged {
		if err := m.finish(); err != nil {
			return err
		}
		m.state = stagedDone
	}
	return s.advance()
}

// start begins the VMDK of m: into place, or into a temporary file.
func (s *sink) start(m *diskOut, inPlace bool) error {
	var w io.WriterAt = s.file
	at := s.pos + blockSize
	if inPlace {
		m.state, m.header = direct, s.pos
	} else {
		f, err := outfile.Create(format.Dest{Path: s.dest.Path, Name: s.dest.Name, Overwrite: true, NoSync: true, TrackTemp: s.dest.TrackTemp})
		if err != nil {
			return fmt.Errorf("staging %s: %w", m.dev, err)
		}
		m.stage, m.state, w, at = f, staged, f, 0
	}
	m.out = newMemberOut(w, at)
	settings := s.dd.settings(m.bus)
	opts, err := format.CheckOptions(s.dd.format, settings)
	if err != nil {
		return fmt.Errorf("%s: %w", m.dev, err)
	}
	file := s.h.Disks[m.disk].File // also the name the VMDK's descriptor gives its extent
	vs, err := s.dd.format.Create(format.Dest{Path: file, Stream: m.out},
		[]format.Device{{Size: s.h.Disks[m.disk].Capacity}}, format.CreateOptions{Options: opts, Workers: s.workers, Note: s.note})
	if err != nil {
		return fmt.Errorf("%s: %w", m.dev, err)
	}
	m.vs, m.vd = vs, vs.Disk(0)
	return nil
}

// finish commits m's VMDK (its footer goes out) and flushes it.
func (m *diskOut) finish() error {
	if pad := m.sink.h.Disks[m.disk].Capacity - m.size; pad > 0 {
		if err := m.vd.ZeroAt(m.size, pad); err != nil { // whole sectors, as QEMU sees the disk
			return fmt.Errorf("%s: %w", m.dev, err)
		}
	}
	if err := m.vs.Commit(); err != nil {
		return fmt.Errorf("%s: %w", m.dev, err)
	}
	m.vs = nil
	if err := m.out.flush(); err != nil {
		return err
	}
	m.length, m.sum = m.out.n, m.out.h.Sum(nil)
	return nil
}

// advance moves the members along as far as they allow: the member in
// place, once whole, gets its header and the next one takes its place
// (one staged is copied in, and goes on in place if not whole yet).
func (s *sink) advance() error {
	for s.cur < len(s.members) {
		m := s.members[s.cur]
		switch m.state {
		case waiting:
			if m.size > 0 {
				return nil // it goes into place when its data comes
			}
			if err := s.start(m, true); err != nil {
				return err
			}
			continue
		case direct:
			if m.got < m.size {
				return nil
			}
			if err := m.finish(); err != nil {
				return err
			}
		case staged, stagedDone:
			if err := s.unstage(m); err != nil {
				return err
			}
			if m.state == staged {
				m.state = direct
				continue
			}
		}
		if err := s.place(m); err != nil {
			return err
		}
		m.state = written
		s.cur++
	}
	return nil
}

// unstage copies what m staged into place, after a header (completed
// later); m's VMDK goes on in place.
func (s *sink) unstage(m *diskOut) error {
	m.header = s.pos
	m.out.mu.Lock()
	defer m.out.mu.Unlock()
	if err := m.out.flushLocked(); err != nil {
		return err
	}
	n := m.out.n
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; {
		k := int(min(int64(len(buf)), n-off))
		if _, err := m.stage.File().ReadAt(buf[:k], off); err != nil {
			return m.stage.Err("reading back", err)
		}
		if _, err := s.file.WriteAt(buf[:k], s.pos+blockSize+off); err != nil {
			return err
		}
		off += int64(k)
	}
	m.out.retarget(s.file, s.pos+blockSize+n)
	err := m.stage.Abort()
	m.stage = nil
	return err
}

// place writes m's completed header and the zeros that pad its data to a
// whole block, and moves the next header past it.
func (s *sink) place(m *diskOut) error {
	h := tarHeader(s.h.Disks[m.disk].File, m.length, s.mtime)
	if _, err := s.file.WriteAt(h, m.header); err != nil {
		return err
	}
	end := m.header + blockSize + m.length
	if pad := padded(m.length) - m.length; pad > 0 {
		if _, err := s.file.WriteAt(make([]byte, pad), end); err != nil {
			return err
		}
	}
	s.h.Disks[m.disk].FileSize = m.length
	s.pos = m.header + blockSize + padded(m.length)
	return nil
}

// Commit writes the descriptor, the manifest and the end of the archive,
// and commits the file. It fails, leaving nothing, if a disk was not
// delivered whole.
func (s *sink) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return s.err
	}
	s.done = true
	if s.err == nil {
		s.err = s.commit()
	}
	if s.err != nil {
		s.abort()
	}
	return s.err
}

func (s *sink) commit() error {
	for _, m := range s.members {
		if m.got != m.size {
			return fmt.Errorf("ova: %s: got %d of %d bytes", m.dev, m.got, m.size)
		}
	}
	if err := s.advance(); err != nil {
		return err
	}
	ovf := s.h.OVF()
	if int64(len(ovf)) > s.ovfSpace {
		return fmt.Errorf("ova: the descriptor grew to %d bytes, past the %d reserved", len(ovf), s.ovfSpace)
	}
	if pad := s.ovfSpace - int64(len(ovf)); pad > 0 {
		// Trailing white space: the descriptor's reserved room.
		ovf = append(ovf, strings.Repeat(" ", int(pad-1))+"\n"...)
	}
	sum := sha256.Sum256(ovf)
	mf := manifestLine("SHA256", s.ovfName, sum[:])
	for _, m := range s.members {
		mf += manifestLine("SHA256", s.h.Disks[m.disk].File, m.sum)
	}
	if int64(len(mf)) != s.mfSize {
		return fmt.Errorf("ova: the manifest is %d bytes, not the %d reserved", len(mf), s.mfSize)
	}
	var head []byte
	head = append(head, tarHeader(s.ovfName, s.ovfSpace, s.mtime)...)
	head = append(head, ovf...)
	head = append(head, make([]byte, padded(s.ovfSpace)-s.ovfSpace)...)
	head = append(head, tarHeader(s.mfName, s.mfSize, s.mtime)...)
	head = append(head, mf...)
	head = append(head, make([]byte, padded(s.mfSize)-s.mfSize)...)
	if _, err := s.file.WriteAt(head, 0); err != nil {
		return err
	}
	if _, err := s.file.WriteAt(make([]byte, 2*blockSize), s.pos); err != nil { // the end of the archive
		return err
	}
	if err := s.file.Truncate(s.pos + 2*blockSize); err != nil {
		return err
	}
	return s.file.Commit()
}

// Abort removes the output and any staged disk.
func (s *sink) Abort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	return s.abort()
}

func (s *sink) abort() error {
	for _, m := range s.members {
		if m.vs != nil {
			m.vs.Abort()
			m.vs = nil
		}
		if m.stage != nil {
			m.stage.Abort()
			m.stage = nil
		}
	}
	return s.file.Abort()
}

// memberOut is where a VMDK's bytes go, in order: into place in the OVA
// or into a temporary file, buffered, and hashed for the manifest. Its
// target changes when a staged member is copied into place.
type memberOut struct {
	mu  sync.Mutex
	w   io.WriterAt
	at  int64 // where the buffer goes
	buf *bufio.Writer
	n   int64 // bytes written (buffered included)
	h   hash.Hash
}

// memberBuffer is how much of a VMDK is buffered before a write.
const memberBuffer = 1 << 20

func newMemberOut(w io.WriterAt, at int64) *memberOut {
	o := &memberOut{h: sha256.New()}
	o.retarget(w, at)
	return o
}

// retarget sends what comes next to w at offset at (the buffer is
// empty).
func (o *memberOut) retarget(w io.WriterAt, at int64) {
	o.w, o.at = w, at
	o.buf = bufio.NewWriterSize(io.NewOffsetWriter(w, at), memberBuffer)
}

func (o *memberOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.buf.Write(p)
	o.h.Write(p[:n])
	o.n += int64(n)
	return n, err
}

func (o *memberOut) flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.flushLocked()
}

func (o *memberOut) flushLocked() error { return o.buf.Flush() }

// discard takes the content of a device the OVA leaves out.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discard) ZeroAt(int64, int64) error              { return nil }
func (discard) OrderIndependent()                      {}

package formattest_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// The suite's own throwaway drivers: a container of one disk, "ROX1", its
// size (8 bytes, big-endian), then the disk's bytes XOR 0x5a. rox only
// reads it; wox only writes it.
const (
	magic  = "ROX1"
	header = 16
	key    = 0x5a
)

var rox = format.Format{
	Name:  "rox",
	Probe: func(head []byte) bool { return bytes.HasPrefix(head, []byte(magic)) },
	Open: func(f *os.File, _ format.OpenOptions) (format.Image, error) {
		h := make([]byte, header)
		if _, err := f.ReadAt(h, 0); err != nil || string(h[:4]) != magic {
			f.Close()
			return nil, fmt.Errorf("rox: not a rox file (%v)", err)
		}
		return format.SingleDisk(&roxSource{f: f, size: int64(binary.BigEndian.Uint64(h[8:]))}), nil
	},
}

var wox = format.Format{
	Name:       "wox",
	Extensions: []string{".rox"},
	Create: func(d format.Dest, disks []format.Device, _ format.CreateOptions) (format.Sink, error) {
		if len(disks) != 1 {
			return nil, format.Unsupported("wox holds one disk")
		}
		if d.Stream != nil || d.InPlace {
			return nil, format.Unsupported("wox writes new files only")
		}
		f, err := outfile.Create(d)
		if err != nil {
			return nil, err
		}
		h := make([]byte, header)
		copy(h, magic)
		binary.BigEndian.PutUint64(h[8:], uint64(disks[0].Size))
		if _, err := f.WriteAt(h, 0); err != nil {
			f.Abort()
			return nil, err
		}
		return &woxSink{f}, nil
	},
}

type roxSource struct {
	f    *os.File
	size int64
}

func (s *roxSource) Size() int64  { return s.size }
func (s *roxSource) Close() error { return s.f.Close() }

func (s *roxSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), s.size-off)
	n, err := s.f.ReadAt(p[:want], header+off)
	for i := range n {
		p[i] ^= key
	}
	if int64(n) == want && want < int64(len(p)) {
		return n, io.EOF
	}
	if err == io.EOF && int64(n) < want {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

type woxSink struct{ f *outfile.File }

func (s *woxSink) Disk(int) format.DiskWriter { return s }
func (s *woxSink) Commit() error              { return s.f.Commit() }
func (s *woxSink) Abort() error               { return s.f.Abort() }

func (s *woxSink) WriteAt(p []byte, off int64) (int, error) {
	b := make([]byte, len(p))
	for i, c := range p {
		b[i] = c ^ key
	}
	return s.f.WriteAt(b, header+off)
}

func (s *woxSink) ZeroAt(off, n int64) error {
	_, err := s.WriteAt(make([]byte, n), off)
	return err
}

// TestReadOnlyWriteOnly: the suite takes a format that only reads (as a
// source of TestSinks, and through TestSource) and one that only writes
// (its output read back by the format that probes it).
func TestReadOnlyWriteOnly(t *testing.T) {
	var r format.Registry
	r.Register(rox)
	r.Register(wox)
	want := testutil.GenDisk(3, 300000, "mixed")
	var b bytes.Buffer
	b.WriteString(magic + "\x00\x00\x00\x00")
	binary.Write(&b, binary.BigEndian, uint64(len(want)))
	for _, c := range want {
		b.WriteByte(c ^ key)
	}
	src := filepath.Join(t.TempDir(), "disk.rox")
	if err := os.WriteFile(src, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	img, err := rox.Open(f, format.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	formattest.TestSource(t, img.Disks()[0].Source, want)
	formattest.TestSinks(t, &r, []string{src}, want)
	if _, err := wox.Create(format.Dest{Path: "-", Stream: &b}, []format.Device{{Size: 1}}, format.CreateOptions{}); !errors.Is(err, format.ErrUnsupportedOption) {
		t.Errorf("wox to a stream: %v", err)
	}
}

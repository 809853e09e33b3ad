package output

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/remote"
)

// IsRemote reports whether dst names a remote object (s3://, https://,
// http://).
func IsRemote(dst string) bool { return format.IsURL(dst) }

// RemoteOptions configure the uploads of outputs to s3:// (tests); the
// zero value reads the process's environment.
var RemoteOptions remote.Options

// createRemote starts an output at the s3:// object d.Path: a format that
// writes a stream (Dest.Stream: an archive, a raw image) is uploaded as it
// is written, in bounded memory (remote.Upload); any other (qcow2, which
// seeks back to its tables) is written to a file in the temporary
// directory first, if its disks fit in the room there, and uploaded by
// Commit. Either way nothing appears under the key before Commit, and
// Abort (or a failure) aborts the upload.
func createRemote(fm format.Format, d format.Dest, devs []format.Device, o format.CreateOptions) (format.Sink, error) {
	if d.InPlace {
		return nil, format.Unsupported("-n writes into an existing file; %s is an object", d.Path)
	}
	if !strings.HasPrefix(strings.ToLower(d.Path), "s3://") {
		return nil, format.Unsupported("%s: vmaconv writes to s3:// only (an HTTP server takes no uploads)", d.Path)
	}
	up, err := remote.Create(context.Background(), d.Path, d.Overwrite, RemoteOptions)
	if err != nil {
		return nil, err
	}
	sd := d
	sd.Name, sd.Stream = up.Name(), up
	sink, err := fm.Create(sd, devs, o)
	if err == nil {
		return &uploadSink{Sink: sink, up: up}, nil
	}
	if !errors.Is(err, format.ErrUnsupportedOption) {
		up.Abort()
		return nil, err
	}
	// Not as a stream: staged in a file.
	s, serr := stage(fm, d, up, devs, o)
	if serr != nil {
		up.Abort()
		if errors.Is(serr, errNoStream) {
			return nil, fmt.Errorf("%w (%v)", serr, err)
		}
		return nil, serr
	}
	return s, nil
}

// uploadSink is a sink written as a stream into an upload.
type uploadSink struct {
	format.Sink
	up   *remote.Upload
	once sync.Once
	err  error
}

func (s *uploadSink) Commit() error {
	s.once.Do(func() {
		if s.err = s.Sink.Commit(); s.err != nil {
			s.up.Abort()
			return
		}
		s.err = s.up.Commit()
	})
	return s.err
}

func (s *uploadSink) Abort() error {
	s.once.Do(func() {
		s.Sink.Abort()
		s.up.Abort()
		s.err = errors.New("aborted")
	})
	return nil
}

var errNoStream = errors.New("cannot be written as a stream")

// stage creates the sink of fm in a file of the temporary directory, for
// an upload when it is committed. The disks must fit in the room the
// directory has (their size and 1 % more), which bounds what staging
// takes.
func stage(fm format.Format, d format.Dest, up *remote.Upload, devs []format.Device, o format.CreateOptions) (format.Sink, error) {
	dir := os.TempDir()
	need := int64(1 << 20)
	for _, dv := range devs {
		need += dv.Size + dv.Size/100
	}
	if free, ok := freeSpace(dir); ok && free < need {
		return nil, fmt.Errorf("%s: %s %w, and staging it needs up to %d MiB in %s, which has %d MiB free: set TMPDIR to a larger directory, or write a format that streams (raw, or an archive)",
			d.Path, fm.Name, errNoStream, need>>20, dir, free>>20)
	}
	var rb [6]byte
	rand.Read(rb[:])
	path := filepath.Join(dir, "vmaconv-stage-"+hex.EncodeToString(rb[:])+filepath.Ext(d.Path))
	fd := d
	fd.Path, fd.Name, fd.Stream, fd.Overwrite = path, up.Name(), nil, false
	sink, err := fm.Create(fd, devs, o)
	if err != nil {
		return nil, err
	}
	s := &stagedSink{Sink: sink, up: up, path: path}
	if d.TrackTemp != nil {
		s.untrack = d.TrackTemp(path)
	}
	return s, nil
}

// stagedSink is a sink written to a staged file, uploaded when committed.
type stagedSink struct {
	format.Sink
	up      *remote.Upload
	path    string
	untrack func()
	once    sync.Once
	err     error
}

func (s *stagedSink) Commit() error {
	s.once.Do(func() {
		defer s.remove()
		if s.err = s.Sink.Commit(); s.err != nil {
			s.up.Abort()
			return
		}
		f, err := os.Open(s.path)
		if err != nil {
			s.up.Abort()
			s.err = err
			return
		}
		defer f.Close()
		if _, err := io.CopyBuffer(s.up, f, make([]byte, 1<<20)); err != nil {
			s.up.Abort()
			s.err = fmt.Errorf("uploading %s: %w", s.up.Name(), err)
			return
		}
		s.err = s.up.Commit()
	})
	return s.err
}

func (s *stagedSink) Abort() error {
	s.once.Do(func() {
		s.Sink.Abort()
		s.up.Abort()
		s.remove()
		s.err = errors.New("aborted")
	})
	return nil
}

func (s *stagedSink) remove() {
	os.Remove(s.path)
	if s.untrack != nil {
		s.untrack()
	}
}

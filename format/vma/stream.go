package vma

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync/atomic"

	"github.com/vmaconv/vmaconv/format"
)

// OpenStream reads an archive from r as a format.Stream (Format's
// OpenStream): the header now, the extents once, in the order they are
// stored, through Unpack (Read) or Repack. An input that is not an archive
// fails with an error that matches both ErrNotVMA and
// format.ErrUnknownFormat.
func OpenStream(r io.Reader, _ format.OpenOptions) (format.Stream, error) {
	rd, err := NewReader(r)
	if errors.Is(err, ErrNotVMA) {
		return nil, notVMA{err}
	}
	if err != nil {
		return nil, err
	}
	s := &stream{r: rd}
	s.done.Store(rd.Offset())
	return s, nil
}

// notVMA is ErrNotVMA's error, seen as format.ErrUnknownFormat too.
type notVMA struct{ error }

func (e notVMA) Is(target error) bool { return target == format.ErrUnknownFormat }
func (e notVMA) Unwrap() error        { return e.error }

type stream struct {
	r    *Reader
	res  *Result      // of Read
	done atomic.Int64 // archive bytes read, as last reported
}

// ReaderOf returns the Reader behind a Stream opened by OpenStream, or nil.
func ReaderOf(s format.Stream) *Reader {
	if st, ok := s.(*stream); ok {
		return st.r
	}
	return nil
}

// ResultOf returns what the Read of a Stream opened by OpenStream saw, or
// nil before it (or for another Stream).
func ResultOf(s format.Stream) *Result {
	if st, ok := s.(*stream); ok {
		return st.res
	}
	return nil
}

func (s *stream) Close() error { return nil }

// Consumed implements format.Consumed: the archive bytes read so far, as
// Read's and Repack's progress last reported them (safe to call from
// their Progress callbacks, whatever goroutine reads the archive).
func (s *stream) Consumed() int64 { return s.done.Load() }

// progress returns a Progress callback that records the bytes read for
// Consumed, then calls p.
func (s *stream) progress(p func(int64)) func(int64) {
	return func(n int64) {
		s.done.Store(n)
		if p != nil {
			p(n)
		}
	}
}

func (s *stream) Devices() []format.Device {
	var ds []format.Device
	for _, d := range s.r.Header().Devices {
		ds = append(ds, format.Device{Name: d.Name, Size: d.Size})
	}
	return ds
}

func (s *stream) Configs() []format.Config { return configs(s.r.Header()) }

// Read unpacks the archive (Unpack), skipping the data of devices without
// a target where the input can seek (Reader.Want).
func (s *stream) Read(ctx context.Context, o format.StreamOptions) error {
	targets := map[int]io.WriterAt{}
	streams := map[int]io.Writer{}
	var ids []int
	for i, d := range s.r.Header().Devices {
		if i < len(o.At) && o.At[i] != nil {
			targets[d.ID] = o.At[i]
		}
		if i < len(o.InOrder) && o.InOrder[i] != nil {
			streams[d.ID] = o.InOrder[i]
		}
		if targets[d.ID] != nil || streams[d.ID] != nil {
			ids = append(ids, d.ID)
		}
	}
	s.r.Want(ids...)
	var err error
	s.res, err = Unpack(ctx, s.r, targets, UnpackOptions{Streams: streams, Progress: s.progress(o.Progress), Workers: o.Workers})
	s.done.Store(s.r.Offset())
	return err
}

// Repack implements format.Repacker (see Repack).
func (s *stream) Repack(ctx context.Context, dst format.Sink, disks []int, o format.RepackOptions) error {
	err := Repack(ctx, s.r, dst, deviceIDs(s.r.Header(), disks), RepackOptions{Workers: o.Workers, Progress: s.progress(o.Progress)})
	s.done.Store(s.r.Offset())
	return err
}

// deviceIDs returns the ids of the devices at the given indices of h's
// devices.
func deviceIDs(h *Header, disks []int) []int {
	var ids []int
	for _, i := range disks {
		ids = append(ids, h.Devices[i].ID)
	}
	return ids
}

// configs returns a copy of h's list of configs (sharing their data).
func configs(h *Header) []format.Config {
	return slices.Clone(h.Configs)
}

// Info implements format.Informer: what info shows of the archive.
func (s *stream) Info(st format.FileStat) format.Info { return s.r.Info(st) }

package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/vmaconv/vmaconv/format"
)

// Input is an opened input as Convert and Checksum read it (input.Input is
// one): its disks read at random through its Image, or once, in the
// input's order, as a Stream.
type Input interface {
	// Name names the input in messages; DiskName names its disk i (FILE,
	// or FILE:DEVICE in an archive).
	Name() string
	DiskName(i int) string
	// Devices returns the disks as the input presents them: a disk may
	// be larger than its Image's source (zero-padded to whole sectors).
	Devices() []format.Device
	// Image returns the input read at random, or nil; Stream the input
	// read as a stream, or nil.
	Image() format.Image
	Stream() format.Stream
	// Size returns the bytes of the input's file, or -1 if unknown, and
	// Consumed those a stream has read so far: what a stream's progress
	// counts.
	Size() int64
	Consumed() int64
}

// Parallel is implemented by inputs read best with more parallel readers
// than there are CPUs: a remote object, where every read is a round trip.
// Readers returns how many; Convert and Checksum use it when
// ConvertOptions.Workers is 0.
type Parallel interface {
	Readers() int
}

// readers returns the parallel readers of in: workers if set, else what
// in asks for, if it does.
func readers(in Input, workers int) int {
	if p, ok := in.(Parallel); ok && workers == 0 {
		return p.Readers()
	}
	return workers
}

// Selection is disks of one input (indices into its Devices), in the order
// a sink takes them.
type Selection struct {
	Input Input
	Disks []int
}

// ConvertOptions tune Convert and Checksum. The zero value means the
// defaults.
type ConvertOptions struct {
	// Workers is the number of parallel readers of an input read at
	// random, and of writers of a stream's disks (default: the number of
	// CPUs). The output is the same for any value.
	Workers int
	// Progress, if set, is called with the bytes done so far and the
	// total they count up to (-1 if unknown): the disks' bytes of an
	// input read at random; the file's bytes of a stream (the compressed
	// ones of a compressed input) and of an archive repacked. It is
	// called first with nothing done.
	Progress func(done, total int64)
	// Repack says the sink holds several disks (an archive): an input
	// that can (format.Repacker) writes into it in its own order, so that
	// the output depends only on the input. A sink with a
	// format.Sequential disk (an OVA's VMDKs) is not repacked into: its
	// disks take their bytes in order.
	Repack bool
}

// Convert writes the selected disks of the inputs to sink's disks 0, 1, …,
// in order, without committing the sink. An input read at random is
// copied disk after disk with parallel readers (Copy); a stream is read
// once, in its order, every selected disk written as its data comes: at
// its offsets, or, to a format.Sequential writer (standard output), in
// order; with o.Repack, an input that is a format.Repacker repacks itself
// (unless a disk of sink is format.Sequential).
// Errors name the input or the disk they come from.
func Convert(ctx context.Context, sink format.Sink, from []Selection, o ConvertOptions) error {
	if o.Repack && sequential(sink, from) {
		o.Repack = false
	}
	totals := make([]int64, len(from))
	total := int64(0)
	for k, s := range from {
		totals[k] = s.total(o.Repack)
		if totals[k] < 0 || total < 0 {
			total = -1
		} else {
			total += totals[k]
		}
	}
	report := func(base int64) func(int64) {
		return func(n int64) {
			if o.Progress != nil {
				o.Progress(base+n, total)
			}
		}
	}
	report(0)(0)
	base, first := int64(0), 0
	for k, s := range from {
		if err := s.convert(ctx, sink, first, o, report(base)); err != nil {
			return err
		}
		base += max(totals[k], 0)
		first += len(s.Disks)
	}
	return nil
}

// sequential reports whether a disk of sink that from writes is
// format.Sequential.
func sequential(sink format.Sink, from []Selection) bool {
	n := 0
	for _, s := range from {
		n += len(s.Disks)
	}
	for i := range n {
		if _, ok := sink.Disk(i).(format.Sequential); ok {
			return true
		}
	}
	return false
}

// repacker returns the input as a format.Repacker, if it is one.
func (s Selection) repacker() (format.Repacker, bool) {
	if st := s.Input.Stream(); st != nil {
		r, ok := st.(format.Repacker)
		return r, ok
	}
	r, ok := s.Input.Image().(format.Repacker)
	return r, ok
}

// total is what the selection's progress counts up to.
func (s Selection) total(repack bool) int64 {
	if _, ok := s.repacker(); ok && repack || s.Input.Stream() != nil {
		return s.Input.Size()
	}
	n := int64(0)
	for _, i := range s.Disks {
		n += s.Input.Devices()[i].Size
	}
	return n
}

// convert writes the selection to sink's disks first, first+1, …;
// progress gets the bytes done.
func (s Selection) convert(ctx context.Context, sink format.Sink, first int, o ConvertOptions, progress func(int64)) error {
	in := s.Input
	o.Workers = readers(in, o.Workers)
	if r, ok := s.repacker(); ok && o.Repack {
		ro := format.RepackOptions{Workers: o.Workers, Progress: progress}
		if in.Stream() != nil {
			ro.Progress = func(int64) { progress(in.Consumed()) }
		}
		var dst format.Sink = sink
		if first > 0 {
			dst = shifted{sink, first}
		}
		if err := r.Repack(ctx, dst, s.Disks, ro); err != nil {
			return fmt.Errorf("%s: %w", in.Name(), err)
		}
		return nil
	}
	if st := in.Stream(); st != nil {
		n := len(in.Devices())
		so := format.StreamOptions{At: make([]format.DiskWriter, n), InOrder: make([]io.Writer, n),
			Workers: o.Workers, Progress: func(int64) { progress(in.Consumed()) }}
		for k, i := range s.Disks {
			dw := sink.Disk(first + k)
			if _, ok := dw.(format.Sequential); ok {
				so.InOrder[i] = &seqWriter{w: dw}
			} else {
				so.At[i] = dw
			}
		}
		err := st.Read(ctx, so)
		if errors.Is(err, format.ErrReorder) {
			err = fmt.Errorf("%w; a pipe needs them in order: write a file instead, or read the archive from a file", err)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", in.Name(), err)
		}
		return nil
	}
	done := int64(0)
	for k, i := range s.Disks {
		src := source(in, i)
		base := done
		co := Options{Workers: o.Workers, Progress: func(n int64) { progress(base + n) }}
		if err := Copy(ctx, sink.Disk(first+k), src, co); err != nil {
			return fmt.Errorf("%s: %w", in.DiskName(i), err)
		}
		done += src.Size()
	}
	return nil
}

// source returns disk i of an input read at random, as it presents it.
func source(in Input, i int) format.Source {
	return format.Pad(in.Image().Disks()[i].Source, in.Devices()[i].Size)
}

// shifted is a sink seen from its disk first on.
type shifted struct {
	format.Sink
	first int
}

func (s shifted) Disk(i int) format.DiskWriter { return s.Sink.Disk(s.first + i) }

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

// Checksum returns the sha256 of the content of the disks sel of in, in
// order: of an input read at random, disk after disk with parallel readers
// (Hash); of a stream, every disk's in one pass. o.Repack is ignored.
func Checksum(ctx context.Context, in Input, sel []int, o ConvertOptions) ([][]byte, error) {
	o.Workers = readers(in, o.Workers)
	sums := make([][]byte, len(sel))
	total := Selection{in, sel}.total(false)
	progress := func(n int64) {
		if o.Progress != nil {
			o.Progress(n, total)
		}
	}
	progress(0)
	if st := in.Stream(); st != nil {
		hs := make([]hash.Hash, len(in.Devices()))
		ws := make([]io.Writer, len(hs))
		for i := range hs {
			hs[i] = sha256.New()
			ws[i] = hs[i]
		}
		err := st.Read(ctx, format.StreamOptions{InOrder: ws, Workers: o.Workers, Progress: func(int64) { progress(in.Consumed()) }})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Name(), err)
		}
		for k, i := range sel {
			sums[k] = hs[i].Sum(nil)
		}
		return sums, nil
	}
	done := int64(0)
	for k, i := range sel {
		src := source(in, i)
		base := done
		var err error
		if sums[k], err = Hash(ctx, src, Options{Workers: o.Workers, Progress: func(n int64) { progress(base + n) }}); err != nil {
			return nil, fmt.Errorf("%s: %w", in.DiskName(i), err)
		}
		done += src.Size()
	}
	return sums, nil
}

package input

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/remote"
)

// dict returns restart point i's history, read from the blobs.
func (x *Index) dict(i int) ([]byte, error) { return x.blob(x.dicts[i]) }

// sidecarIndex returns the object's sidecar index if it has one that
// fits, nil if it has none; one that cannot be used is said in a note.
// The index reads its blobs from the sidecar until close is called.
func (op *opener) sidecarIndex(ob *remote.Object) (x *Index, close func()) {
	if op.o.NoIndex || strings.ContainsAny(op.ref.Path, "?#") {
		return nil, func() {}
	}
	ix, err := remote.Open(op.ctx, op.ref.Path+IndexSuffix, op.o.Remote)
	if errors.Is(err, remote.ErrNotFound) {
		return nil, func() {}
	}
	return op.fitting(ob.Name()+IndexSuffix, ob.Name(), ix, err, ix.Size, func() { ix.Close() }, ob, ob.Size(), ob.ETag())
}

// localSidecar returns the sidecar index beside the archive file f (of
// size bytes) at path, if it has one that fits, nil if none.
func (op *opener) localSidecar(f *os.File, path string, size int64) (x *Index, close func()) {
	if op.o.NoIndex {
		return nil, func() {}
	}
	ix, err := os.Open(path + IndexSuffix)
	if err != nil {
		return nil, func() {}
	}
	ixSize := func() int64 {
		if fi, err := ix.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
		return -1 // not a regular file
	}
	return op.fitting(path+IndexSuffix, path, ix, nil, ixSize, func() { ix.Close() }, f, size, "")
}

// fitting reads the index in r (opened with err; size returns its size,
// -1 if it has none) and returns it if it was made for the archive ar of
// arSize bytes and ETag etag, with release to call when it is no longer
// read; any other is released and said in a note.
func (op *opener) fitting(name, archive string, r io.ReaderAt, err error, size func() int64, release func(), ar io.ReaderAt, arSize int64, etag string) (*Index, func()) {
	var x *Index
	if err == nil {
		if n := size(); n < 0 {
			err = errors.New("not a regular file of known size")
		} else if x, err = ReadIndex(r, n); err == nil {
			err = x.fits(ar, arSize, etag)
		}
		if err != nil {
			release()
		}
	}
	if err != nil {
		op.note("%s: %v: ignored (vmaconv index %s makes a new one)", name, err, archive)
		return nil, func() {}
	}
	return x, release
}

// openRestarts opens the zstd archive ra (of fm, size compressed bytes) at
// random through its index's restart points, the archive's opening reads
// served from the index's prereads. closers run when the Input closes.
func (op *opener) openRestarts(fm format.Format, ra io.ReaderAt, size int64, x *Index, closers ...func()) (*Input, error) {
	rr := compress.NewRestartReader(ra, x.Restarts, x.dict)
	pre := newPreread(rr, x)
	img, err := fm.OpenAt(pre, rr.Size(), op.openOptions())
	pre.done()
	if err != nil {
		rr.Close()
		return nil, err
	}
	return op.newInput(fm, img, compress.Zstd, size, append([]func(){func() { img.Close() }, func() { rr.Close() }}, closers...)...), nil
}

// preread serves the reads an index stored (Index.Preread) from its blobs,
// any other from r.
type preread struct {
	r     io.ReaderAt
	x     *Index
	order []int   // Preread's indices by offset
	at    []int64 // each preread's offset in its group's blob
	group []int   // each preread's group
	mu    sync.Mutex
	blobs map[int][]byte // groups read, the last few
	keys  []int
	off   bool
}

func newPreread(r io.ReaderAt, x *Index) *preread {
	p := &preread{r: r, x: x, blobs: map[int][]byte{}, at: make([]int64, len(x.Preread)), group: make([]int, len(x.Preread))}
	for gi, g := range x.groups {
		at := int64(0)
		for i := g.first; i < g.first+g.n; i++ {
			p.at[i], p.group[i] = at, gi
			at += x.Preread[i].Len
		}
	}
	p.order = make([]int, len(x.Preread))
	for i := range p.order {
		p.order[i] = i
	}
	sort.SliceStable(p.order, func(a, b int) bool { return x.Preread[p.order[a]].Off < x.Preread[p.order[b]].Off })
	return p
}

func (p *preread) ReadAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	if !p.off {
		pr := p.x.Preread
		k := sort.Search(len(p.order), func(k int) bool { return pr[p.order[k]].Off > off }) - 1
		if k >= 0 {
			i := p.order[k]
			if r := pr[i]; off+int64(len(b)) <= r.Off+r.Len {
				data, err := p.groupBytes(p.group[i])
				if err == nil {
					n := copy(b, data[p.at[i]+off-r.Off:])
					p.mu.Unlock()
					return n, nil
				}
				p.mu.Unlock()
				return 0, err
			}
		}
	}
	p.mu.Unlock()
	return p.r.ReadAt(b, off)
}

// groupBytes returns group g's reads' bytes. Called with mu held.
func (p *preread) groupBytes(g int) ([]byte, error) {
	if b, ok := p.blobs[g]; ok {
		return b, nil
	}
	b, err := p.x.blob(p.x.groups[g].blob)
	if err != nil {
		return nil, err
	}
	p.blobs[g] = b
	p.keys = append(p.keys, g)
	if len(p.keys) > 4 {
		delete(p.blobs, p.keys[0])
		p.keys = p.keys[1:]
	}
	return b, nil
}

// done stops serving prereads once the archive is open.
func (p *preread) done() {
	p.mu.Lock()
	p.off, p.blobs = true, nil
	p.mu.Unlock()
}

// blobWriter stores blobs, zstd-compressed, in a temporary file.
type blobWriter struct {
	mu  sync.Mutex
	x   *Index // whose area grows
	f   *os.File
	enc *zstd.Encoder
	end int64
}

func (w *blobWriter) put(raw []byte) (blobRef, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.enc.EncodeAll(raw, nil)
	b := blobRef{off: w.end, length: int64(len(c)), raw: int64(len(raw)), sum: sha256.Sum256(c)}
	if len(raw) == 0 {
		return blobRef{off: w.end, sum: sha256.Sum256(nil)}, nil
	}
	if _, err := w.f.WriteAt(c, w.end); err != nil {
		return b, fmt.Errorf("writing the index's blobs: %w", err)
	}
	w.end += b.length
	w.x.area = w.end
	return b, nil
}

// prereadRecorder records the reads opening an archive makes, with their
// bytes, into the index's preread groups.
type prereadRecorder struct {
	r   io.ReaderAt
	x   *Index
	w   *blobWriter
	mu  sync.Mutex
	buf []byte // the current group's bytes
	err error
}

func (t *prereadRecorder) ReadAt(p []byte, off int64) (int, error) {
	n, err := t.r.ReadAt(p, off)
	// A read cut short by the end is kept as far as it got: opened with
	// its size, the archive's reader asks for that much.
	if n > 0 && (n == len(p) || err == io.EOF) && n <= prereadGroup {
		t.mu.Lock()
		if len(t.x.Preread) < maxIndexReads && t.err == nil {
			if len(t.buf)+n > prereadGroup {
				t.flush()
			}
			t.buf = append(t.buf, p[:n]...)
			t.x.Preread = append(t.x.Preread, ReadSpan{off, int64(n)})
		}
		t.mu.Unlock()
	}
	return n, err
}

// flush stores the current group. Called with mu held.
func (t *prereadRecorder) flush() {
	first := 0
	if k := len(t.x.groups); k > 0 {
		first = t.x.groups[k-1].first + t.x.groups[k-1].n
	}
	if n := len(t.x.Preread) - first; n > 0 && t.err == nil {
		b, err := t.w.put(t.buf)
		t.err = err
		t.x.groups = append(t.x.groups, group{first: first, n: n, blob: b})
	}
	t.buf = t.buf[:0]
}

// buildRestarts makes the index of a zstd archive without a seek table:
// its restart points, and the reads opening it as fm makes, with their
// bytes. The archive is read once: fm opens it from the decompressed
// stream as BuildRestarts reads it (streamAt), if its reads go forward;
// if not, it is opened again afterwards through the restart points. The
// blobs go to a temporary file until the index is written.
func (op *opener) buildRestarts(ctx context.Context, fm format.Format, ra io.ReaderAt, size int64, etag string, every int64) (*Index, error) {
	id, err := identify(ra, size, etag)
	if err != nil {
		return nil, err
	}
	x := &id
	tmp, err := os.CreateTemp("", "vmaconv-index-*")
	if err != nil {
		return nil, err
	}
	x.tmp, x.blobs = tmp, tmp
	// Unnamed at once where the system allows it: a run killed leaves
	// nothing behind.
	x.tmpGone = os.Remove(tmp.Name()) == nil
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		x.Close()
		return nil, err
	}
	defer enc.Close()
	w := &blobWriter{x: x, f: tmp, enc: enc}

	st := newStreamAt()
	rec := &prereadRecorder{r: st, x: x, w: w}
	opened := make(chan error, 1)
	go func() {
		img, err := fm.OpenAt(rec, math.MaxInt64, op.openOptions())
		if err == nil {
			img.Close()
		}
		st.stop()
		opened <- err
	}()
	rs, err := compress.BuildRestarts(ctx, ra, size, compress.RestartOptions{Every: every, Stream: st}, func(p compress.Restart, dict []byte) error {
		b, err := w.put(dict)
		x.dicts = append(x.dicts, b)
		return err
	})
	st.end(err)
	openErr := <-opened
	if err != nil {
		x.Close()
		return nil, err
	}
	x.Restarts = rs
	if openErr == nil {
		rec.flush()
	} else {
		// Opened otherwise than front to back (or the size it was given
		// mattered): again, through the restart points.
		x.Preread, x.groups = nil, nil
		rr := compress.NewRestartReader(ra, rs, x.dict)
		defer rr.Close()
		rec = &prereadRecorder{r: rr, x: x, w: w}
		img, err := fm.OpenAt(rec, rs.Size, op.openOptions())
		if err != nil {
			x.Close()
			return nil, err
		}
		img.Close()
		rec.flush()
	}
	if rec.err != nil {
		x.Close()
		return nil, rec.err
	}
	return x, nil
}

// errBackwards is streamAt's answer to a read behind one before it.
var errBackwards = errors.New("a read behind the one before it")

// streamAt serves reads going forward from a stream written to it: a
// read waits for the bytes it needs; the bytes before the last read are
// dropped, a read before them fails (errBackwards). Memory is bounded by
// streamWindow: the writer waits while the reader has not caught up.
type streamAt struct {
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte // the stream from lo on
	lo      int64
	want    int64 // the last read's offset: what is before is dropped
	ended   bool
	err     error
	stopped bool // the reader is done: writes are dropped
}

const streamWindow = 8 << 20

func newStreamAt() *streamAt {
	s := &streamAt{}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// drop drops the bytes before want. Called with mu held.
func (s *streamAt) drop() {
	if k := min(s.want-s.lo, int64(len(s.buf))); k > 0 {
		s.buf = s.buf[k:] // not moved: an append past its capacity moves what is left
		s.lo += k
	}
}

func (s *streamAt) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 && !s.stopped {
		s.drop()
		if end := s.lo + int64(len(s.buf)); end < s.want { // before what the reader waits for
			k := min(int64(len(p)), s.want-end)
			s.lo += k
			p = p[k:]
			continue
		}
		if k := min(len(p), streamWindow-len(s.buf)); k > 0 { // what fits
			s.buf = append(s.buf, p[:k]...)
			p = p[k:]
			s.cond.Broadcast()
			continue
		}
		s.cond.Wait()
	}
	return n, nil
}

func (s *streamAt) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < s.lo || off < s.want {
		return 0, errBackwards
	}
	if int64(len(p)) > streamWindow {
		return 0, errors.New("a read larger than the window")
	}
	s.want = off
	s.cond.Broadcast()
	for s.lo+int64(len(s.buf)) < off+int64(len(p)) && !s.ended {
		s.drop()
		s.cond.Wait()
	}
	s.drop()
	n := 0
	if off-s.lo < int64(len(s.buf)) {
		n = copy(p, s.buf[off-s.lo:])
	}
	if n < len(p) {
		if s.err != nil {
			return n, s.err
		}
		return n, io.EOF
	}
	return n, nil
}

// end says the stream is over (err, if it failed).
func (s *streamAt) end(err error) {
	s.mu.Lock()
	s.ended, s.err = true, err
	if err == nil {
		s.err = nil
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// stop says the reader is done: the rest of the stream is dropped.
func (s *streamAt) stop() {
	s.mu.Lock()
	s.stopped, s.buf = true, nil
	s.cond.Broadcast()
	s.mu.Unlock()
}

package input

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/remote"
)

// A sidecar index (ARCHIVE.vmaidx, written by BuildIndex and WriteIndex)
// lists the reads opening an archive at random makes before its first
// byte of disk data: the header and every extent header of a plain
// archive, the seek table and the header frames of a seekable .vma.zst
// (the extent index of the one, the frame index of the other), in the
// order they are made. Opening a remote archive that has one fetches them
// in parallel ahead of the reader (a window of indexPrefetch reads)
// instead of one round trip after another, which is what opening costs
// over a network: a 16 GiB archive has some 4,400 extents.
//
// A .vma.zst without a seek table (what vzdump writes) has no frames to
// index: its index holds the zstd stream's restart points instead
// (compress.BuildRestarts: where decoding can start, each with the
// history it needs, stored compressed) and the reads opening the
// decompressed archive makes, with their bytes (the archive's header and
// extent headers, spread over all of it). With it the archive is read at
// random where it lies, locally or remote, without a seekable copy.
//
// An index is used only if it was made for this version of the archive:
// the same size, the same ETag (when both the index and the object have
// one), the same first and last 4 KiB; any other is ignored with a note.
// Its table (everything but the stored bytes) is bounded
// (maxIndexTable) and checked whole, field by field and against its
// sha256, before it is used; each stored blob is checked against its own
// sha256 when it is read. The reads of a plain or seekable archive are
// only fetched early: every byte its reader checks is still the
// archive's own. A restart point's history and a preread's bytes do
// become the archive's decompressed bytes, so an index made by someone
// else is trusted as far as the archive beside it is.
//
// The file: the magic line, a JSON header line, the table (the reads; per
// restart point its offsets, window, history length and blob; per group
// of prereads its blob and reads), the sha256 of all that, then the blobs
// (the histories and the prereads, each zstd-compressed, each at the
// offset its table entry gives).
const (
	IndexSuffix    = ".vmaidx"
	indexMagic     = "vmaconv index 2\n"
	maxIndexTable  = 64 << 20
	maxIndexReads  = 2 << 20
	maxIndexPoints = 1 << 20
	maxIndexRead   = compress.MaxSeekFrame + 64<<10 // a frame, compressed
	maxIndexHead   = 4096
	indexPrefetch  = 32
	indexEdge      = 4096
	prereadGroup   = 1 << 20 // the most bytes of prereads in one blob
)

// Index is a sidecar index: the archive it was made for and the reads to
// make early, or a zstd archive's restart points and prereads.
type Index struct {
	Size  int64      `json:"size"`
	ETag  string     `json:"etag,omitempty"`
	Head  string     `json:"head-sha256"`
	Tail  string     `json:"tail-sha256"`
	Reads []ReadSpan `json:"-"`
	// Restarts are the restart points of a zstd archive without a seek
	// table; nil for any other.
	Restarts *compress.Restarts `json:"-"`
	// Preread are the reads opening the decompressed archive makes (with
	// Restarts only).
	Preread []ReadSpan `json:"-"`

	dicts   []blobRef // per restart point
	groups  []group   // of prereads
	blobs   io.ReaderAt
	base    int64    // where blob offsets start in blobs
	area    int64    // the blob area's size
	tmp     *os.File // the blobs of an index being built
	tmpGone bool     // tmp was unnamed when made
}

// blobRef is a stored blob: length bytes at off in the blob area, whose
// sha256 is sum, holding raw bytes once decompressed.
type blobRef struct {
	off, length, raw int64
	sum              [sha256.Size]byte
}

// group is a blob of prereads: Preread[first:first+n].
type group struct {
	first, n int
	blob     blobRef
}

// ReadSpan is one read: Len bytes at Off.
type ReadSpan struct{ Off, Len int64 }

// indexHeader is the JSON header line.
type indexHeader struct {
	*Index
	Reads        int   `json:"reads"`
	Restarts     int   `json:"restarts,omitempty"`
	Decompressed int64 `json:"decompressed,omitempty"`
	Groups       int   `json:"preread-groups,omitempty"`
	Table        int64 `json:"table"`
	Blobs        int64 `json:"blobs"`
}

// table encodes the index's table: the reads (zig-zag varint of the
// offset's distance from the previous read's end, varint length), the
// restart points and the preread groups.
func (x *Index) table() []byte {
	var b []byte
	end := int64(0)
	for _, r := range x.Reads {
		b = binary.AppendVarint(b, r.Off-end)
		b = binary.AppendUvarint(b, uint64(r.Len))
		end = r.Off + r.Len
	}
	if x.Restarts != nil {
		prevEnd, prevU := int64(0), int64(0)
		for i, p := range x.Restarts.Points {
			b = binary.AppendUvarint(b, uint64(p.C-prevEnd))
			b = binary.AppendUvarint(b, uint64(p.U-prevU))
			b = binary.AppendUvarint(b, uint64(p.Last-p.C))
			b = binary.AppendUvarint(b, uint64(p.End-p.Last))
			b = append(b, p.WD)
			b = binary.AppendUvarint(b, uint64(p.Dict))
			b = x.dicts[i].append(b)
			prevEnd, prevU = p.End, p.U
		}
	}
	end = 0
	for _, g := range x.groups {
		b = binary.AppendUvarint(b, uint64(g.n))
		b = g.blob.append(b)
		for _, r := range x.Preread[g.first : g.first+g.n] {
			b = binary.AppendVarint(b, r.Off-end)
			b = binary.AppendUvarint(b, uint64(r.Len))
			end = r.Off + r.Len
		}
	}
	return b
}

func (r blobRef) append(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(r.off))
	b = binary.AppendUvarint(b, uint64(r.length))
	b = binary.AppendUvarint(b, uint64(r.raw))
	return append(b, r.sum[:]...)
}

// blobBytes returns the size of the blob area.
func (x *Index) blobBytes() int64 { return x.area }

// head encodes everything before the blobs.
func (x *Index) head() ([]byte, error) {
	t := x.table()
	h := indexHeader{Index: x, Reads: len(x.Reads), Groups: len(x.groups), Table: int64(len(t)), Blobs: x.blobBytes()}
	if x.Restarts != nil {
		h.Restarts, h.Decompressed = len(x.Restarts.Points), x.Restarts.Size
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := append([]byte(indexMagic), hdr...)
	b = append(b, '\n')
	b = append(b, t...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// MarshalBinary encodes the whole index, its blobs included.
func (x *Index) MarshalBinary() ([]byte, error) {
	b, err := x.head()
	if err != nil {
		return nil, err
	}
	if n := x.blobBytes(); n > 0 {
		blobs := make([]byte, n)
		if _, err := x.blobs.ReadAt(blobs, x.base); err != nil && err != io.EOF {
			return nil, err
		}
		b = append(b, blobs...)
	}
	return b, nil
}

// Close removes the blobs of an index BuildIndex made.
func (x *Index) Close() error {
	if x.tmp != nil {
		x.tmp.Close()
		if !x.tmpGone {
			os.Remove(x.tmp.Name())
		}
		x.tmp = nil
	}
	return nil
}

// ParseIndex decodes an index held in b (see ReadIndex).
func ParseIndex(b []byte) (*Index, error) {
	return ReadIndex(bytes.NewReader(b), int64(len(b)))
}

// ReadIndex reads the index of size bytes in r, checking everything but
// the blobs: its magic and checksum, the header's fields, every read
// (within the archive, at most maxIndexRead bytes, at most maxIndexReads
// of them), the restart points (compress.Restarts.Validate) and the
// prereads, and that the blobs fill the rest of it. Blobs are read from r
// when used and checked then.
func ReadIndex(r io.ReaderAt, size int64) (*Index, error) {
	start := make([]byte, min(size, int64(len(indexMagic)+maxIndexHead)))
	if _, err := r.ReadAt(start, 0); err != nil && err != io.EOF {
		return nil, err
	}
	if !bytes.HasPrefix(start, []byte(indexMagic)) {
		if bytes.HasPrefix(start, []byte("vmaconv index ")) {
			return nil, errors.New("an index of another version of vmaconv")
		}
		return nil, errors.New("not a vmaconv index")
	}
	rest := start[len(indexMagic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		return nil, errors.New("index header: no end of line in its first 4 KiB")
	}
	hdr := indexHeader{Index: &Index{}}
	dec := json.NewDecoder(bytes.NewReader(rest[:nl]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hdr); err != nil {
		return nil, fmt.Errorf("index header damaged: %v", err)
	}
	x := hdr.Index
	headLen := int64(len(indexMagic) + nl + 1)
	switch {
	case x.Size < 0:
		return nil, fmt.Errorf("index header: size %d", x.Size)
	case !isHexSum(x.Head) || !isHexSum(x.Tail):
		return nil, errors.New("index header: head-sha256 and tail-sha256 must be 64 hex digits")
	case hdr.Reads < 0 || hdr.Reads > maxIndexReads:
		return nil, fmt.Errorf("index header: %d reads (at most %d)", hdr.Reads, maxIndexReads)
	case hdr.Restarts < 0 || hdr.Restarts > maxIndexPoints || hdr.Groups < 0 || hdr.Groups > maxIndexPoints:
		return nil, fmt.Errorf("index header: %d restart points, %d preread groups (at most %d)", hdr.Restarts, hdr.Groups, maxIndexPoints)
	case len(x.ETag) > 1024:
		return nil, errors.New("index header: etag too long")
	case hdr.Table < 0 || hdr.Table > maxIndexTable:
		return nil, fmt.Errorf("index header: a table of %d bytes (at most %d MiB)", hdr.Table, maxIndexTable>>20)
	case hdr.Blobs < 0 || hdr.Blobs != size-headLen-hdr.Table-sha256.Size:
		return nil, fmt.Errorf("index of %d bytes: its header says %d bytes of table and %d of blobs", size, hdr.Table, hdr.Blobs)
	}
	body := make([]byte, headLen+hdr.Table+sha256.Size)
	if _, err := r.ReadAt(body, 0); err != nil && err != io.EOF {
		return nil, err
	}
	sum := body[len(body)-sha256.Size:]
	if s := sha256.Sum256(body[:len(body)-sha256.Size]); !bytes.Equal(s[:], sum) {
		return nil, errors.New("index checksum mismatch: damaged")
	}
	t := &tableReader{b: body[headLen : len(body)-sha256.Size]}
	x.Reads = make([]ReadSpan, 0, min(hdr.Reads, len(t.b)/2))
	end := int64(0)
	for i := range hdr.Reads {
		d, l := t.varint(), t.uvarint()
		if t.err != nil {
			return nil, fmt.Errorf("index read %d: %v", i, t.err)
		}
		if d < -x.Size || d > x.Size || end+d < 0 || l == 0 || l > maxIndexRead || end+d > x.Size-int64(l) {
			return nil, fmt.Errorf("index read %d: %d bytes at %d: outside the %d-byte archive or too large", i, l, end+d, x.Size)
		}
		r := ReadSpan{Off: end + d, Len: int64(l)}
		x.Reads = append(x.Reads, r)
		end = r.Off + r.Len
	}
	blob := func() blobRef {
		b := blobRef{off: int64(t.uvarint()), length: int64(t.uvarint()), raw: int64(t.uvarint())}
		copy(b.sum[:], t.take(sha256.Size))
		// A zstd frame of raw bytes is never much larger than raw: a
		// blob's length bounds what reading it allocates.
		if b.off > hdr.Blobs || b.length > hdr.Blobs-b.off || b.raw > compress.MaxRestartWindow || b.length == 0 && b.raw != 0 ||
			b.length > b.raw+b.raw>>7+1<<10 {
			t.fail(fmt.Errorf("a blob of %d bytes (%d decompressed) at %d of %d", b.length, b.raw, b.off, hdr.Blobs))
		}
		return b
	}
	if hdr.Restarts > 0 {
		x.Restarts = &compress.Restarts{Size: hdr.Decompressed, Points: make([]compress.Restart, 0, min(hdr.Restarts, len(t.b)/40))}
		prevEnd, prevU := int64(0), int64(0)
		for i := range hdr.Restarts {
			var p compress.Restart
			p.C = prevEnd + int64(t.uvarint())
			p.U = prevU + int64(t.uvarint())
			p.Last = p.C + int64(t.uvarint())
			p.End = p.Last + int64(t.uvarint())
			if wd := t.take(1); len(wd) == 1 {
				p.WD = wd[0]
			}
			p.Dict = int64(t.uvarint())
			d := blob()
			if t.err == nil && (p.C < prevEnd || p.U < prevU || p.Last < p.C || p.End < p.Last || d.raw != p.Dict) {
				t.fail(errors.New("offsets overflow or history and blob disagree"))
			}
			if t.err != nil {
				return nil, fmt.Errorf("index restart point %d: %v", i, t.err)
			}
			x.Restarts.Points = append(x.Restarts.Points, p)
			x.dicts = append(x.dicts, d)
			prevEnd, prevU = p.End, p.U
		}
		if err := x.Restarts.Validate(x.Size); err != nil {
			return nil, fmt.Errorf("index: %v", err)
		}
	} else if hdr.Decompressed != 0 {
		return nil, errors.New("index header: a decompressed size without restart points")
	}
	if hdr.Groups > 0 && x.Restarts == nil {
		return nil, errors.New("index: prereads without restart points")
	}
	end = 0
	for i := range hdr.Groups {
		n := int(t.uvarint())
		g := group{first: len(x.Preread), n: n, blob: blob()}
		if t.err == nil && (n <= 0 || n > maxIndexReads-len(x.Preread)) {
			t.fail(fmt.Errorf("%d reads", n))
		}
		total := int64(0)
		for range n {
			if t.err != nil {
				break
			}
			d, l := t.varint(), int64(t.uvarint())
			if t.err == nil && (end+d < 0 || d > x.Restarts.Size || l <= 0 || l > prereadGroup || end+d > x.Restarts.Size-l) {
				t.fail(fmt.Errorf("%d bytes at %d: outside the %d decompressed bytes or too large", l, end+d, x.Restarts.Size))
			}
			r := ReadSpan{Off: end + d, Len: l}
			x.Preread = append(x.Preread, r)
			end = r.Off + r.Len
			total += l
		}
		if t.err == nil && (total > prereadGroup || total != g.blob.raw) {
			t.fail(fmt.Errorf("%d bytes of reads, the blob holds %d", total, g.blob.raw))
		}
		if t.err != nil {
			return nil, fmt.Errorf("index preread group %d: %v", i, t.err)
		}
		x.groups = append(x.groups, g)
	}
	if t.err == nil && len(t.b) != 0 {
		return nil, fmt.Errorf("index: %d bytes after the table", len(t.b))
	}
	x.blobs, x.base, x.area = r, headLen+hdr.Table+sha256.Size, hdr.Blobs
	return x, nil
}

// tableReader decodes the table, keeping its first error.
type tableReader struct {
	b   []byte
	err error
}

func (t *tableReader) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *tableReader) varint() int64 {
	v, n := binary.Varint(t.b)
	if n <= 0 {
		t.fail(errors.New("a bad number"))
		return 0
	}
	t.b = t.b[n:]
	return v
}

func (t *tableReader) uvarint() uint64 {
	v, n := binary.Uvarint(t.b)
	if n <= 0 || v > 1<<62 {
		t.fail(errors.New("a bad number"))
		return 0
	}
	t.b = t.b[n:]
	return v
}

func (t *tableReader) take(n int) []byte {
	if len(t.b) < n {
		t.fail(errors.New("the table ends early"))
		return nil
	}
	b := t.b[:n]
	t.b = t.b[n:]
	return b
}

// blob reads and checks a stored blob.
func (x *Index) blob(b blobRef) ([]byte, error) {
	if b.raw == 0 {
		return nil, nil
	}
	c := make([]byte, b.length)
	if _, err := x.blobs.ReadAt(c, x.base+b.off); err != nil && err != io.EOF {
		return nil, fmt.Errorf("index: %w", err)
	}
	if sha256.Sum256(c) != b.sum {
		return nil, errors.New("index: a stored blob is damaged (checksum mismatch)")
	}
	d, err := blobDecoder.DecodeAll(c, make([]byte, 0, b.raw))
	if err != nil || int64(len(d)) != b.raw {
		return nil, fmt.Errorf("index: a stored blob does not decompress to its %d bytes", b.raw)
	}
	return d, nil
}

var blobDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(compress.MaxRestartWindow), zstd.WithDecodeAllCapLimit(true))

func isHexSum(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// identify returns the identity of the size bytes of r, as an index
// records it.
func identify(r io.ReaderAt, size int64, etag string) (Index, error) {
	x := Index{Size: size, ETag: etag}
	buf := make([]byte, min(indexEdge, size))
	if _, err := r.ReadAt(buf, 0); err != nil && err != io.EOF {
		return x, err
	}
	h := sha256.Sum256(buf)
	x.Head = hex.EncodeToString(h[:])
	if _, err := r.ReadAt(buf, size-int64(len(buf))); err != nil && err != io.EOF {
		return x, err
	}
	h = sha256.Sum256(buf)
	x.Tail = hex.EncodeToString(h[:])
	return x, nil
}

// recorder records the reads made through it.
type recorder struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads []ReadSpan
}

func (t *recorder) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > 0 && len(p) <= maxIndexRead {
		t.mu.Lock()
		if len(t.reads) < maxIndexReads {
			t.reads = append(t.reads, ReadSpan{off, int64(len(p))})
		}
		t.mu.Unlock()
	}
	return t.r.ReadAt(p, off)
}

// prefetcher serves the reads an index lists from fetches made ahead, in
// parallel, up to indexPrefetch of them; any other read goes to r. Reads
// are matched in the index's order: a read that is not the next one
// listed (nor one of the window) is a miss, and after maxMisses misses in
// a row the index is dropped.
type prefetcher struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads []ReadSpan
	next  int // first read not yet served
	asked int // first read not yet fetched
	slots map[int]*fetched
	miss  int
	off   bool // dropped or done
}

type fetched struct {
	b    []byte
	err  error
	done chan struct{}
}

const maxMisses = 64

func newPrefetcher(r io.ReaderAt, reads []ReadSpan) *prefetcher {
	p := &prefetcher{r: r, reads: reads, slots: map[int]*fetched{}}
	p.mu.Lock()
	p.fill()
	p.mu.Unlock()
	return p
}

// fill starts fetches up to the window. Called with mu held.
func (p *prefetcher) fill() {
	for !p.off && p.asked < len(p.reads) && p.asked < p.next+indexPrefetch {
		i := p.asked
		p.asked++
		f := &fetched{done: make(chan struct{})}
		p.slots[i] = f
		go func(s ReadSpan) {
			defer close(f.done)
			f.b = make([]byte, s.Len)
			n, err := p.r.ReadAt(f.b, s.Off)
			if n == len(f.b) {
				err = nil
			}
			f.b, f.err = f.b[:n], err
		}(p.reads[i])
	}
}

func (p *prefetcher) ReadAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	var f *fetched
	if !p.off {
		for i := p.next; i < min(p.asked, p.next+indexPrefetch); i++ {
			if s := p.reads[i]; s.Off == off && s.Len == int64(len(b)) {
				f = p.slots[i]
				for j := p.next; j <= i; j++ {
					delete(p.slots, j)
				}
				p.next, p.miss = i+1, 0
				p.fill()
				break
			}
		}
		if f == nil {
			if p.miss++; p.miss > maxMisses {
				p.drop()
			}
		}
	}
	p.mu.Unlock()
	if f == nil {
		return p.r.ReadAt(b, off)
	}
	<-f.done
	if f.err != nil || len(f.b) != len(b) {
		return p.r.ReadAt(b, off) // asked again: its own error, if any
	}
	return copy(b, f.b), nil
}

// drop stops using the index. Called with mu held.
func (p *prefetcher) drop() {
	p.off = true
	p.slots = map[int]*fetched{}
	p.reads = nil
}

// done stops using the index once the archive is open.
func (p *prefetcher) done() {
	p.mu.Lock()
	p.drop()
	p.mu.Unlock()
}

// sidecar returns the prefetcher of the object's sidecar index, or the
// object itself if it has none that fits (or one of restart points); a
// sidecar that cannot be used is said in a note.
func (op *opener) sidecar(ob *remote.Object) (io.ReaderAt, func()) {
	x, closeIx := op.sidecarIndex(ob)
	closeIx() // the reads are held in memory
	return prefetch(ob, x)
}

// prefetch returns the prefetcher of x's reads over ob, or ob if x is nil
// or has none (an index of restart points).
func prefetch(ob *remote.Object, x *Index) (io.ReaderAt, func()) {
	if x == nil || x.Restarts != nil {
		return ob, func() {}
	}
	p := newPrefetcher(ob, x.Reads)
	return p, p.done
}

// fits checks that the index was made for the size bytes of r (whose ETag,
// if known, is etag).
func (x *Index) fits(r io.ReaderAt, size int64, etag string) error {
	if x.Size != size {
		return fmt.Errorf("made for an archive of %d bytes, this one has %d", x.Size, size)
	}
	if x.ETag != "" && etag != "" && x.ETag != etag {
		return fmt.Errorf("made for ETag %s, the archive's is %s", x.ETag, etag)
	}
	id, err := identify(r, size, etag)
	if err != nil {
		return err
	}
	if id.Head != x.Head || id.Tail != x.Tail {
		return errors.New("made for another archive of the same size (its first or last 4 KiB differ)")
	}
	return nil
}

// BuildIndex opens the archive at path (a file or a remote object) at
// random, as a later Open would, and returns the index of the reads that
// takes. An archive that cannot be read at random (gzip, lzop, zstd
// without a seek table) has no index: the error says how to make one that
// can.
func BuildIndex(ctx context.Context, reg *format.Registry, path string, o Options) (*Index, error) {
	op := &opener{ctx: ctx, reg: reg, ref: format.Ref{Path: path}, o: o}
	var (
		ra   io.ReaderAt
		size int64
		etag string
		name = path
		head []byte
		err  error
	)
	if IsRemote(path) {
		ob, err := op.openObject()
		if err != nil {
			return nil, err
		}
		defer ob.Close()
		if !ob.RandomAccess() {
			return nil, fmt.Errorf("%s: %v: an index is of no use", ob.Name(), remote.ErrNoRanges)
		}
		ra, size, etag, name, head = ob, ob.Size(), ob.ETag(), ob.Name(), ob.Head()
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", path)
		}
		if head, err = format.ReadHead(f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ra, size = f, fi.Size()
	}
	comp := compress.Detect(head)
	var fm format.Format
	if comp != "" {
		fm, err = streamFormat(reg)
	} else {
		fm, err = reg.Detect(head)
	}
	if err != nil || !fm.Multi || fm.OpenAt == nil {
		return nil, fmt.Errorf("%s: not an archive vmaconv reads at random: an index is made for archives only", name)
	}
	rec := &recorder{r: ra}
	var img format.Image
	switch comp {
	case "":
		img, err = fm.OpenAt(rec, size, op.openOptions())
	case compress.Zstd:
		var sk *compress.Seekable
		sk, err = compress.OpenSeekable(rec, size)
		if errors.Is(err, compress.ErrNotSeekable) {
			// Its frames cannot be found without reading it whole: its
			// restart points are.
			x, err := op.buildRestarts(ctx, fm, ra, size, etag, o.IndexEvery)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return x, nil
		}
		if err == nil {
			defer sk.Close()
			img, err = fm.OpenAt(sk, sk.Size(), op.openOptions())
		}
	default:
		return nil, fmt.Errorf("%s: %s-compressed: it can only be read front to back, so it has no index; write it seekable (vmaconv convert %s %s --seekable)", name, comp, name, seekableName(name))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	img.Close()
	x, err := identify(ra, size, etag)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	x.Reads = rec.reads
	return &x, nil
}

// WriteIndex writes x next to the archive at path (path+IndexSuffix),
// replacing an older index: a file through a temporary file, an object
// with an upload; either appears whole or not at all. It returns the
// index's name.
func WriteIndex(ctx context.Context, path string, x *Index, o Options) (string, error) {
	head, err := x.head()
	if err != nil {
		return "", err
	}
	write := func(w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		if n := x.blobBytes(); n > 0 {
			_, err := io.Copy(w, io.NewSectionReader(x.blobs, x.base, n))
			return err
		}
		return nil
	}
	dst := path + IndexSuffix
	if IsRemote(path) {
		u, err := remote.Create(ctx, dst, true, o.Remote)
		if err != nil {
			return "", err
		}
		if err := write(u); err != nil {
			u.Abort()
			return "", err
		}
		return u.Name(), u.Commit()
	}
	f, err := outfile.Create(format.Dest{Path: dst, Overwrite: true})
	if err != nil {
		return "", err
	}
	if err := write(f); err != nil {
		f.Abort()
		return "", err
	}
	return dst, f.Commit()
}

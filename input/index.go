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
	"strings"
	"sync"

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
// Nothing in an index is trusted: it only says what to fetch early. Every
// byte the archive's reader checks is still the archive's own, read from
// it (a wrong entry costs a wasted fetch, and past a few misses the index
// is dropped). An index is used only if it was made for this version of
// the archive: the same size, the same ETag (when both the index and the
// object have one), the same first and last 4 KiB; any other is ignored
// with a note. Its size is bounded (maxIndexFile, maxIndexReads), and its
// checksum and every field are checked before it is used.
const (
	IndexSuffix   = ".vmaidx"
	indexMagic    = "vmaconv index 1\n"
	maxIndexFile  = 32 << 20
	maxIndexReads = 2 << 20
	maxIndexRead  = compress.MaxSeekFrame + 64<<10 // a frame, compressed
	maxIndexHead  = 4096
	indexPrefetch = 32
	indexEdge     = 4096
)

// Index is a sidecar index: the archive it was made for and the reads to
// make early.
type Index struct {
	Size  int64      `json:"size"`
	ETag  string     `json:"etag,omitempty"`
	Head  string     `json:"head-sha256"`
	Tail  string     `json:"tail-sha256"`
	Reads []ReadSpan `json:"-"`
}

// ReadSpan is one read: Len bytes at Off.
type ReadSpan struct{ Off, Len int64 }

// MarshalBinary encodes the index: the magic line, the JSON header line,
// the reads (zig-zag varint of the offset's distance from the previous
// read's end, varint length), and the sha256 of all that.
func (x *Index) MarshalBinary() ([]byte, error) {
	hdr, err := json.Marshal(struct {
		*Index
		Reads int `json:"reads"`
	}{x, len(x.Reads)})
	if err != nil {
		return nil, err
	}
	b := append([]byte(indexMagic), hdr...)
	b = append(b, '\n')
	end := int64(0)
	for _, r := range x.Reads {
		b = binary.AppendVarint(b, r.Off-end)
		b = binary.AppendUvarint(b, uint64(r.Len))
		end = r.Off + r.Len
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// ParseIndex decodes an index, checking everything: its size, magic and
// checksum, the header's fields, and every read (within the archive, at
// most maxIndexRead bytes, at most maxIndexReads of them).
func ParseIndex(b []byte) (*Index, error) {
	if len(b) > maxIndexFile {
		return nil, fmt.Errorf("index of %d bytes: more than the %d MiB an index may take", len(b), maxIndexFile>>20)
	}
	if len(b) < len(indexMagic)+sha256.Size || string(b[:len(indexMagic)]) != indexMagic {
		return nil, errors.New("not a vmaconv index")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return nil, errors.New("index checksum mismatch: damaged")
	}
	rest := body[len(indexMagic):]
	nl := bytes.IndexByte(rest[:min(len(rest), maxIndexHead)], '\n')
	if nl < 0 {
		return nil, errors.New("index header: no end of line in its first 4 KiB")
	}
	var hdr struct {
		Index
		Reads int `json:"reads"`
	}
	dec := json.NewDecoder(bytes.NewReader(rest[:nl]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hdr); err != nil {
		return nil, fmt.Errorf("index header: %v", err)
	}
	x := hdr.Index
	switch {
	case x.Size < 0:
		return nil, fmt.Errorf("index header: size %d", x.Size)
	case !isHexSum(x.Head) || !isHexSum(x.Tail):
		return nil, errors.New("index header: head-sha256 and tail-sha256 must be 64 hex digits")
	case hdr.Reads < 0 || hdr.Reads > maxIndexReads:
		return nil, fmt.Errorf("index header: %d reads (at most %d)", hdr.Reads, maxIndexReads)
	case len(x.ETag) > 1024:
		return nil, errors.New("index header: etag too long")
	}
	data := rest[nl+1:]
	x.Reads = make([]ReadSpan, 0, min(hdr.Reads, len(data)/2))
	end := int64(0)
	for i := range hdr.Reads {
		d, n := binary.Varint(data)
		if n <= 0 {
			return nil, fmt.Errorf("index read %d: bad offset", i)
		}
		data = data[n:]
		l, n := binary.Uvarint(data)
		if n <= 0 {
			return nil, fmt.Errorf("index read %d: bad length", i)
		}
		data = data[n:]
		if d < -x.Size || d > x.Size || end+d < 0 || l == 0 || l > maxIndexRead || end+d > x.Size-int64(l) {
			return nil, fmt.Errorf("index read %d: %d bytes at %d: outside the %d-byte archive or too large", i, l, end+d, x.Size)
		}
		r := ReadSpan{Off: end + d, Len: int64(l)}
		x.Reads = append(x.Reads, r)
		end = r.Off + r.Len
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("index: %d bytes after the last read", len(data))
	}
	return &x, nil
}

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
// object itself if it has none that fits; a sidecar that cannot be used is
// said in a note.
func (op *opener) sidecar(ob *remote.Object) (io.ReaderAt, func()) {
	none := func() {}
	if op.o.NoIndex || strings.ContainsAny(op.ref.Path, "?#") {
		return ob, none
	}
	name := ob.Name() + IndexSuffix
	ix, err := op.readSidecar(op.ref.Path + IndexSuffix)
	if errors.Is(err, remote.ErrNotFound) {
		return ob, none
	}
	if err == nil {
		err = ix.fits(ob, ob.Size(), ob.ETag())
	}
	if err != nil {
		op.note("%s: %v: ignored (vmaconv index %s makes a new one)", name, err, ob.Name())
		return ob, none
	}
	p := newPrefetcher(ob, ix.Reads)
	return p, p.done
}

// readSidecar reads and parses the index at url.
func (op *opener) readSidecar(url string) (*Index, error) {
	ob, err := remote.Open(op.ctx, url, op.o.Remote)
	if err != nil {
		return nil, err
	}
	defer ob.Close()
	if ob.Size() < 0 || ob.Size() > maxIndexFile {
		return nil, fmt.Errorf("an index of %d bytes: more than the %d MiB an index may take", ob.Size(), maxIndexFile>>20)
	}
	b := make([]byte, ob.Size())
	if _, err := ob.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return ParseIndex(b)
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
			return nil, fmt.Errorf("%s: %v: its frames cannot be found without reading it whole, so it has no index; write it seekable (vmaconv convert %s %s --seekable), which is read at random", name, err, name, seekableName(name))
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
	b, err := x.MarshalBinary()
	if err != nil {
		return "", err
	}
	dst := path + IndexSuffix
	if IsRemote(path) {
		u, err := remote.Create(ctx, dst, true, o.Remote)
		if err != nil {
			return "", err
		}
		if _, err := u.Write(b); err != nil {
			u.Abort()
			return "", err
		}
		return u.Name(), u.Commit()
	}
	f, err := outfile.Create(format.Dest{Path: dst, Overwrite: true})
	if err != nil {
		return "", err
	}
	if _, err := f.Write(b); err != nil {
		f.Abort()
		return "", err
	}
	return dst, f.Commit()
}

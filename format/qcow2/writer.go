package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// Compression types of a qcow2 image (header field compression_type).
const (
	Zlib = "zlib"
	Zstd = "zstd"
)

// Bits of L1 and L2 entries.
const (
	oflagCopied     = 1 << 63 // refcount is exactly 1
	oflagCompressed = 1 << 62
	offsetMask      = 0x00ff_ffff_ffff_fe00 // bits 9-55: host offset
	incompatZstd    = 1 << 3                // incompatible feature: compression type
	headerLength    = 112                   // v3 header with the compression type byte
	refcountOrder   = 4                     // 16-bit refcounts
)

// WriterOptions configure a Writer. The zero value writes an
// uncompressed image with 64 KiB clusters.
type WriterOptions struct {
	// ClusterSize is a power of two from 512 bytes to 2 MiB; 0 means
	// 64 KiB.
	ClusterSize int
	// Compress is "" (none), Zlib or Zstd, as qemu-img convert -c does
	// (-o compression_type=zstd for Zstd).
	Compress string
	// CompressionType is the compression the header records for
	// compressed clusters (qemu-img's compression_type): "" for Compress's,
	// or for Zlib if nothing is compressed. It can only be Compress's.
	CompressionType string
	// Level is the zstd level (1-22, default 3); zlib clusters are
	// compressed as QEMU reads them, with a 4 KiB window, at one level.
	Level int
	// Workers is the number of goroutines compressing clusters (default,
	// and at most: the number of CPUs).
	Workers int
}

// Writer writes a new qcow2 image (version 3, refcounts of 16 bits, no
// backing file) to an io.WriterAt, typically a new file.
//
// Data may arrive in any order, in pieces of any size. A cluster whose
// bytes are all zero is left unallocated; every other cluster is allocated
// at the end of the file when its data arrives, so the layout follows the
// order of writes (the same writes give the same file). Metadata is
// written last: an L2 table as soon as every byte of the 512 MiB (at
// 64 KiB clusters) it maps has been written or declared zero, the rest at
// Close, then the L1 table, refcounts, and finally the header, so that an
// interrupted write never looks like a valid image. Refcounts are exact,
// including those of compressed clusters that share a host cluster.
//
// Memory: one 64 KiB L2 table per 512 MiB range still being written (at
// most two or three when data arrives in order), plus, for compressed
// images, 64 KiB of refcounts per 2 GiB of output and the clusters being
// compressed (a few per worker).
//
// WriteAt and ZeroAt are safe for concurrent use (they are serialised);
// compression runs in parallel on Workers goroutines, and clusters are
// allocated in the order their writes were made. Errors are sticky.
type Writer struct {
	f     io.WriterAt
	size  int64 // virtual size: delivered bytes rounded up to 512
	given int64 // bytes that will be delivered
	cbits uint
	csize int64
	l2n   int64 // entries per L2 table
	comp  string
	ctype string // recorded compression type
	level int

	mu       sync.Mutex
	err      error
	closed   bool
	next     int64              // next free host byte
	l1       []uint64           // L1 entries of written L2 tables
	l2       map[int64][]uint64 // L2 tables not yet written, by L1 index
	cover    []int64            // bytes of each L1 range written or declared zero
	refPages map[int64][]uint16 // refcounts of host clusters, by refcount block, where compressed data lies

	// Uncompressed: clusters allocated but partly written.
	// Compressed: clusters being assembled from pieces.
	partial map[int64]*partialCluster

	// Compression: jobs go to the workers and, in the same order, to the
	// committer, which allocates and writes them one by one.
	jobs    chan *job
	ordered chan *job
	wg      sync.WaitGroup
	pool    sync.Pool // *[]byte of csize
}

type partialCluster struct {
	buf  *[]byte // compressed: the cluster being assembled
	got  int64
	host int64 // uncompressed: allocated host offset, or 0
}

type job struct {
	c     int64
	buf   *[]byte // the cluster, zero-padded to csize
	valid int64   // bytes delivered
	out   []byte  // compressed, or nil: store as is
	done  chan struct{}
}

// NewWriter returns a Writer of an image of size bytes (rounded up to
// whole 512-byte sectors, as QEMU sizes images) into f, which must read
// as zeros where it is not written (a new, empty file): zero 4 KiB blocks
// inside allocated clusters are not written, so they stay holes. Close
// completes the image; f is not closed.
func NewWriter(f io.WriterAt, size int64, o WriterOptions) (*Writer, error) {
	cbits, err := checkOptions(&o)
	if err != nil {
		return nil, err
	}
	if size < 0 || size > 1<<56 {
		return nil, fmt.Errorf("qcow2: image size %d out of range", size)
	}
	csize := int64(1) << cbits
	w := &Writer{
		f: f, size: (size + 511) &^ 511, given: size, cbits: cbits, csize: csize, l2n: csize / 8,
		comp: o.Compress, ctype: o.CompressionType, level: o.Level,
		next:     csize, // cluster 0: the header, written last
		l2:       map[int64][]uint64{},
		refPages: map[int64][]uint16{},
		partial:  map[int64]*partialCluster{},
	}
	w.pool.New = func() any { b := make([]byte, csize); return &b }
	l1n := (w.clusters() + w.l2n - 1) / w.l2n
	if l1n*8 > 32<<20 {
		return nil, fmt.Errorf("qcow2: image size %d needs an L1 table over 32 MiB (use larger clusters)", size)
	}
	w.l1 = make([]uint64, l1n)
	w.cover = make([]int64, l1n)
	if w.comp != "" {
		// Compressors beyond the CPUs only hold memory.
		n := min(o.Workers, runtime.NumCPU())
		if n <= 0 {
			n = runtime.NumCPU()
		}
		w.jobs = make(chan *job, 2*n)
		w.ordered = make(chan *job, 2*n)
		for range n {
			w.wg.Go(w.compressor)
		}
		w.wg.Go(w.committer)
	}
	return w, nil
}

// checkOptions validates o, fills in the default cluster size, and
// returns its log2.
func checkOptions(o *WriterOptions) (uint, error) {
	if o.ClusterSize == 0 {
		o.ClusterSize = 64 << 10
	}
	cbits := uint(0)
	for 1<<cbits < o.ClusterSize {
		cbits++
	}
	if 1<<cbits != o.ClusterSize || cbits < 9 || cbits > 21 {
		return 0, fmt.Errorf("qcow2: cluster size %d: want a power of two from 512 bytes to 2 MiB", o.ClusterSize)
	}
	switch o.Compress {
	case "", Zstd:
		if o.Level != 0 && (o.Compress == "" || o.Level < 1 || o.Level > 22) {
			return 0, fmt.Errorf("qcow2: compression level %d: zstd takes 1 to 22; uncompressed images none", o.Level)
		}
	case Zlib:
		if o.Level != 0 {
			return 0, errors.New("qcow2: zlib clusters have a fixed level (QEMU reads them with a 4 KiB window)")
		}
	default:
		return 0, fmt.Errorf("qcow2: compression %q: want zlib or zstd", o.Compress)
	}
	switch {
	case o.CompressionType == "":
		o.CompressionType = o.Compress
	case o.CompressionType != Zlib && o.CompressionType != Zstd:
		return 0, fmt.Errorf("qcow2: compression type %q: want zlib or zstd", o.CompressionType)
	case o.Compress != "" && o.CompressionType != o.Compress:
		return 0, fmt.Errorf("qcow2: clusters compressed with %s in an image whose compression type is %s: an image has one", o.Compress, o.CompressionType)
	}
	return cbits, nil
}

// clusters returns the number of guest clusters.
func (w *Writer) clusters() int64 { return (w.size + w.csize - 1) / w.csize }

// rangeLen returns the bytes L1 range i covers of the delivered size.
func (w *Writer) rangeLen(i int64) int64 {
	span := w.l2n * w.csize
	return min(w.given, (i+1)*span) - i*span
}

// valid returns the delivered bytes of guest cluster c.
func (w *Writer) valid(c int64) int64 { return min(w.given-c*w.csize, w.csize) }

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// WriteAt writes p at guest offset off.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if err := w.put(off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ZeroAt declares the n bytes at guest offset off zero.
func (w *Writer) ZeroAt(off, n int64) error { return w.put(off, n, nil) }

func (w *Writer) put(off, n int64, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("qcow2: write after Close")
	}
	if off < 0 || off+n > w.given {
		return fmt.Errorf("qcow2: write of %d bytes at %d outside the image (%d bytes)", n, off, w.given)
	}
	// Runs of whole non-zero clusters, uncompressed, are written with one
	// call: they get consecutive host clusters. run is p[runStart:pos].
	orig, pos, runStart := p, 0, -1
	var runHost int64
	flush := func() error {
		if runStart < 0 {
			return nil
		}
		// The file is new: blocks of zeros inside the clusters stay holes.
		err := zero.WriteNonZero(w.f, orig[runStart:pos], runHost)
		runStart = -1
		if err != nil {
			return fmt.Errorf("qcow2: writing data: %w", err)
		}
		return nil
	}
	for n > 0 {
		c := off / w.csize
		inner := off - c*w.csize
		k := min(n, w.csize-inner)
		var piece []byte
		if p != nil {
			piece = orig[pos : pos+int(k)]
		}
		whole := inner == 0 && k >= w.valid(c) && w.partial[c] == nil
		var err error
		switch {
		case w.comp != "":
			err = w.putCompressed(c, inner, k, piece, whole)
		case whole && (piece == nil || zero.IsZero(piece)):
			if err = flush(); err == nil {
				err = w.covered(c, k)
			}
		case whole:
			var host int64
			if host, err = w.mapCluster(c); err == nil {
				if runStart < 0 || runHost+int64(pos-runStart) != host {
					if err = flush(); err == nil {
						runStart, runHost = pos, host
					}
				}
			}
			if err == nil {
				err = w.covered(c, k)
			}
		default:
			if err = flush(); err == nil {
				err = w.putPiece(c, inner, k, piece)
			}
		}
		if err != nil {
			return w.fail(err)
		}
		off, n, pos = off+k, n-k, pos+int(k)
	}
	if err := flush(); err != nil {
		return w.fail(err)
	}
	return nil
}

// putPiece writes part of an uncompressed cluster: allocated when its
// first non-zero byte arrives.
func (w *Writer) putPiece(c, inner, k int64, piece []byte) error {
	pc := w.partial[c]
	if pc == nil {
		pc = &partialCluster{}
		w.partial[c] = pc
	}
	if pc.host == 0 && piece != nil && !zero.IsZero(piece) {
		host, err := w.mapCluster(c)
		if err != nil {
			return err
		}
		pc.host = host
	}
	if pc.host != 0 && piece != nil { // zeros stay holes of the new file
		if err := zero.WriteNonZero(w.f, piece, pc.host+inner); err != nil {
			return fmt.Errorf("qcow2: writing data: %w", err)
		}
	}
	pc.got += k
	if pc.got >= w.valid(c) {
		delete(w.partial, c)
	}
	return w.covered(c, k)
}

// putCompressed queues a cluster for compression once all of it is there.
func (w *Writer) putCompressed(c, inner, k int64, piece []byte, whole bool) error {
	valid := w.valid(c)
	if whole && (piece == nil || zero.IsZero(piece)) {
		return w.covered(c, k)
	}
	pc := w.partial[c]
	if pc == nil {
		pc = &partialCluster{buf: w.pool.Get().(*[]byte)}
		clear(*pc.buf)
		w.partial[c] = pc
	}
	if piece != nil {
		copy((*pc.buf)[inner:], piece)
	}
	pc.got += k
	if pc.got < valid {
		return nil
	}
	delete(w.partial, c)
	return w.submit(c, pc.buf, valid)
}

// submit hands a whole cluster to the compressors. Coverage is counted
// when it is committed, so that no L2 table is written before its data.
func (w *Writer) submit(c int64, buf *[]byte, valid int64) error {
	b := *buf
	if zero.IsZero(b[:valid]) {
		w.pool.Put(buf)
		return w.covered(c, valid)
	}
	j := &job{c: c, buf: buf, valid: valid, done: make(chan struct{})}
	// The committer takes w.mu; do not hold it while waiting for room.
	w.mu.Unlock()
	w.jobs <- j
	w.ordered <- j
	w.mu.Lock()
	return w.err
}

func (w *Writer) compressor() {
	var zw *flate.Writer
	var zs *zstd.Encoder
	var out bytes.Buffer
	for j := range w.jobs {
		in := (*j.buf)[:w.csize]
		var res []byte
		switch w.comp {
		case Zlib:
			// Raw deflate with matches at most 4 KiB back, as QEMU
			// compresses (deflateInit2 windowBits -12).
			out.Reset()
			var err error
			if zw == nil {
				zw, err = flate.NewWriterWindow(&out, 4096)
			} else {
				zw.Reset(&out)
			}
			if err == nil {
				if _, err = zw.Write(in); err == nil {
					err = zw.Close()
				}
			}
			if err == nil {
				res = out.Bytes()
			}
		case Zstd:
			if zs == nil {
				lvl := w.level
				if lvl == 0 {
					lvl = 3
				}
				zs, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(lvl)),
					zstd.WithWindowSize(max(1<<10, int(min(w.csize, 8<<20)))), zstd.WithLowerEncoderMem(true))
			}
			res = zs.EncodeAll(in, make([]byte, 0, w.csize))
		}
		if int64(len(res)) < w.csize {
			j.out = bytes.Clone(res)
		}
		close(j.done)
	}
	if zs != nil {
		zs.Close()
	}
}

// committer allocates and writes compressed clusters in the order their
// writes were made.
func (w *Writer) committer() {
	for j := range w.ordered {
		<-j.done
		w.mu.Lock()
		if w.err == nil {
			if err := w.commitJob(j); err != nil {
				w.fail(err)
			}
		}
		w.mu.Unlock()
		w.pool.Put(j.buf)
	}
}

func (w *Writer) commitJob(j *job) error {
	l2 := w.table(j.c)
	if l2 == nil {
		return fmt.Errorf("qcow2: guest cluster %d written after its table was", j.c)
	}
	e := &l2[j.c%w.l2n]
	if *e != 0 {
		return fmt.Errorf("qcow2: guest cluster %d written twice", j.c)
	}
	if j.out == nil { // does not compress: stored as is
		host := w.alloc(1)
		if _, err := w.f.WriteAt((*j.buf)[:w.csize], host); err != nil {
			return fmt.Errorf("qcow2: writing data: %w", err)
		}
		*e = uint64(host) | oflagCopied
		return w.covered(j.c, j.valid)
	}
	host := w.next
	x := 62 - (w.cbits - 8)
	if host+int64(len(j.out)) > 1<<x {
		return fmt.Errorf("qcow2: compressed data beyond byte %d, the most a %d-byte cluster's descriptor can address", int64(1)<<x, w.csize)
	}
	w.next += int64(len(j.out))
	if _, err := w.f.WriteAt(j.out, host); err != nil {
		return fmt.Errorf("qcow2: writing data: %w", err)
	}
	// The descriptor counts the 512-byte sectors the data touches beyond
	// the first; every host cluster they touch counts one reference.
	last := (host + int64(len(j.out)) - 1) >> 9
	sectors := last - host>>9
	*e = oflagCompressed | uint64(sectors)<<x | uint64(host)
	for hc := host >> w.cbits; hc <= (last<<9)>>w.cbits; hc++ {
		*w.ref(hc)++
	}
	return w.covered(j.c, j.valid)
}

// ref returns the refcount cell of host cluster hc, creating its page.
func (w *Writer) ref(hc int64) *uint16 {
	per := w.csize * 8 / (1 << refcountOrder)
	page := w.refPages[hc/per]
	if page == nil {
		page = make([]uint16, per)
		// Clusters allocated before the page existed hold no compressed
		// data: one reference each.
		for i := hc / per * per; i < hc && i < w.next>>w.cbits; i++ {
			page[i%per] = 1
		}
		w.refPages[hc/per] = page
	}
	return &page[hc%per]
}

// alloc returns the host offset of n new whole clusters.
func (w *Writer) alloc(n int64) int64 {
	host := (w.next + w.csize - 1) &^ (w.csize - 1)
	w.next = host + n*w.csize
	if len(w.refPages) > 0 {
		per := w.csize * 8 / (1 << refcountOrder)
		for hc := host >> w.cbits; hc < w.next>>w.cbits; hc++ {
			if page := w.refPages[hc/per]; page != nil {
				page[hc%per] = 1
			}
		}
	}
	return host
}

// table returns the in-memory L2 table for guest cluster c, or nil if it
// was written already.
func (w *Writer) table(c int64) []uint64 {
	i := c / w.l2n
	l2 := w.l2[i]
	if l2 == nil {
		if w.l1[i] != 0 || w.cover[i] >= w.rangeLen(i) {
			return nil
		}
		l2 = make([]uint64, w.l2n)
		w.l2[i] = l2
	}
	return l2
}

// mapCluster allocates a host cluster for guest cluster c.
func (w *Writer) mapCluster(c int64) (int64, error) {
	l2 := w.table(c)
	if l2 == nil {
		return 0, fmt.Errorf("qcow2: guest cluster %d written after its table was", c)
	}
	e := &l2[c%w.l2n]
	if *e != 0 {
		return 0, fmt.Errorf("qcow2: guest cluster %d written twice", c)
	}
	host := w.alloc(1)
	*e = uint64(host) | oflagCopied
	return host, nil
}

// covered counts k bytes of cluster c as delivered and writes the L2
// table of its range once the whole range is.
func (w *Writer) covered(c, k int64) error {
	i := c / w.l2n
	w.cover[i] += k
	if w.cover[i] > w.rangeLen(i) {
		return fmt.Errorf("qcow2: bytes of L1 range %d written twice", i)
	}
	if w.cover[i] == w.rangeLen(i) {
		return w.writeTable(i)
	}
	return nil
}

// writeTable writes the L2 table of L1 range i, if it maps anything.
func (w *Writer) writeTable(i int64) error {
	l2 := w.l2[i]
	if l2 == nil {
		return nil
	}
	delete(w.l2, i)
	buf := make([]byte, w.csize)
	for k, e := range l2 {
		binary.BigEndian.PutUint64(buf[8*k:], e)
	}
	host := w.alloc(1)
	if _, err := w.f.WriteAt(buf, host); err != nil {
		return fmt.Errorf("qcow2: writing an L2 table: %w", err)
	}
	w.l1[i] = uint64(host) | oflagCopied
	return nil
}

// Abort stops the compressors; the image is left incomplete (no header).
func (w *Writer) Abort() {
	w.mu.Lock()
	w.fail(errors.New("qcow2: write aborted"))
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.stopWorkers()
}

func (w *Writer) stopWorkers() {
	if w.jobs != nil {
		close(w.jobs)
		close(w.ordered)
		w.wg.Wait()
	}
}

// Close writes what is pending, the L2 tables, the L1 table, the
// refcounts and the header. Bytes never delivered read as zeros.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		defer w.mu.Unlock()
		return w.err
	}
	// Clusters still in pieces are complete as they are.
	for _, c := range slices.Sorted(maps.Keys(w.partial)) {
		pc := w.partial[c]
		delete(w.partial, c)
		if pc.buf != nil && w.err == nil {
			w.submit(c, pc.buf, w.valid(c))
		}
	}
	w.closed = true
	w.mu.Unlock()
	w.stopWorkers()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.finish(); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *Writer) finish() error {
	for _, i := range slices.Sorted(maps.Keys(w.l2)) {
		if err := w.writeTable(i); err != nil {
			return err
		}
	}
	be := binary.BigEndian
	var l1Off int64
	if n := int64(len(w.l1)); n > 0 {
		l1Off = w.alloc((n*8 + w.csize - 1) / w.csize)
		buf := make([]byte, n*8)
		for i, e := range w.l1 {
			be.PutUint64(buf[8*i:], e)
		}
		if _, err := w.f.WriteAt(buf, l1Off); err != nil {
			return fmt.Errorf("qcow2: writing the L1 table: %w", err)
		}
	}

	// Refcount blocks for every cluster, themselves and the table
	// included, then the table.
	used := w.alloc(0) >> w.cbits // clusters in use so far
	per := w.csize * 8 / (1 << refcountOrder)
	blocks := (used + per - 1) / per
	var tableClusters int64
	for {
		tableClusters = (blocks*8 + w.csize - 1) / w.csize
		if need := (used + blocks + tableClusters + per - 1) / per; need > blocks {
			blocks = need
			continue
		}
		break
	}
	first := w.alloc(blocks)
	tableOff := w.alloc(tableClusters)
	total := w.next >> w.cbits
	buf := make([]byte, w.csize)
	table := make([]byte, tableClusters*w.csize)
	for b := range blocks {
		clear(buf)
		page := w.refPages[b]
		for k := range per {
			hc := b*per + k
			if hc >= total {
				break
			}
			r := uint16(1)
			if page != nil {
				r = page[k]
			}
			be.PutUint16(buf[2*k:], r)
		}
		off := first + b*w.csize
		if _, err := w.f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("qcow2: writing refcounts: %w", err)
		}
		be.PutUint64(table[8*b:], uint64(off))
	}
	if _, err := w.f.WriteAt(table, tableOff); err != nil {
		return fmt.Errorf("qcow2: writing the refcount table: %w", err)
	}

	h := make([]byte, w.csize)
	copy(h, Magic[:])
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], uint32(w.cbits))
	be.PutUint64(h[24:], uint64(w.size))
	be.PutUint32(h[36:], uint32(len(w.l1)))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(tableOff))
	be.PutUint32(h[56:], uint32(tableClusters))
	if w.ctype == Zstd {
		be.PutUint64(h[72:], incompatZstd)
		h[104] = 1
	}
	be.PutUint32(h[96:], refcountOrder)
	be.PutUint32(h[100:], headerLength)
	// An end-of-extensions marker (type 0, length 0) follows: zeros.
	if _, err := w.f.WriteAt(h, 0); err != nil {
		return fmt.Errorf("qcow2: writing the header: %w", err)
	}
	return nil
}

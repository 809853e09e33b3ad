package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// File is what a SparseWriter writes to: a new, empty file (it reads as
// zeros where it is not written), which it sizes at Close.
type File interface {
	io.WriterAt
	Truncate(size int64) error
}

// SparseWriter writes a monolithicSparse image (version 1, or 2 with
// zeroed grains) laid out as QEMU lays one out (vmdk_init_extent): the
// header, the descriptor, the redundant grain directory and its grain
// tables, the grain directory and its grain tables, then 64 KiB grains,
// allocated at the end of the file in the order their data arrives (the
// same writes give the same file). Grains of zeros stay unallocated, and
// zero 4 KiB blocks inside a grain are not written, so they stay holes of
// the file. A grain table is written (both copies) once every byte of the
// 32 MiB it maps has been written or declared zero; a table that maps no
// grain stays a hole, which reads as an empty table. The directories, the
// descriptor and finally the header are written at Close, so that an
// interrupted write never looks like a valid image.
//
// Memory: one 2 KiB grain table per 32 MiB range still being written (one
// or two when data comes in order) and the grains being assembled from
// pieces; the directories are written in 4 KiB pieces.
//
// WriteAt and ZeroAt are safe for concurrent use (they are serialised);
// errors are sticky.
type SparseWriter struct {
	f     File
	size  int64 // virtual size: delivered bytes rounded up to 512
	given int64
	h     *header
	desc  string
	gdSec int64 // sectors of each grain directory
	count int64 // grain tables

	mu      sync.Mutex
	err     error
	closed  bool
	next    int64                 // next free byte for a grain
	partial map[int64]*pieceGrain // grains written in pieces, by grain
	live    map[int64]*liveTable  // grain tables not yet written
}

type pieceGrain struct {
	host int64 // 0 until its first non-zero byte
	got  int64
}

// NewSparseWriter starts a monolithicSparse image of a disk of size bytes
// (rounded up to whole 512-byte sectors) in f.
func NewSparseWriter(f File, size int64, o WriterOptions) (*SparseWriter, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("vmdk: disk size %d out of range (at most %d)", size, int64(MaxSize))
	}
	w := &SparseWriter{f: f, size: (size + sector - 1) &^ (sector - 1), given: size,
		partial: map[int64]*pieceGrain{}, live: map[int64]*liveTable{}}
	grains := (w.size/sector + grainSectors - 1) / grainSectors
	w.count = (grains + gtEntries - 1) / gtEntries
	w.gdSec = (w.count*4 + sector - 1) / sector
	rgd := int64(1 + descSectors)
	gd := rgd + w.gdSec + gtSectors*w.count
	first := (gd + w.gdSec + gtSectors*w.count + grainSectors - 1) / grainSectors * grainSectors
	w.h = &header{version: 1, flags: flagNLDetect | flagRGD, capacity: uint64(w.size / sector), granularity: grainSectors,
		descOffset: 1, descSize: descSectors, gtes: gtEntries, rgdOffset: uint64(rgd), gdOffset: uint64(gd), grainOffset: uint64(first)}
	if o.ZeroedGrain {
		w.h.version, w.h.flags = 2, w.h.flags|flagZeroGrain
	}
	w.desc = descriptorText(MonolithicSparse, w.size, o)
	if len(w.desc) > descSectors*sector {
		return nil, fmt.Errorf("vmdk: a descriptor of %d bytes does not fit in %d sectors", len(w.desc), descSectors)
	}
	w.next = first * sector
	return w, nil
}

func (w *SparseWriter) valid(g int64) int64 { return min(w.given-g*grainBytes, grainBytes) }

func (w *SparseWriter) rangeLen(t int64) int64 {
	span := int64(gtEntries * grainBytes)
	return min(w.given, (t+1)*span) - t*span
}

func (w *SparseWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// WriteAt writes p at disk offset off.
func (w *SparseWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := w.put(off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ZeroAt declares the n bytes at disk offset off zero.
func (w *SparseWriter) ZeroAt(off, n int64) error { return w.put(off, n, nil) }

func (w *SparseWriter) put(off, n int64, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.err != nil:
		return w.err
	case w.closed:
		return errors.New("vmdk: write after Close")
	case off < 0 || n < 0 || off+n > w.given:
		return fmt.Errorf("vmdk: write of %d bytes at %d outside the disk (%d bytes)", n, off, w.given)
	}
	// Runs of whole grains of data get consecutive places in the file and
	// are written with one call: p[runStart:pos], at runHost.
	pos, runStart := int64(0), int64(-1)
	var runHost int64
	flush := func() error {
		if runStart < 0 {
			return nil
		}
		err := zero.WriteNonZero(w.f, p[runStart:pos], runHost)
		runStart = -1
		if err != nil {
			return fmt.Errorf("vmdk: writing grains: %w", err)
		}
		return nil
	}
	for n > 0 {
		g := off / grainBytes
		inner := off - g*grainBytes
		k := min(n, grainBytes-inner)
		if p == nil && inner == 0 && len(w.partial) == 0 && n >= grainBytes {
			k = n / grainBytes * grainBytes // whole grains of zeros, at once
		}
		var piece []byte
		if p != nil {
			piece = p[pos : pos+k]
		}
		whole := inner == 0 && k >= w.valid(g) && w.partial[g] == nil
		var err error
		switch {
		case whole && (piece == nil || zero.IsZero(piece)):
			if err = flush(); err == nil {
				err = w.covered(off, k)
			}
		case whole:
			var host int64
			if host, err = w.alloc(g); err == nil {
				if runStart < 0 || runHost+pos-runStart != host {
					if err = flush(); err == nil {
						runStart, runHost = pos, host
					}
				}
			}
			if err == nil {
				err = w.covered(off, k)
			}
		default:
			if err = flush(); err == nil {
				err = w.putPiece(g, inner, k, piece)
			}
		}
		if err != nil {
			return w.fail(err)
		}
		off, n, pos = off+k, n-k, pos+k
	}
	if err := flush(); err != nil {
		return w.fail(err)
	}
	return nil
}

// putPiece writes part of grain g, allocated at its first non-zero byte.
func (w *SparseWriter) putPiece(g, inner, k int64, piece []byte) error {
	pg := w.partial[g]
	if pg == nil {
		pg = &pieceGrain{}
		w.partial[g] = pg
	}
	if pg.host == 0 && piece != nil && !zero.IsZero(piece) {
		host, err := w.alloc(g)
		if err != nil {
			return err
		}
		pg.host = host
	}
	if pg.host != 0 && piece != nil {
		if err := zero.WriteNonZero(w.f, piece, pg.host+inner); err != nil {
			return fmt.Errorf("vmdk: writing a grain: %w", err)
		}
	}
	if pg.got += k; pg.got >= w.valid(g) {
		delete(w.partial, g)
	}
	return w.covered(g*grainBytes+inner, k)
}

// alloc places grain g at the end of the file.
func (w *SparseWriter) alloc(g int64) (int64, error) {
	if (w.next+grainBytes)/sector > 1<<32-1 {
		return 0, fmt.Errorf("vmdk: the image grows past 2 TiB, the most a grain table entry addresses")
	}
	lt := w.table(g / gtEntries)
	if lt.e == nil {
		lt.e = make([]uint32, gtEntries)
	}
	e := &lt.e[g%gtEntries]
	if *e != 0 {
		return 0, fmt.Errorf("vmdk: grain %d written twice", g)
	}
	host := w.next
	w.next += grainBytes
	*e = uint32(host / sector)
	return host, nil
}

func (w *SparseWriter) table(t int64) *liveTable {
	lt := w.live[t]
	if lt == nil {
		lt = &liveTable{}
		w.live[t] = lt
	}
	return lt
}

// covered counts n bytes at off as delivered, and writes each grain table
// whose range is whole.
func (w *SparseWriter) covered(off, n int64) error {
	span := int64(gtEntries * grainBytes)
	for n > 0 {
		t := off / span
		k := min(n, (t+1)*span-off)
		if w.live[t] == nil && k == w.rangeLen(t) {
			off, n = off+k, n-k // a whole range of zeros: no table
			continue
		}
		lt := w.table(t)
		lt.cover += k
		switch {
		case lt.cover > w.rangeLen(t):
			return fmt.Errorf("vmdk: bytes of grain table %d's range written twice", t)
		case lt.cover == w.rangeLen(t):
			if err := w.writeTable(t); err != nil {
				return err
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

// tableAt returns where grain table t of the directory at dir (sectors)
// lies.
func (w *SparseWriter) tableAt(dir uint64, t int64) int64 {
	return (int64(dir) + w.gdSec + t*gtSectors) * sector
}

// writeTable writes both copies of grain table t, if it maps a grain.
func (w *SparseWriter) writeTable(t int64) error {
	lt := w.live[t]
	delete(w.live, t)
	if lt == nil || lt.e == nil {
		return nil
	}
	b := make([]byte, gtSectors*sector)
	for i, e := range lt.e {
		binary.LittleEndian.PutUint32(b[4*i:], e)
	}
	for _, dir := range []uint64{w.h.gdOffset, w.h.rgdOffset} {
		if _, err := w.f.WriteAt(b, w.tableAt(dir, t)); err != nil {
			return fmt.Errorf("vmdk: writing a grain table: %w", err)
		}
	}
	return nil
}

// Abort stops the writer; the image is left without its header.
func (w *SparseWriter) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.fail(errors.New("vmdk: write aborted"))
		w.closed = true
	}
}

// Close writes the grain tables not yet written, both directories, the
// descriptor and the header, and sizes the file. Bytes never delivered
// read as zeros.
func (w *SparseWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	if err := w.finish(); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *SparseWriter) finish() error {
	for _, t := range slices.Sorted(maps.Keys(w.live)) {
		if err := w.writeTable(t); err != nil {
			return err
		}
	}
	// Each directory lists its own tables, all of them.
	b := make([]byte, gdPage*4)
	for _, dir := range []uint64{w.h.gdOffset, w.h.rgdOffset} {
		for p := int64(0); p*gdPage < w.count; p++ {
			n := min(gdPage, w.count-p*gdPage)
			for i := range n {
				binary.LittleEndian.PutUint32(b[4*i:], uint32(w.tableAt(dir, p*gdPage+i)/sector))
			}
			if _, err := w.f.WriteAt(b[:n*4], int64(dir)*sector+p*gdPage*4); err != nil {
				return fmt.Errorf("vmdk: writing a grain directory: %w", err)
			}
		}
	}
	// The last grain's trailing zero blocks were not written.
	if err := w.f.Truncate(w.next); err != nil {
		return fmt.Errorf("vmdk: sizing the image: %w", err)
	}
	head := make([]byte, (1+descSectors)*sector)
	copy(head, sparseHeader(w.h))
	copy(head[sector:], w.desc)
	if _, err := w.f.WriteAt(head, 0); err != nil {
		return fmt.Errorf("vmdk: writing the header: %w", err)
	}
	return nil
}

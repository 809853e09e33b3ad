package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	libqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"

	"github.com/vmaconv/vmaconv/format"
)

// clusterMap answers "what is at this virtual offset" from the image's own
// L1 and L2 tables, at the speed of that metadata: an empty L1 entry is
// decided without touching an L2 table (512 MiB of zeros at 64 KiB
// clusters), every L2 table is read and decoded once while it is in a
// bounded cache, extended L2 entries (subclusters) are decoded like plain
// ones, and uncompressed data is read straight from the file, runs of
// contiguous clusters with one call.
//
// The library stays the parser of everything else: the header, its
// extensions and features, backing files, and compressed clusters, which
// clusterMap hands to it; it is also what reads a backing file's share.
// The library, by contrast, re-reads and decodes an extended L2 table for
// every cluster, walks an empty image cluster by cluster, and reads
// preallocated clusters that the file holds as holes.
type clusterMap struct {
	ra       io.ReaderAt
	lib      *libqcow2.Qcow2 // compressed clusters and backing reads
	fileSize int64
	bits     uint  // cluster_bits
	csize    int64 // cluster size
	v3       bool
	ext      bool  // extended L2 entries: 32 subclusters a cluster
	perL2    int64 // entries in an L2 table
	l1       []uint64
	backing  bool
	host     format.ZeroMapper // the file's holes; nil: none known

	prealloc     bool // the file is metadata-preallocated, as qemu detects it (mapping.go)
	preallocOnce sync.Once

	mu        sync.Mutex
	cache     []cachedL2
	maxTables int
	tick      uint64
}

type cachedL2 struct {
	off  uint64
	t    []uint64 // plain: entries; extended: entry, bitmap pairs
	used uint64
}

// More of L1 and L2 entries (docs/interop/qcow2.txt), beside writer.go's.
const (
	flagZero    = 1  // plain L2 entries of version 3 images: reads as zeros
	subclusters = 32 // per cluster, with extended L2 entries
)

// l2CacheBytes bounds the decoded L2 tables kept: 4 MiB is 64 tables of
// 64 KiB clusters, which map 32 GiB (16 GiB with subclusters).
const l2CacheBytes = 4 << 20

// span kinds.
type kind uint8

const (
	unallocated kind = iota // the backing file's, or zeros
	zeros
	data
	compressed
)

func newClusterMap(ra io.ReaderAt, lib *libqcow2.Qcow2, fileSize int64, h *header, ext bool, host format.ZeroMapper) (*clusterMap, error) {
	m := &clusterMap{
		ra: ra, lib: lib, fileSize: fileSize,
		bits: uint(h.clusterBits), csize: 1 << h.clusterBits, v3: h.version >= 3, ext: ext,
		backing: h.backingOffset != 0, host: host,
	}
	m.perL2 = m.csize / 8
	if ext {
		m.perL2 = m.csize / 16
	}
	m.maxTables = max(2, int(l2CacheBytes/m.csize))
	// readHeader has bounded the table by qemu's limit and the file.
	b := make([]byte, int64(h.l1Size)*8)
	if _, err := ra.ReadAt(b, int64(h.l1Offset)); err != nil {
		return nil, fmt.Errorf("%w: reading the L1 table at %#x: %v", ErrCorrupt, h.l1Offset, err)
	}
	m.l1 = make([]uint64, h.l1Size)
	for i := range m.l1 {
		m.l1[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return m, nil
}

// l2 returns the decoded L2 table of L1 entry i, or nil if it has none.
func (m *clusterMap) l2(i int64) ([]uint64, error) {
	if i >= int64(len(m.l1)) {
		return nil, nil // readHeader checked that the L1 table covers the disk
	}
	off := m.l1[i] & offsetMask
	if off == 0 {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick++
	for j := range m.cache {
		if m.cache[j].off == off {
			m.cache[j].used = m.tick
			return m.cache[j].t, nil
		}
	}
	switch {
	case off%uint64(m.csize) != 0:
		return nil, fmt.Errorf("%w: L2 table offset %#x (L1 entry %d) is not aligned to a cluster", ErrCorrupt, off, i)
	case off > uint64(m.fileSize) || uint64(m.csize) > uint64(m.fileSize)-off:
		return nil, fmt.Errorf("%w: L2 table at %#x (L1 entry %d) runs past the end of the file (%#x bytes)", ErrCorrupt, off, i, m.fileSize)
	}
	b := make([]byte, m.csize)
	if _, err := m.ra.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("qcow2: reading the L2 table at %#x: %w", off, err)
	}
	t := make([]uint64, m.csize/8)
	for j := range t {
		t[j] = binary.BigEndian.Uint64(b[8*j:])
	}
	e := cachedL2{off: off, t: t, used: m.tick}
	if len(m.cache) < m.maxTables {
		m.cache = append(m.cache, e)
	} else {
		old := 0
		for j := range m.cache {
			if m.cache[j].used < m.cache[old].used {
				old = j
			}
		}
		m.cache[old] = e
	}
	return t, nil
}

// span describes the run that starts at virtual offset off and stays
// within its cluster (a run of subclusters, with extended L2 entries): its
// kind, the host offset of off (0 if its cluster has none: data always
// has one; zero and unallocated runs may, as preallocated clusters), and
// its length. Outside any L2 table, the run is the rest of the L1 entry's
// range.
func (m *clusterMap) span(off int64) (k kind, host, n int64, err error) {
	c := off >> m.bits
	inner := off - c<<m.bits
	t, err := m.l2(c / m.perL2)
	if err != nil || t == nil {
		return unallocated, 0, (c/m.perL2+1)*m.perL2<<m.bits - off, err
	}
	i := c % m.perL2
	if !m.ext {
		e := t[i]
		n = m.csize - inner
		h := int64(e & offsetMask)
		switch {
		case e&oflagCompressed != 0:
			return compressed, 0, n, nil
		case e&flagZero != 0 && !m.v3:
			return 0, 0, 0, fmt.Errorf("%w: zero cluster entry at virtual offset %#x in a version 2 image (qemu refuses it too)", ErrCorrupt, c<<m.bits)
		case e&flagZero != 0 && h != 0:
			return zeros, h + inner, n, nil
		case e&flagZero != 0:
			return zeros, 0, n, nil
		case h == 0:
			return unallocated, 0, n, nil
		case h%m.csize != 0:
			return 0, 0, 0, fmt.Errorf("%w: cluster at virtual offset %#x has an unaligned host offset %#x", ErrCorrupt, c<<m.bits, h)
		}
		return data, h + inner, n, nil
	}
	e, bitmap := t[2*i], t[2*i+1]
	if e&oflagCompressed != 0 {
		return compressed, 0, m.csize - inner, nil
	}
	h := int64(e & offsetMask)
	if h%m.csize != 0 {
		return 0, 0, 0, fmt.Errorf("%w: cluster at virtual offset %#x has an unaligned host offset %#x", ErrCorrupt, c<<m.bits, h)
	}
	sub := m.csize / subclusters
	s := inner / sub
	subKind := func(s int64) (kind, error) {
		alloc, zero := bitmap>>s&1 != 0, bitmap>>(subclusters+s)&1 != 0
		switch {
		case alloc && zero, alloc && h == 0:
			return 0, fmt.Errorf("%w: invalid subcluster %d at virtual offset %#x (subcluster bitmap %#016x, host offset %#x)", ErrCorrupt, s, c<<m.bits+s*sub, bitmap, h)
		case alloc:
			return data, nil
		case zero:
			return zeros, nil
		}
		return unallocated, nil
	}
	if k, err = subKind(s); err != nil {
		return 0, 0, 0, err
	}
	end := s + 1
	for ; end < subclusters; end++ {
		if k2, err := subKind(end); err != nil || k2 != k {
			break // an invalid subcluster is reported when it is reached
		}
	}
	n = end*sub - inner
	if h != 0 {
		host = h + inner
	}
	return k, host, n, nil
}

// readAt fills p with the disk's bytes at off (within the virtual size).
func (m *clusterMap) readAt(p []byte, off int64) error {
	// A run of data is read with one call: runOff..+len(run) in p, at host.
	var runOff, runHost int64 = 0, -1
	var run []byte
	flush := func() error {
		if runHost < 0 {
			return nil
		}
		n, err := m.ra.ReadAt(run, runHost)
		if n < len(run) {
			if err == nil || errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: data for virtual offset %#x at host offset %#x runs past the end of the file (%#x bytes)", ErrCorrupt, runOff, runHost, m.fileSize)
			}
			return fmt.Errorf("qcow2: reading at host offset %#x: %w", runHost, err)
		}
		runHost = -1
		return nil
	}
	for pos := 0; pos < len(p); {
		at := off + int64(pos)
		k, host, n, err := m.span(at)
		if err != nil {
			return err
		}
		n = min(n, int64(len(p)-pos))
		piece := p[pos : pos+int(n)]
		if k == data && runHost >= 0 && runHost+int64(len(run)) == host {
			// The run ends at pos: anything else flushed it.
			run = p[pos-len(run) : pos+int(n)]
			pos += int(n)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		switch {
		case k == data:
			runOff, runHost, run = at, host, piece
		case k == zeros, k == unallocated && !m.backing:
			clear(piece)
		default: // compressed, or the backing file's
			if got, err := m.lib.ReadAt(piece, at); got < len(piece) {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("qcow2: reading at %#x: %w", at, err)
			}
		}
		pos += int(n)
	}
	return flush()
}

// maxDataExtent bounds the data run one Region call walks, cluster by
// cluster: the caller only needs to know it is data, and asks again.
const maxDataExtent = 1 << 30

// extent returns the run at start, up to length bytes, of clusters that
// all read as zeros or all may not: zero clusters and subclusters,
// unallocated ones without a backing file (or zero in it), and data
// clusters that the file holds as holes (preallocated ones).
func (m *clusterMap) extent(start, length int64) (format.Region, error) {
	end := start + length
	var zero bool
	pos := start
	for pos < end {
		k, host, n, err := m.span(pos)
		if err != nil {
			return format.Region{}, err
		}
		n = min(n, end-pos)
		var z bool
		switch k {
		case zeros:
			z = true
		case unallocated:
			z = true
			if m.backing {
				x, err := m.lib.Extent(pos, n)
				if err != nil {
					return format.Region{}, fmt.Errorf("qcow2: cluster map at %#x: %w", pos, err)
				}
				z, n = x.Zero, min(n, max(x.Length, 1))
			}
		case data:
			z = m.hole(host, n)
		}
		if pos == start {
			zero = z
		} else if z != zero || !zero && pos-start >= maxDataExtent {
			break
		}
		pos += n
	}
	return format.Region{Start: start, Length: pos - start, Zero: zero}, nil
}

// hole reports whether the file holds host..host+n as a hole.
func (m *clusterMap) hole(host, n int64) bool {
	if m.host == nil || host+n > m.fileSize {
		return false
	}
	x, err := m.host.Region(host, n)
	return err == nil && x.Zero && x.Length >= n
}

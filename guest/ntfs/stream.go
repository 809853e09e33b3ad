package ntfs

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
)

const (
	maxVCN  = 1 << 48 // clusters an attribute may span
	maxSize = 1 << 60 // bytes an attribute may hold
)

// run maps clusters [vcn, vcn+n) of a stream to the volume's clusters
// [lcn, lcn+n), or to a hole if lcn < 0.
type run struct{ vcn, lcn, n int64 }

// stream is the content of one attribute: resident bytes, or a run list
// over the volume, plain, sparse or LZNT1-compressed. Safe for concurrent
// use.
type stream struct {
	v        *volume
	what     string
	size     int64 // data size
	init     int64 // initialized size: past it, zeros
	resident []byte
	runs     []run
	mapped   int64 // clusters the runs cover
	// Compressed streams: compression units of 1<<cuShift clusters.
	compressed bool
	cuShift    uint
	mu         sync.Mutex
	cuIndex    int64 // the compression unit in cu, -1 for none
	cu         []byte
}

// newStream builds the stream of an attribute from its extents.
func (v *volume) newStream(what string, ext []*attr) (*stream, error) {
	if len(ext) == 0 {
		return nil, corrupt("%s: missing", what)
	}
	s := &stream{v: v, what: what, cuIndex: -1}
	if !ext[0].nonres {
		if len(ext) > 1 {
			return nil, corrupt("%s: resident and split", what)
		}
		s.resident = ext[0].value
		if s.resident == nil {
			s.resident = []byte{}
		}
		s.size, s.init = int64(len(s.resident)), int64(len(s.resident))
		return s, nil
	}
	ext = slices.Clone(ext)
	sort.Slice(ext, func(i, j int) bool { return ext[i].startVCN < ext[j].startVCN })
	a := ext[0]
	if a.startVCN != 0 {
		return nil, corrupt("%s: first extent at VCN %d", what, a.startVCN)
	}
	s.size, s.init = a.dataSize, min(a.initSize, a.dataSize)
	if a.flags&afCompressed != 0 && a.compUnit != 0 {
		if v.clusterSize > 4096 || a.compUnit > 8 {
			return nil, corrupt("%s: compressed with %d-byte clusters, units of 2^%d", what, v.clusterSize, a.compUnit)
		}
		s.compressed, s.cuShift = true, uint(a.compUnit)
	}
	var vcn int64
	for _, e := range ext {
		if !e.nonres {
			return nil, corrupt("%s: resident and split", what)
		}
		if e.startVCN != vcn {
			return nil, corrupt("%s: extent at VCN %d, want %d", what, e.startVCN, vcn)
		}
		var err error
		vcn, err = s.decodeRuns(e.mapping, vcn)
		if err != nil {
			return nil, err
		}
		if vcn != e.lastVCN+1 && !(e.lastVCN == -1 && vcn == 0) {
			return nil, corrupt("%s: extent's runs end at VCN %d, its header says %d", what, vcn, e.lastVCN+1)
		}
	}
	s.mapped = vcn
	return s, nil
}

// decodeRuns appends the runs of mapping pairs b, starting at vcn, and
// returns the VCN after them.
func (s *stream) decodeRuns(b []byte, vcn int64) (int64, error) {
	var lcn int64
	for i := 0; i < len(b) && b[i] != 0; {
		h := b[i]
		ls, os := int(h&0xF), int(h>>4)
		if ls == 0 || ls > 8 || os > 8 || i+1+ls+os > len(b) {
			return 0, corrupt("%s: run list byte %#x at %d", s.what, h, i)
		}
		var n uint64
		for k := ls - 1; k >= 0; k-- {
			n = n<<8 | uint64(b[i+1+k])
		}
		var d int64
		if os > 0 {
			d = int64(int8(b[i+ls+os])) // sign-extend the top byte
			for k := os - 2; k >= 0; k-- {
				d = d<<8 | int64(b[i+1+ls+k])
			}
		}
		i += 1 + ls + os
		if n == 0 || n > maxVCN || vcn+int64(n) > maxVCN {
			return 0, corrupt("%s: run of %d clusters at VCN %d", s.what, n, vcn)
		}
		r := run{vcn: vcn, lcn: -1, n: int64(n)}
		if os > 0 {
			lcn += d
			if lcn < 0 || lcn >= s.v.clusters || r.n > s.v.clusters-lcn {
				return 0, corrupt("%s: run of %d clusters at cluster %d, past the end of the volume (%d clusters)", s.what, n, lcn, s.v.clusters)
			}
			r.lcn = lcn
		}
		vcn += r.n
		if k := len(s.runs) - 1; k >= 0 && s.runs[k].vcn+s.runs[k].n == r.vcn &&
			((s.runs[k].lcn < 0 && r.lcn < 0) || (s.runs[k].lcn >= 0 && s.runs[k].lcn+s.runs[k].n == r.lcn && !s.compressed)) {
			s.runs[k].n += r.n
			continue
		}
		if len(s.runs) >= maxRuns {
			return 0, corrupt("%s: more than %d runs", s.what, maxRuns)
		}
		s.runs = append(s.runs, r)
	}
	return vcn, nil
}

// find returns the index of the run holding cluster vcn, or len(s.runs).
func (s *stream) find(vcn int64) int {
	return sort.Search(len(s.runs), func(i int) bool { return s.runs[i].vcn+s.runs[i].n > vcn })
}

// Size returns the stream's length.
func (s *stream) Size() int64 { return s.size }

// ReadAt reads len(p) bytes at off; past the size it returns io.EOF.
func (s *stream) ReadAt(p []byte, off int64) (n int, err error) {
	defer recoverErr(s.what, &err)
	if off < 0 {
		return 0, fmt.Errorf("ntfs: %s: negative offset %d", s.what, off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > s.size-off {
		p = p[:s.size-off]
	}
	if err := s.read(p, off); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// readFull reads exactly len(p) bytes at off, else fails.
func (s *stream) readFull(p []byte, off int64) (int, error) {
	if off < 0 || off > s.size || int64(len(p)) > s.size-off {
		return 0, corrupt("%s: %d bytes at %d past its end (%d)", s.what, len(p), off, s.size)
	}
	return len(p), s.read(p, off)
}

// read fills p (within the size) from off.
func (s *stream) read(p []byte, off int64) error {
	if s.resident != nil {
		copy(p, s.resident[off:])
		return nil
	}
	// Past the initialized size: zeros.
	if end := off + int64(len(p)); end > s.init {
		k := max(0, s.init-off)
		clear(p[k:])
		p = p[:k]
	}
	if s.compressed {
		return s.readCompressed(p, off)
	}
	cs := s.v.clusterSize
	for len(p) > 0 {
		i := s.find(off / cs)
		if i == len(s.runs) {
			return corrupt("%s: byte %d past its run list (%d clusters)", s.what, off, s.mapped)
		}
		r := s.runs[i]
		k := min(int64(len(p)), (r.vcn+r.n)*cs-off)
		if r.lcn < 0 {
			clear(p[:k])
		} else if err := s.v.readDev(p[:k], r.lcn*cs+off-r.vcn*cs, s.what); err != nil {
			return err
		}
		p, off = p[k:], off+k
	}
	return nil
}

// readDev reads p at byte off of the volume.
func (v *volume) readDev(p []byte, off int64, what string) error {
	n, err := v.dev.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return corrupt("%s: short read of %d bytes at byte %d of the volume", what, len(p), off)
	}
	return fmt.Errorf("ntfs: %s: read at byte %d: %w", what, off, err)
}

func (s *stream) readCompressed(p []byte, off int64) error {
	cub := s.v.clusterSize << s.cuShift
	for len(p) > 0 {
		k := off / cub
		o := off - k*cub
		n := min(int64(len(p)), cub-o)
		s.mu.Lock()
		err := s.loadCU(k)
		if err == nil {
			copy(p[:n], s.cu[o:])
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// loadCU decompresses compression unit k into s.cu. Called with s.mu held.
func (s *stream) loadCU(k int64) error {
	if s.cuIndex == k {
		return nil
	}
	cs := s.v.clusterSize
	cuc := int64(1) << s.cuShift
	cub := cs * cuc
	if s.cu == nil {
		s.cu = make([]byte, cub)
	}
	s.cuIndex = -1
	vcn0 := k * cuc
	// The unit's stored clusters, in order.
	type seg struct{ lcn, n int64 }
	var segs []seg
	var stored int64
	for i := s.find(vcn0); i < len(s.runs) && s.runs[i].vcn < vcn0+cuc; i++ {
		r := s.runs[i]
		lo, hi := max(r.vcn, vcn0), min(r.vcn+r.n, vcn0+cuc)
		if r.lcn >= 0 {
			segs = append(segs, seg{r.lcn + lo - r.vcn, hi - lo})
			stored += hi - lo
		}
	}
	switch {
	case stored == 0:
		clear(s.cu)
	case stored == cuc:
		// Not compressed: the unit as stored.
		b := s.cu
		for _, g := range segs {
			if err := s.v.readDev(b[:g.n*cs], g.lcn*cs, s.what); err != nil {
				return err
			}
			b = b[g.n*cs:]
		}
	default:
		in := make([]byte, stored*cs)
		b := in
		for _, g := range segs {
			if err := s.v.readDev(b[:g.n*cs], g.lcn*cs, s.what); err != nil {
				return err
			}
			b = b[g.n*cs:]
		}
		if err := lznt1(s.cu, in); err != nil {
			return corrupt("%s: compression unit at byte %d: %v", s.what, k*cub, err)
		}
	}
	s.cuIndex = k
	return nil
}

// Data implements guest.Sparse: the stored range holding off, or the
// first one after it.
func (s *stream) Data(off int64) (start, end int64, err error) {
	defer recoverErr(s.what, &err)
	lim := min(s.init, s.size)
	if off < 0 {
		off = 0
	}
	if off >= lim {
		return 0, 0, io.EOF
	}
	if s.resident != nil {
		return off, lim, nil
	}
	cs := s.v.clusterSize
	unit := cs // granularity of a stored range, in bytes
	if s.compressed {
		unit = cs << s.cuShift
	}
	// stored reports whether the unit at byte u holds data, and if not,
	// the byte where the hole holding it ends.
	stored := func(u int64) (bool, int64) {
		v0, v1 := u/cs, (u+unit)/cs
		for i := s.find(v0); i < len(s.runs) && s.runs[i].vcn < v1; i++ {
			if s.runs[i].lcn >= 0 {
				return true, 0
			}
		}
		i := s.find(v0)
		if i == len(s.runs) {
			return false, -1
		}
		// A hole: skip to the unit holding the run's end.
		e := (s.runs[i].vcn + s.runs[i].n) * cs
		return false, max(u+unit, e/unit*unit)
	}
	u := off / unit * unit
	for steps := 0; ; steps++ {
		if u >= lim || steps > maxRuns*2 {
			return 0, 0, io.EOF
		}
		ok, next := stored(u)
		if ok {
			break
		}
		if next < 0 {
			return 0, 0, io.EOF
		}
		u = next
	}
	start = max(off, u)
	end = u + unit
	for steps := 0; end < lim && steps < 1<<16; steps++ {
		ok, _ := stored(end)
		if !ok {
			break
		}
		// Extend over whole runs at once where the stream is not
		// compressed.
		if i := s.find(end / cs); !s.compressed && i < len(s.runs) {
			end = (s.runs[i].vcn + s.runs[i].n) * cs
		} else {
			end += unit
		}
	}
	return start, min(end, lim), nil
}

// lznt1 decompresses a compression unit: chunks of 4096 bytes, each with
// a 2-byte header, into out (zeros past the last chunk).
func lznt1(out, in []byte) error {
	clear(out)
	for o := 0; o < len(out) && len(in) >= 2; o += 4096 {
		h := binary.LittleEndian.Uint16(in)
		if h == 0 {
			break
		}
		n := int(h&0xFFF) + 1
		if n > len(in)-2 {
			return fmt.Errorf("LZNT1 chunk of %d bytes, %d left", n, len(in)-2)
		}
		src := in[2 : 2+n]
		in = in[2+n:]
		dst := out[o:min(o+4096, len(out))]
		if h&0x8000 == 0 {
			copy(dst, src)
			continue
		}
		if err := lznt1Chunk(dst, src); err != nil {
			return err
		}
	}
	return nil
}

func lznt1Chunk(dst, src []byte) error {
	d := 0
	for i := 0; i < len(src); {
		flags := src[i]
		i++
		for bit := 0; bit < 8 && i < len(src); bit++ {
			if flags&(1<<bit) == 0 {
				if d >= len(dst) {
					return fmt.Errorf("LZNT1 chunk longer than 4096 bytes")
				}
				dst[d] = src[i]
				d, i = d+1, i+1
				continue
			}
			if i+2 > len(src) {
				return fmt.Errorf("LZNT1 back reference cut short")
			}
			tok := int(binary.LittleEndian.Uint16(src[i:]))
			i += 2
			// The split between offset and length bits depends on
			// the position in the chunk.
			lb := 12
			for p := d - 1; p >= 0x10; p >>= 1 {
				lb--
			}
			if d == 0 {
				return fmt.Errorf("LZNT1 back reference at the start of a chunk")
			}
			dist := tok>>lb + 1
			ln := tok&(1<<lb-1) + 3
			if dist > d {
				return fmt.Errorf("LZNT1 back reference %d bytes back at %d", dist, d)
			}
			if ln > len(dst)-d {
				return fmt.Errorf("LZNT1 chunk longer than 4096 bytes")
			}
			for k := 0; k < ln; k++ {
				dst[d+k] = dst[d-dist+k]
			}
			d += ln
		}
	}
	return nil
}

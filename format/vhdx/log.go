package vhdx

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
)

// maxLogOps bounds the writes a log replayed in memory may hold (each a
// 4 KiB sector, or a run of zeros): 65536 are 256 MiB of log data, 2 MiB
// of overlay. Hyper-V's logs are 1 MiB.
const maxLogOps = 1 << 16

// wayOut is what a user does with an image whose log vmaconv does not
// replay.
const wayOut = "open it once in Hyper-V, or replay its log with qemu-img check -r all (on a copy)"

// logReader reads the log, a circular buffer of 4 KiB sectors
// ([MS-VHDX] 2.3), as QEMU's block/vhdx-log.c does.
type logReader struct {
	r           io.ReaderAt
	fileSize    int64
	off, length int64 // the log's place in the file
	guid        guid  // the header's LogGuid
	read        int64 // bytes read, for bounding the search
	buf, descs  []byte
}

// entryHeader is a log entry's header (64 bytes).
type entryHeader struct {
	checksum uint32
	length   uint32
	seq      uint64
	descs    uint32
	guid     guid
	flushed  uint64
	last     uint64
}

// logSeq is a sequence of valid entries: count entries from start.
type logSeq struct {
	start int64
	count int
	first entryHeader
}

func (lg *logReader) sector(pos int64, b []byte) error {
	lg.read += logSector
	if err := readAt(lg.r, lg.fileSize, b[:logSector], lg.off+pos); err != nil {
		return fmt.Errorf("vhdx: reading the log at %#x: %w", lg.off+pos, err)
	}
	return nil
}

func (lg *logReader) inc(pos int64) int64 {
	if pos += logSector; pos >= lg.length {
		return 0
	}
	return pos
}

func decodeEntryHeader(b []byte) (entryHeader, bool) {
	le := binary.LittleEndian
	h := entryHeader{
		checksum: le.Uint32(b[4:]), length: le.Uint32(b[8:]), seq: le.Uint64(b[16:]),
		descs: le.Uint32(b[24:]), flushed: le.Uint64(b[48:]), last: le.Uint64(b[56:]),
	}
	copy(h.guid[:], b[32:])
	return h, bytes.Equal(b[:4], []byte("loge"))
}

// valid checks an entry header as vhdx_log_hdr_is_valid does.
func (lg *logReader) valid(h entryHeader, sig bool) bool {
	return sig && int64(h.length) <= lg.length && h.length%logSector == 0 && h.seq != 0 &&
		h.guid == lg.guid && uint64(h.descs)*32 <= uint64(h.length)
}

// descSectors is the number of sectors holding an entry's header and n
// descriptors.
func descSectors(n uint32) int64 { return (int64(n) + 2 + 127) / 128 }

// descriptor is a log descriptor (32 bytes): a data sector's destination,
// or a run of zeros.
type descriptor struct {
	zero     bool
	trailing [4]byte
	leading  [8]byte
	zeroLen  uint64
	fileOff  uint64
	seq      uint64
}

func decodeDescriptor(b []byte) (descriptor, error) {
	le := binary.LittleEndian
	d := descriptor{zeroLen: le.Uint64(b[8:]), fileOff: le.Uint64(b[16:]), seq: le.Uint64(b[24:])}
	copy(d.trailing[:], b[4:8])
	copy(d.leading[:], b[8:16])
	switch string(b[:4]) {
	case "zero":
		d.zero = true
		if d.zeroLen%logSector != 0 {
			return d, fmt.Errorf("a run of zeros of %d bytes, not whole 4 KiB sectors", d.zeroLen)
		}
	case "desc":
	default:
		return d, fmt.Errorf("signature %q, want \"desc\" or \"zero\"", b[:4])
	}
	if d.fileOff%logSector != 0 {
		return d, fmt.Errorf("FileOffset %#x is not a multiple of 4 KiB", d.fileOff)
	}
	return d, nil
}

// descriptors calls f with each descriptor of the entry at pos (header
// h), reading its descriptor sectors one at a time, and returns the
// position after them. crc, if not nil, accumulates their CRC-32C.
func (lg *logReader) descriptors(pos int64, h entryHeader, crc *uint32, f func(k int, d descriptor) error) (int64, error) {
	if lg.descs == nil {
		lg.descs = make([]byte, logSector)
	}
	buf := lg.descs
	start, k := lg.off+pos, uint32(0)
	for s := range descSectors(h.descs) {
		if err := lg.sector(pos, buf); err != nil {
			return 0, err
		}
		if crc != nil {
			if s == 0 {
				*crc = checksum(buf, 4)
			} else {
				*crc = crc32.Update(*crc, castagnoli, buf)
			}
		}
		for ; k < h.descs; k++ {
			at := 64 + 32*int64(k) - s*logSector
			if at+32 > logSector {
				break
			}
			d, err := decodeDescriptor(buf[at:])
			if err == nil && d.seq != h.seq {
				err = fmt.Errorf("SequenceNumber %d, the entry's is %d", d.seq, h.seq)
			}
			if err != nil {
				return 0, corrupt("log entry at %#x: descriptor %d: %v", start, k, err)
			}
			if f != nil {
				if err := f(int(k), d); err != nil {
					return 0, err
				}
			}
		}
		pos = lg.inc(pos)
	}
	return pos, nil
}

// validate checks the entry at pos as vhdx_validate_log_entry does: its
// header (and, after an entry with sequence number prev > 0, that it
// follows it), its descriptors (an invalid one is an error, as QEMU
// fails), and its checksum over all its sectors. It returns the position
// to go on from: after the entry, or after its first sector if its header
// is not valid.
func (lg *logReader) validate(pos int64, prev uint64) (ok bool, h entryHeader, next int64, err error) {
	if lg.buf == nil {
		lg.buf = make([]byte, logSector)
	}
	buf := lg.buf
	if err := lg.sector(pos, buf); err != nil {
		return false, h, 0, err
	}
	h, sig := decodeEntryHeader(buf)
	if !lg.valid(h, sig) || prev > 0 && h.seq != prev+1 {
		return false, h, lg.inc(pos), nil
	}
	var crc uint32
	next, err = lg.descriptors(pos, h, &crc, nil)
	if err != nil {
		return false, h, 0, err
	}
	for range int64(h.length)/logSector - descSectors(h.descs) {
		if err := lg.sector(next, buf); err != nil {
			return false, h, 0, err
		}
		crc = crc32.Update(crc, castagnoli, buf)
		next = lg.inc(next)
	}
	return crc == h.checksum, h, next, nil
}

// search finds the sequence of entries to replay as vhdx_log_search
// does: walking the buffer from its start, the run of valid entries whose
// first has the largest sequence number. It stops once it has gone round
// the buffer, and has read at most about twice its length (QEMU goes
// round forever on an entry as long as the log, and reads an entry that
// ends where it starts again and again).
func (lg *logReader) search() (logSeq, error) {
	var cand logSeq
	pos := int64(0)
	lg.read = 0
	for lg.read < lg.length {
		tail := pos
		ok, h, next, err := lg.validate(pos, 0)
		if err != nil {
			return logSeq{}, err
		}
		pos = next
		if ok {
			cur := logSeq{start: tail, count: 1, first: h}
			prev := uint64(0) // QEMU checks the order from the third entry on
			for lg.read < 2*lg.length {
				ok, h2, next, err := lg.validate(pos, prev)
				if err != nil {
					return logSeq{}, err
				}
				pos = next
				if !ok {
					break
				}
				cur.count++
				prev = h2.seq
			}
			if cand.count == 0 || cur.first.seq > cand.first.seq {
				cand = cur
			}
		}
		if pos < tail {
			break
		}
	}
	return cand, nil
}

// logOp is one write of a replayed log: a 4 KiB sector whose middle
// 4084 bytes are in the log at src, or a run of zeros.
type logOp struct {
	start, end int64
	order      int
	zero       bool
	src        int64 // the data sector's place in the file
	leading    [8]byte
	trailing   [4]byte
}

// replay reads the writes of the sequence as vhdx_log_flush would make
// them, and returns the file as it would read after them.
func (lg *logReader) replay(seq logSeq) (*overlay, error) {
	buf := make([]byte, logSector)
	size := lg.fileSize
	var ops []logOp
	pos := seq.start
	for range seq.count {
		if err := lg.sector(pos, buf); err != nil {
			return nil, err
		}
		h, sig := decodeEntryHeader(buf)
		at := lg.off + pos
		if !lg.valid(h, sig) {
			return nil, corrupt("log entry at %#x: its header changed while replaying", at)
		}
		if h.flushed > uint64(size) {
			return nil, corrupt("log entry at %#x: FlushedFileOffset %#x is past the end of the file (%#x bytes): the image was truncated", at, h.flushed, size)
		}
		data := pos
		for range descSectors(h.descs) {
			data = lg.inc(data)
		}
		var err error
		_, err = lg.descriptors(pos, h, nil, func(k int, d descriptor) error {
			if len(ops) >= maxLogOps {
				return fmt.Errorf("%w: its log holds more than %d writes to replay, more than vmaconv replays in memory: %s", ErrUnsupported, maxLogOps, wayOut)
			}
			n := uint64(logSector)
			if d.zero {
				n = d.zeroLen
			}
			if d.fileOff > 1<<62 || n > 1<<62 {
				return corrupt("log entry at %#x: descriptor %d: a write of %d bytes at %#x", at, k, n, d.fileOff)
			}
			op := logOp{start: int64(d.fileOff), end: int64(d.fileOff + n), order: len(ops), zero: d.zero}
			if !d.zero {
				if err := lg.sector(data, buf); err != nil {
					return err
				}
				le := binary.LittleEndian
				if s := uint64(le.Uint32(buf[4:]))<<32 | uint64(le.Uint32(buf[4092:])); s != d.seq {
					return corrupt("log data sector at %#x: SequenceNumber %d, its descriptor's is %d", lg.off+data, s, d.seq)
				}
				op.src, op.leading, op.trailing = lg.off+data, d.leading, d.trailing
				data = lg.inc(data)
			}
			if op.end > op.start {
				ops = append(ops, op)
			}
			size = max(size, op.end)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if uint64(size) < h.last && h.last%mib != 0 && h.last < 1<<62 {
			size = int64((h.last + mib - 1) &^ (mib - 1))
		}
		pos = data
	}
	return newOverlay(lg.r, lg.fileSize, size, ops), nil
}

// overlay is the file as it reads after a log's writes: the last write
// to each byte wins.
type overlay struct {
	base     io.ReaderAt
	baseSize int64
	size     int64
	segs     []logOp // disjoint, sorted; each the write that last covers it
}

// newOverlay sorts ops out into disjoint segments, each labelled with
// the last op that covers it (a sweep over their ends with a heap of the
// ops that cover the current position).
func newOverlay(base io.ReaderAt, baseSize, size int64, ops []logOp) *overlay {
	o := &overlay{base: base, baseSize: baseSize, size: size}
	byStart := append([]logOp(nil), ops...)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].start < byStart[j].start })
	var points []int64
	for _, op := range ops {
		points = append(points, op.start, op.end)
	}
	sort.Slice(points, func(i, j int) bool { return points[i] < points[j] })
	var h opHeap
	i := 0
	for k := 0; k+1 < len(points); k++ {
		p, q := points[k], points[k+1]
		if p == q {
			continue
		}
		for i < len(byStart) && byStart[i].start <= p {
			heap.Push(&h, byStart[i])
			i++
		}
		for h.Len() > 0 && h[0].end <= p {
			heap.Pop(&h)
		}
		if h.Len() == 0 {
			continue
		}
		top := h[0]
		if n := len(o.segs); n > 0 && o.segs[n-1].order == top.order && o.segs[n-1].end == p {
			o.segs[n-1].end = q
			continue
		}
		// Every op starts and ends on a 4 KiB boundary, so a data op (one
		// sector) is never cut: its segment is the whole op.
		seg := top
		seg.start, seg.end = p, q
		o.segs = append(o.segs, seg)
	}
	return o
}

// opHeap holds the ops covering a position, the latest on top.
type opHeap []logOp

func (h opHeap) Len() int           { return len(h) }
func (h opHeap) Less(i, j int) bool { return h[i].order > h[j].order }
func (h opHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *opHeap) Push(x any)        { *h = append(*h, x.(logOp)) }
func (h *opHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ReadAt reads the file as replayed: bytes past its end read as zeros
// (readAt), so it never returns io.EOF.
func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if err := readAt(o.base, o.baseSize, p, off); err != nil {
		return 0, err
	}
	end := off + int64(len(p))
	i := sort.Search(len(o.segs), func(i int) bool { return o.segs[i].end > off })
	var sec [logSector]byte
	for ; i < len(o.segs) && o.segs[i].start < end; i++ {
		s := o.segs[i]
		a, b := max(s.start, off), min(s.end, end)
		dst := p[a-off : b-off]
		if s.zero {
			clear(dst)
			continue
		}
		// The data sector holds bytes 8-4091 of the sector where they are
		// on disk; bytes 0-7 and 4092-4095 are in the descriptor.
		if err := readAt(o.base, o.baseSize, sec[:], s.src); err != nil {
			return 0, err
		}
		copy(sec[:8], s.leading[:])
		copy(sec[4092:], s.trailing[:])
		copy(dst, sec[a-s.start:b-s.start])
	}
	return len(p), nil
}

package vma

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/zero"
)

// Byte offsets inside the fixed 12288-byte header struct.
const (
	offMagic       = 0
	offVersion     = 4
	offUUID        = 8
	offCTime       = 24
	offMD5         = 32
	offBlobOffset  = 48
	offBlobSize    = 52
	offHeaderSize  = 56
	offConfigNames = 2044
	offConfigData  = 3068
	offDevInfo     = 4096
	devInfoSize    = 32
	maxDevID       = 255 // dev_info has 256 entries; 0 and 255 are unusable
)

// Header is the parsed archive header.
type Header struct {
	UUID    uuid.UUID       // archive identity, repeated in every extent header
	CTime   time.Time       // when the writer wrote the header (seconds)
	Configs []format.Config // in slot order
	Devices []Device        // in ascending id order
	Size    int             // header_size: bytes before the first extent
}

// Device returns the device with the given name.
func (h *Header) Device(name string) (Device, bool) {
	for _, d := range h.Devices {
		if d.Name == name {
			return d, true
		}
	}
	return Device{}, false
}

// Config returns the first config blob with the given name.
func (h *Header) Config(name string) (format.Config, bool) {
	for _, c := range h.Configs {
		if c.Name == name {
			return c, true
		}
	}
	return format.Config{}, false
}

// readHeader reads and validates the header from r and returns it with
// its size. It reads the header as a stream, in 1 MiB steps: the MD5 is
// computed as it goes and the blob buffer walked as it goes, keeping only
// the blobs the fixed part points to. Memory is one step plus those blobs,
// whatever header_size claims (up to MaxHeaderSize).
func readHeader(r io.Reader) (*Header, int64, error) {
	fixed := make([]byte, HeaderStructSize)
	if n, err := io.ReadFull(r, fixed); err != nil {
		if got := fixed[:min(n, 4)]; !bytes.HasPrefix(Magic[:], got) {
			return nil, 0, errAt(ErrNotVMA, 0, "not a VMA archive: wrong magic %q", got)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, 0, errAt(ErrCorrupt, int64(n), "truncated header: got %d of %d bytes", n, HeaderStructSize)
		}
		return nil, 0, fmt.Errorf("vma: reading header: %w", err)
	}
	if !bytes.Equal(fixed[:4], Magic[:]) {
		return nil, 0, errAt(ErrNotVMA, 0, "not a VMA archive: wrong magic %q", fixed[:4])
	}
	be := binary.BigEndian
	size := int64(be.Uint32(fixed[offHeaderSize:]))
	if size <= HeaderStructSize {
		return nil, 0, errAt(ErrCorrupt, offHeaderSize, "header size %d is not larger than %d", size, HeaderStructSize)
	}
	if size > MaxHeaderSize {
		return nil, 0, errAt(ErrUnsupported, offHeaderSize, "header size %d exceeds the limit of %d", size, MaxHeaderSize)
	}
	sum := md5.New()
	sum.Write(fixed[:offMD5])
	sum.Write(make([]byte, 16))
	sum.Write(fixed[offMD5+16:])

	// The blob buffer's bounds are checked after the MD5 and the version,
	// as Proxmox's reader does; until then the walk keeps inside the
	// header.
	boff := int64(be.Uint32(fixed[offBlobOffset:]))
	bsize := int64(be.Uint32(fixed[offBlobSize:]))
	w := &blobWalker{want: map[int64][]byte{}, start: boff, end: min(boff+bsize, size), next: boff + 1}
	if boff < HeaderStructSize {
		w.end = 0 // refused below, after the MD5: walk nothing
	}
	for i := 1; i <= maxDevID; i++ {
		e := fixed[offDevInfo+i*devInfoSize:]
		if p := be.Uint32(e); p != 0 && be.Uint64(e[8:]) != 0 {
			w.want[boff+int64(p)] = nil
		}
	}
	for i := range MaxConfigs {
		n, d := be.Uint32(fixed[offConfigNames+4*i:]), be.Uint32(fixed[offConfigData+4*i:])
		if n != 0 && d != 0 {
			w.want[boff+int64(n)], w.want[boff+int64(d)] = nil, nil
		}
	}
	chunk := make([]byte, min(size-HeaderStructSize, 1<<20))
	for pos := int64(HeaderStructSize); pos < size; {
		c := chunk[:min(int64(len(chunk)), size-pos)]
		got, err := io.ReadFull(r, c)
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, 0, errAt(ErrCorrupt, pos+int64(got), "truncated header: got %d of %d bytes", pos+int64(got), size)
			}
			return nil, 0, fmt.Errorf("vma: reading header: %w", err)
		}
		sum.Write(c)
		w.feed(pos, c)
		pos += int64(got)
	}
	if computed := sum.Sum(nil); !bytes.Equal(computed, fixed[offMD5:offMD5+16]) {
		return nil, 0, errAt(ErrChecksum, offMD5, "header MD5 mismatch: stored %x, computed %x", fixed[offMD5:offMD5+16], computed)
	}
	h, err := parseFixed(fixed, size, w)
	return h, size, err
}

// blobWalker walks a blob buffer fed in pieces: from offset 1 on, each
// blob is a little-endian u16 length and that many bytes; a pointer must
// hit a blob's start. It keeps the blobs that start at a wanted offset
// (absolute offsets in the header) and ends at end; a blob crossing end
// is ignored.
type blobWalker struct {
	want       map[int64][]byte // blob start (its length field) -> data
	start, end int64            // the blob buffer
	next       int64            // where the next blob's length field starts
	cur        int64            // the blob being read: its start, or -1
	need       int64            // bytes of it still to come
	lenBuf     []byte           // a length field split between two pieces
	ahead      []int64          // want's keys from next on, in order (once sorted)
	sorted     bool
}

// nextWanted returns the first wanted blob start at or after w.next, or
// w.end if there is none.
func (w *blobWalker) nextWanted() int64 {
	if !w.sorted {
		w.ahead, w.sorted = slices.Sorted(maps.Keys(w.want)), true
	}
	for len(w.ahead) > 0 && w.ahead[0] < w.next {
		w.ahead = w.ahead[1:]
	}
	if len(w.ahead) == 0 {
		return w.end
	}
	return w.ahead[0]
}

// zeroPrefix returns how many bytes at the start of b are zero.
func zeroPrefix(b []byte) int64 {
	n := 0
	for n+BlockSize <= len(b) && zero.IsZero(b[n:n+BlockSize]) {
		n += BlockSize
	}
	for n < len(b) && b[n] == 0 {
		n++
	}
	return int64(n)
}

// feed takes the header bytes p found at offset pos; pieces come in
// order, one after the other.
func (w *blobWalker) feed(pos int64, p []byte) {
	end := pos + int64(len(p))
	for {
		if w.need > 0 { // the rest of a wanted blob: [w.next-w.need, w.next)
			from := w.next - w.need
			n := min(w.need, end-from)
			if n <= 0 || from < pos {
				return
			}
			w.want[w.cur] = append(w.want[w.cur], p[from-pos:from-pos+n]...)
			w.need -= n
			continue
		}
		if w.next+2 > w.end {
			return
		}
		// A run of zero bytes is a run of empty blobs: skipped at once, up
		// to the next wanted one (a hostile header holds up to 32 M). A
		// length field split between pieces (w.next < pos) is read below.
		if w.next >= pos {
			if stop := min(end, w.end, w.nextWanted()); stop-w.next >= 2 {
				if z := zeroPrefix(p[w.next-pos : stop-pos]); z >= 2 {
					w.next += z &^ 1
					continue
				}
			}
		}
		// The length field at w.next, maybe split between pieces.
		for len(w.lenBuf) < 2 {
			at := w.next + int64(len(w.lenBuf))
			if at >= end || at < pos {
				return // in a later piece (or, for a hostile offset, none)
			}
			w.lenBuf = append(w.lenBuf, p[at-pos])
		}
		n := int64(w.lenBuf[0]) | int64(w.lenBuf[1])<<8
		w.lenBuf = w.lenBuf[:0]
		start := w.next
		w.next = start + 2 + n
		if w.next > w.end {
			return // crosses the end: ignored, and the walk is over
		}
		if _, ok := w.want[start]; ok {
			w.cur, w.need = start, n
			w.want[start] = make([]byte, 0, n)
		}
	}
}

// parseFixed validates the fixed header, whose blobs w has walked, in the
// order Proxmox's reader does after the MD5: version, blob bounds, blobs,
// devices, configs.
func parseFixed(buf []byte, size int64, w *blobWalker) (*Header, error) {
	be := binary.BigEndian
	if v := be.Uint32(buf[offVersion:]); v != Version {
		return nil, errAt(ErrUnsupported, offVersion, "unsupported version %d", v)
	}
	h := &Header{Size: int(size)}
	copy(h.UUID[:], buf[offUUID:offUUID+16])
	h.CTime = time.Unix(int64(be.Uint64(buf[offCTime:])), 0)

	boff := uint64(be.Uint32(buf[offBlobOffset:]))
	bsize := uint64(be.Uint32(buf[offBlobSize:]))
	if boff < HeaderStructSize {
		return nil, errAt(ErrCorrupt, offBlobOffset, "blob buffer offset %d inside the fixed header", boff)
	}
	if boff+bsize > uint64(size) {
		return nil, errAt(ErrCorrupt, offBlobSize, "blob buffer %d+%d ends past the header size %d", boff, bsize, size)
	}
	blob := func(p uint32) []byte { return w.want[int64(boff)+int64(p)] }
	str := func(p uint32) (string, bool) {
		b := blob(p)
		if len(b) == 0 || b[len(b)-1] != 0 {
			return "", false
		}
		if i := bytes.IndexByte(b, 0); i >= 0 { // C string semantics
			b = b[:i]
		}
		return string(b), true
	}

	names := map[string]int{}
	for i := 1; i <= maxDevID; i++ {
		at := int64(offDevInfo + i*devInfoSize)
		e := buf[at:]
		p, size := be.Uint32(e), be.Uint64(e[8:])
		if size == 0 {
			continue // an unused slot, whatever its name pointer says
		}
		name, ok := str(p)
		if !ok {
			return nil, errAt(ErrCorrupt, at, "device %d: name pointer %d is not a NUL-terminated blob", i, p)
		}
		if i == maxDevID {
			return nil, errAt(ErrCorrupt, at, "device id 255 is reserved (device %q)", name)
		}
		if size > MaxClusters*ClusterSize {
			return nil, errAt(ErrCorrupt, at+8, "device %d (%s): size %d exceeds the 256 TiB the format can address", i, name, size)
		}
		if prev, dup := names[name]; dup {
			return nil, errAt(ErrCorrupt, at, "devices %d and %d are both named %q", prev, i, name)
		}
		names[name] = i
		h.Devices = append(h.Devices, Device{ID: i, Name: name, Size: int64(size)})
	}
	for i := range MaxConfigs {
		at := int64(offConfigNames + 4*i)
		n, d := be.Uint32(buf[at:]), be.Uint32(buf[offConfigData+4*i:])
		if n == 0 || d == 0 {
			continue
		}
		name, ok := str(n)
		data := blob(d) // nil unless a blob starts exactly at d
		if !ok || data == nil {
			return nil, errAt(ErrCorrupt, at, "config %d: invalid blob pointers name=%d data=%d", i, n, d)
		}
		h.Configs = append(h.Configs, format.Config{Name: name, Data: data})
	}
	return h, nil
}

// headerMD5 returns the MD5 of buf with the md5sum field taken as zero.
func headerMD5(buf []byte) [16]byte {
	d := md5.New()
	d.Write(buf[:offMD5])
	d.Write(make([]byte, 16))
	d.Write(buf[offMD5+16:])
	var sum [16]byte
	d.Sum(sum[:0])
	return sum
}

// blobTable builds the header's blob buffer the way Proxmox's writer does:
// byte 0 unused, each blob a little-endian u16 length and its bytes, the
// table grown in 512-byte steps.
type blobTable struct {
	buf []byte // len(buf) is the allocated (512-aligned) size
	pos int    // used bytes, starting at 1
}

func (t *blobTable) add(data []byte) uint32 {
	if t.pos == 0 {
		t.pos = 1
	}
	need := t.pos + 2 + len(data)
	if len(t.buf) < need {
		// Proxmox grows by the new blob's size rounded up to 512; keep that
		// (header_size depends on it) but never end up short.
		size := len(t.buf) + (len(data)+2+511)/512*512
		for size < need {
			size += 512
		}
		t.buf = append(t.buf, make([]byte, size-len(t.buf))...)
	}
	p := t.pos
	binary.LittleEndian.PutUint16(t.buf[p:], uint16(len(data)))
	copy(t.buf[p+2:], data)
	t.pos = need
	return uint32(p)
}

// marshalHeader lays out a complete header. Configs are stored first (name,
// data), then device names in id order, as Proxmox does.
func marshalHeader(id uuid.UUID, ctime int64, configs []format.Config, devs []Device) ([]byte, error) {
	var t blobTable
	be := binary.BigEndian
	var cfgPtrs [][2]uint32
	for _, c := range configs {
		n := t.add(append([]byte(c.Name), 0))
		d := t.add(c.Data)
		cfgPtrs = append(cfgPtrs, [2]uint32{n, d})
	}
	devPtrs := make([]uint32, len(devs))
	for i, d := range devs {
		devPtrs[i] = t.add(append([]byte(d.Name), 0))
	}
	if len(t.buf) == 0 {
		// No blobs at all. Proxmox's writer would emit header_size 12288,
		// which its reader rejects; one empty 512-byte table keeps it valid.
		t.buf, t.pos = make([]byte, 512), 1
	}
	size := HeaderStructSize + len(t.buf)
	if size > MaxHeaderSize {
		return nil, fmt.Errorf("vma: header of %d bytes exceeds the limit of %d", size, MaxHeaderSize)
	}
	buf := make([]byte, size)
	copy(buf[offMagic:], Magic[:])
	be.PutUint32(buf[offVersion:], Version)
	copy(buf[offUUID:], id[:])
	be.PutUint64(buf[offCTime:], uint64(ctime))
	be.PutUint32(buf[offBlobOffset:], HeaderStructSize)
	be.PutUint32(buf[offBlobSize:], uint32(t.pos))
	be.PutUint32(buf[offHeaderSize:], uint32(size))
	for i, p := range cfgPtrs {
		be.PutUint32(buf[offConfigNames+4*i:], p[0])
		be.PutUint32(buf[offConfigData+4*i:], p[1])
	}
	for i, d := range devs {
		e := buf[offDevInfo+d.ID*devInfoSize:]
		be.PutUint32(e, devPtrs[i])
		be.PutUint64(e[8:], uint64(d.Size))
	}
	copy(buf[HeaderStructSize:], t.buf)
	sum := headerMD5(buf)
	copy(buf[offMD5:], sum[:])
	return buf, nil
}

package vma

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/google/uuid"
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
	UUID    uuid.UUID // archive identity, repeated in every extent header
	CTime   time.Time // when the writer wrote the header (seconds)
	Configs []Config  // in slot order
	Devices []Device  // in ascending id order
	Size    int       // header_size: bytes before the first extent
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
func (h *Header) Config(name string) (Config, bool) {
	for _, c := range h.Configs {
		if c.Name == name {
			return c, true
		}
	}
	return Config{}, false
}

// readHeader reads and validates the header from r. It never allocates more
// than the bytes actually read plus one chunk, whatever header_size claims.
func readHeader(r io.Reader) (*Header, []byte, error) {
	fixed := make([]byte, HeaderStructSize)
	if n, err := io.ReadFull(r, fixed); err != nil {
		if got := fixed[:min(n, 4)]; !bytes.HasPrefix(Magic[:], got) {
			return nil, nil, errAt(ErrNotVMA, 0, "not a VMA archive: wrong magic %q", got)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, nil, errAt(ErrCorrupt, int64(n), "truncated header: got %d of %d bytes", n, HeaderStructSize)
		}
		return nil, nil, fmt.Errorf("vma: reading header: %w", err)
	}
	if !bytes.Equal(fixed[:4], Magic[:]) {
		return nil, nil, errAt(ErrNotVMA, 0, "not a VMA archive: wrong magic %q", fixed[:4])
	}
	size := binary.BigEndian.Uint32(fixed[offHeaderSize:])
	if size <= HeaderStructSize {
		return nil, nil, errAt(ErrCorrupt, offHeaderSize, "header size %d is not larger than %d", size, HeaderStructSize)
	}
	if size > MaxHeaderSize {
		return nil, nil, errAt(ErrUnsupported, offHeaderSize, "header size %d exceeds the limit of %d", size, MaxHeaderSize)
	}
	buf := fixed
	const chunk = 1 << 20
	for len(buf) < int(size) {
		n := min(int(size)-len(buf), chunk)
		buf = slices.Grow(buf, n)
		got, err := io.ReadFull(r, buf[len(buf):len(buf)+n])
		buf = buf[:len(buf)+got]
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, nil, errAt(ErrCorrupt, int64(len(buf)), "truncated header: got %d of %d bytes", len(buf), size)
			}
			return nil, nil, fmt.Errorf("vma: reading header: %w", err)
		}
	}
	h, err := parseHeader(buf)
	return h, buf, err
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

// parseHeader validates a complete header of len(buf) == header_size bytes,
// in the order Proxmox's reader does: MD5, version, blob bounds, blobs,
// devices, configs.
func parseHeader(buf []byte) (*Header, error) {
	if sum := headerMD5(buf); !bytes.Equal(sum[:], buf[offMD5:offMD5+16]) {
		return nil, errAt(ErrChecksum, offMD5, "header MD5 mismatch: stored %x, computed %x", buf[offMD5:offMD5+16], sum)
	}
	be := binary.BigEndian
	if v := be.Uint32(buf[offVersion:]); v != Version {
		return nil, errAt(ErrUnsupported, offVersion, "unsupported version %d", v)
	}
	h := &Header{Size: len(buf)}
	copy(h.UUID[:], buf[offUUID:offUUID+16])
	h.CTime = time.Unix(int64(be.Uint64(buf[offCTime:])), 0)

	boff := uint64(be.Uint32(buf[offBlobOffset:]))
	bsize := uint64(be.Uint32(buf[offBlobSize:]))
	if boff < HeaderStructSize {
		return nil, errAt(ErrCorrupt, offBlobOffset, "blob buffer offset %d inside the fixed header", boff)
	}
	if boff+bsize > uint64(len(buf)) {
		return nil, errAt(ErrCorrupt, offBlobSize, "blob buffer %d+%d ends past the header size %d", boff, bsize, len(buf))
	}
	blobs := buf[boff : boff+bsize]

	// Collect every pointer the header uses, then resolve them in one walk
	// over the blob buffer: memory stays proportional to the pointer count.
	want := map[uint32][]byte{}
	for i := 1; i <= maxDevID; i++ {
		e := buf[offDevInfo+i*devInfoSize:]
		if p := be.Uint32(e); p != 0 && be.Uint64(e[8:]) != 0 {
			want[p] = nil
		}
	}
	for i := range MaxConfigs {
		n, d := be.Uint32(buf[offConfigNames+4*i:]), be.Uint32(buf[offConfigData+4*i:])
		if n != 0 && d != 0 {
			want[n], want[d] = nil, nil
		}
	}
	for pos := uint64(1); pos+2 <= bsize; {
		n := uint64(blobs[pos]) | uint64(blobs[pos+1])<<8
		if pos+2+n <= bsize {
			if _, ok := want[uint32(pos)]; ok {
				want[uint32(pos)] = blobs[pos+2 : pos+2+n : pos+2+n]
			}
		}
		pos += 2 + n
	}
	str := func(p uint32) (string, bool) {
		b := want[p]
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
		data := want[d] // nil unless a blob starts exactly at d
		if !ok || data == nil {
			return nil, errAt(ErrCorrupt, at, "config %d: invalid blob pointers name=%d data=%d", i, n, d)
		}
		h.Configs = append(h.Configs, Config{Name: name, Data: bytes.Clone(data)})
	}
	return h, nil
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
func marshalHeader(id uuid.UUID, ctime int64, configs []Config, devs []Device) ([]byte, error) {
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

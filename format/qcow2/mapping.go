package qcow2

import (
	"encoding/binary"
	"fmt"
	"os"
	"reflect"

	libqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"

	"github.com/vmaconv/vmaconv/format"
)

// Mapping implements format.Mapper as qemu's qcow2 driver and block layer
// answer qemu-img map: data clusters are present at their host offset
// (and zero where the file has a hole there, as preallocated clusters
// are); zero clusters are present and zero (at their host offset if they
// have one); unallocated clusters are not present and read as zeros, or
// come from the backing file (depth 1; vmaconv does not follow the
// offsets of a backing chain); compressed clusters are present data with
// no offset.
func (s *Source) Mapping(start, length int64) (mp format.Mapping, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: cluster map at %#x: %v", ErrCorrupt, s.name, start, r)
		}
	}()
	length = min(length, s.Size()-start)
	if start < 0 || length <= 0 {
		return format.Mapping{}, fmt.Errorf("qcow2: %s: mapping at %#x outside the disk (%d bytes)", s.name, start, s.Size())
	}
	m := s.m
	k, host, n, err := m.span(start)
	if err != nil {
		return format.Mapping{}, err
	}
	if n <= 0 {
		return format.Mapping{}, fmt.Errorf("%w: %s: empty extent at %#x", ErrCorrupt, s.name, start)
	}
	mp = format.Mapping{Start: start, Length: min(n, length), Offset: -1}
	if host != 0 {
		mp.Offset = host
	}
	switch k {
	case data:
		mp.Present, mp.Data = true, true
		if s.preallocated() {
			mp.Zero, mp.Length = m.hostZero(host, mp.Length)
		}
	case zeros:
		mp.Present, mp.Zero = true, true
	case compressed:
		mp.Present, mp.Data, mp.Compressed = true, true, true
	case unallocated:
		mp.Zero = true
		if m.backing {
			x, err := m.lib.Extent(start, mp.Length)
			if err != nil {
				return format.Mapping{}, fmt.Errorf("qcow2: cluster map at %#x: %w", start, err)
			}
			mp.Depth, mp.Offset = 1, -1
			mp.Zero, mp.Present, mp.Data = x.Zero, !x.Zero, !x.Zero
			mp.Length = min(mp.Length, max(x.Length, 1))
		}
	}
	return mp, nil
}

// preallocated reports whether qemu takes the image for one with
// preallocated metadata (qcow2_detect_metadata_preallocation): more
// clusters have a reference count than the file has allocated, by a
// ninth and at least two. Only then does qemu ask the file where its
// holes are under data clusters, and map reports them as zero.
func (s *Source) preallocated() bool {
	m := s.m
	m.preallocOnce.Do(func() {
		f, ok := m.ra.(*os.File)
		if !ok {
			return
		}
		fi, err := f.Stat()
		if err != nil {
			return
		}
		blocks := reflect.ValueOf(fi.Sys())
		if blocks.Kind() != reflect.Pointer || blocks.Elem().Kind() != reflect.Struct {
			return
		}
		if blocks = blocks.Elem().FieldByName("Blocks"); !blocks.IsValid() || !blocks.CanInt() {
			return
		}
		real := blocks.Int() * 512 / m.csize
		threshold := max(real*10/9, real+2)
		n, err := m.refcounted(s.img.Header, (m.fileSize+m.csize-1)/m.csize, threshold)
		m.prealloc = err == nil && n >= threshold
	})
	return m.prealloc
}

// refcounted counts the clusters below end whose reference count is not
// zero, up to limit, reading one refcount block at a time.
func (m *clusterMap) refcounted(h *libqcow2.Header, end, limit int64) (int64, error) {
	order := uint32(4)
	if h.HeaderFieldsV3 != nil {
		order = h.RefcountOrder
	}
	if order > 6 {
		return 0, fmt.Errorf("refcount order %d", order)
	}
	bits := int64(1) << order
	perBlock := m.csize * 8 / bits
	tableEntries := int64(h.RefcountTableClusters) * m.csize / 8
	block := make([]byte, m.csize)
	var entry [8]byte
	n := int64(0)
	for i := int64(0); i < tableEntries && i*perBlock < end && n < limit; i++ {
		if _, err := m.ra.ReadAt(entry[:], int64(h.RefcountTableOffset)+8*i); err != nil {
			return 0, err
		}
		off := int64(binary.BigEndian.Uint64(entry[:]) & offsetMask)
		if off == 0 {
			continue
		}
		if _, err := m.ra.ReadAt(block, off); err != nil {
			return 0, err
		}
		for j := int64(0); j < perBlock && i*perBlock+j < end && n < limit; j++ {
			var nonzero bool
			if bits >= 8 {
				w := bits / 8
				for _, b := range block[j*w : (j+1)*w] {
					nonzero = nonzero || b != 0
				}
			} else {
				nonzero = block[j*bits/8]>>(j*bits%8)&(1<<bits-1) != 0
			}
			if nonzero {
				n++
			}
		}
	}
	return n, nil
}

// hostZero reports whether the file holds host..host+n as a hole (or
// ends before it), and for how much of n that holds, as qemu asks the
// file under a data cluster.
func (m *clusterMap) hostZero(host, n int64) (bool, int64) {
	if host >= m.fileSize {
		return true, n
	}
	mp, ok := m.host.(format.Mapper)
	if !ok {
		return false, n
	}
	x, err := mp.Mapping(host, min(n, m.fileSize-host))
	if err != nil {
		return false, n
	}
	if x.Zero && host+x.Length >= m.fileSize {
		return true, n // a hole to the end of the file, and past it
	}
	return x.Zero, min(x.Length, n)
}

package main

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

var be = binary.BigEndian

type config struct {
	name string
	data []byte
}

// device is a disk of the archive being read: which clusters came, and
// the 1 MiB pieces being filled.
type device struct {
	name     string
	size     int64
	clusters int64
	seen     []uint64 // a bit per cluster
	nseen    int64
	sums     [][32]byte // per piece; zero: all zeros
	open     map[int64]*piece
}

type piece struct {
	buf  []byte // nil while only zero clusters came
	seen int64  // clusters
}

type archive struct {
	configs []config
	devs    [256]*device
}

func (d *device) digest() [32]byte {
	p := make([]*[32]byte, len(d.sums))
	for i := range d.sums {
		p[i] = &d.sums[i]
	}
	return digest(d.size, p)
}

// readVMA reads an archive from r, checks it and returns its devices with
// their piece sums filled in.
func readVMA(h *hasher, r *bufio.Reader) (*archive, error) {
	defer h.wait()
	head := make([]byte, headerSize)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if string(head[:4]) != "VMA\x00" {
		return nil, fmt.Errorf("not a VMA archive: magic %q", head[:4])
	}
	hs := int64(be.Uint32(head[56:]))
	if hs <= headerSize || hs%512 != 0 || hs > headerSize+1<<20 {
		return nil, fmt.Errorf("header_size %d: not a multiple of 512 above %d (and at most 1 MiB more)", hs, headerSize)
	}
	full := make([]byte, hs)
	copy(full, head)
	if _, err := io.ReadFull(r, full[headerSize:]); err != nil {
		return nil, fmt.Errorf("header of %d bytes: %w", hs, err)
	}
	c := bytes.Clone(full)
	clear(c[32:48])
	if sum := md5.Sum(c); !bytes.Equal(sum[:], full[32:48]) {
		return nil, errors.New("header: MD5 mismatch")
	}
	if v := be.Uint32(full[4:]); v != 1 {
		return nil, fmt.Errorf("header: version %d, want 1", v)
	}
	uuid := full[8:24]
	bo, bs := int64(be.Uint32(full[48:])), int64(be.Uint32(full[52:]))
	if bo != headerSize || bs < 1 || bo+bs > hs {
		return nil, fmt.Errorf("header: blob buffer at %d, %d bytes: want it at %d, within the %d-byte header", bo, bs, headerSize, hs)
	}
	buf := full[bo : bo+bs]
	if buf[0] != 0 || !allZero(full[bo+bs:]) {
		return nil, errors.New("header: blob buffer byte 0 or the padding after the buffer is not zero")
	}
	blobs := map[uint32][]byte{}
	pos := int64(1)
	for pos+2 <= bs {
		n := int64(binary.LittleEndian.Uint16(buf[pos:]))
		if pos+2+n > bs {
			break
		}
		blobs[uint32(pos)] = buf[pos+2 : pos+2+n]
		pos += 2 + n
	}
	if pos != bs {
		return nil, fmt.Errorf("header: blobs end at %d of a %d-byte blob buffer", pos, bs)
	}
	str := func(ptr uint32, what string) (string, error) {
		b, ok := blobs[ptr]
		if !ok || len(b) < 2 || b[len(b)-1] != 0 || bytes.IndexByte(b[:len(b)-1], 0) >= 0 {
			return "", fmt.Errorf("header: %s: pointer %d is not a NUL-terminated name", what, ptr)
		}
		return string(b[:len(b)-1]), nil
	}
	a := &archive{}
	for i := range 256 {
		np, dp := be.Uint32(full[2044+4*i:]), be.Uint32(full[3068+4*i:])
		if np == 0 && dp == 0 {
			continue
		}
		name, err := str(np, fmt.Sprintf("config %d", i))
		if err != nil {
			return nil, err
		}
		data, ok := blobs[dp]
		if !ok {
			return nil, fmt.Errorf("header: config %s: data pointer %d is not a blob", name, dp)
		}
		a.configs = append(a.configs, config{name, data})
	}
	for i := range 256 {
		e := full[4096+32*i : 4096+32*i+32]
		np, size := be.Uint32(e), be.Uint64(e[8:])
		if i == 0 || size == 0 {
			if !allZero(e) {
				return nil, fmt.Errorf("header: device slot %d is not used, but not zero", i)
			}
			continue
		}
		if i == 255 || size > 1<<48 || !allZero(e[4:8]) || !allZero(e[16:]) {
			return nil, fmt.Errorf("header: device %d: id 255, a size over 256 TiB (%d) or non-zero reserved fields", i, size)
		}
		name, err := str(np, fmt.Sprintf("device %d", i))
		if err != nil {
			return nil, err
		}
		d := &device{name: name, size: int64(size), clusters: (int64(size) + clusterSize - 1) / clusterSize, open: map[int64]*piece{}}
		d.seen = make([]uint64, (d.clusters+63)/64)
		d.sums = make([][32]byte, (d.size+chunkSize-1)/chunkSize)
		a.devs[i] = d
	}

	data := make([]byte, 58*16*blockSize)
	eh := make([]byte, extentHead)
	open := 0
	for off := hs; ; {
		n, err := io.ReadFull(r, eh)
		if n == 0 && err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("extent at byte %d: %d bytes, short of a 512-byte extent header", off, n)
		}
		c := bytes.Clone(eh)
		clear(c[24:40])
		if sum := md5.Sum(c); !bytes.Equal(sum[:], eh[24:40]) {
			return nil, fmt.Errorf("extent at byte %d: MD5 mismatch", off)
		}
		if !bytes.Equal(eh[8:24], uuid) {
			return nil, fmt.Errorf("extent at byte %d: UUID differs from the header's", off)
		}
		if string(eh[:4]) != "VMAE" || eh[4] != 0 || eh[5] != 0 {
			return nil, fmt.Errorf("extent at byte %d: bad magic %q or reserved bytes", off, eh[:6])
		}
		count := int(be.Uint16(eh[6:]))
		used, blocks, empty := 0, 0, false
		for i := range slots {
			bi := be.Uint64(eh[40+8*i:])
			switch {
			case bi>>32&0xff == 0 && bi != 0:
				return nil, fmt.Errorf("extent at byte %d: slot %d has no device but is not zero", off, i)
			case bi == 0:
				empty = true
				continue
			case empty:
				return nil, fmt.Errorf("extent at byte %d: slot %d used after an empty one", off, i)
			case bi>>40&0xff != 0:
				return nil, fmt.Errorf("extent at byte %d: slot %d: reserved byte set", off, i)
			}
			used++
			blocks += bits.OnesCount16(uint16(bi >> 48))
		}
		if used > 58 || blocks != count {
			return nil, fmt.Errorf("extent at byte %d: %d clusters (Proxmox writes at most 58), %d blocks stored, block_count %d", off, used, blocks, count)
		}
		if _, err := io.ReadFull(r, data[:count*blockSize]); err != nil {
			return nil, fmt.Errorf("extent at byte %d: %d blocks of data: %w", off, count, err)
		}
		p := 0
		for i := range used {
			bi := be.Uint64(eh[40+8*i:])
			d := a.devs[bi>>32&0xff]
			mask, cl := uint16(bi>>48), int64(uint32(bi))
			switch {
			case d == nil:
				return nil, fmt.Errorf("extent at byte %d: slot %d: unknown device id %d", off, i, bi>>32&0xff)
			case cl >= d.clusters:
				return nil, fmt.Errorf("extent at byte %d: slot %d: cluster %d of device %s, which has %d", off, i, cl, d.name, d.clusters)
			case d.seen[cl/64]>>(cl%64)&1 != 0:
				return nil, fmt.Errorf("extent at byte %d: slot %d: cluster %d of device %s a second time", off, i, cl, d.name)
			}
			d.seen[cl/64] |= 1 << (cl % 64)
			d.nseen++
			pc := cl * clusterSize / chunkSize
			pi := d.open[pc]
			if pi == nil {
				pi = &piece{}
				d.open[pc] = pi
				if open++; open > maxOpen {
					return nil, fmt.Errorf("extent at byte %d: clusters too far out of order: %d MiB pieces open at once", off, open)
				}
			}
			for j := range 16 {
				if mask>>j&1 == 0 {
					continue
				}
				at := cl*clusterSize + int64(j)*blockSize
				blk := data[p*blockSize : (p+1)*blockSize]
				p++
				if at >= d.size {
					return nil, fmt.Errorf("extent at byte %d: slot %d: block %d of cluster %d lies past the end of device %s (%d bytes)", off, i, j, cl, d.name, d.size)
				}
				if end := d.size - at; end < blockSize && !allZero(blk[end:]) {
					return nil, fmt.Errorf("extent at byte %d: slot %d: the last block of device %s has data past its end", off, i, d.name)
				}
				if pi.buf == nil {
					pi.buf = h.get()
					clear(pi.buf)
				}
				copy(pi.buf[at-pc*chunkSize:], blk)
			}
			pi.seen++
			if pi.seen == min(chunkSize/clusterSize, d.clusters-pc*chunkSize/clusterSize) {
				delete(d.open, pc)
				open--
				if pi.buf != nil {
					h.jobs <- job{pi.buf, int(min(chunkSize, d.size-pc*chunkSize)), &d.sums[pc]}
				}
			}
		}
		off += extentHead + int64(count)*blockSize
	}
	for _, d := range a.devs {
		if d == nil || d.nseen == d.clusters {
			continue
		}
		for cl := range d.clusters {
			if d.seen[cl/64]>>(cl%64)&1 == 0 {
				return nil, fmt.Errorf("device %s: cluster %d missing (%d of %d came)", d.name, cl, d.nseen, d.clusters)
			}
		}
	}
	h.wait()
	return a, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

package lvm

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
)

// FuzzParse parses mutated metadata texts: it must never panic, and
// return the LVs or an error.
func FuzzParse(f *testing.F) {
	if text, err := os.ReadFile("testdata/vg.txt"); err == nil {
		f.Add(text)
	}
	f.Add([]byte(vgText("vgs", 5, 128, []synthPVDesc{{synthA, 128, 23}, {synthB, 128, 33}}, synthLVs)))
	f.Add([]byte("a { b = [\"x\", 1, [2.5]] c { d = 'e\\'' } } # x"))
	f.Fuzz(func(t *testing.T, text []byte) {
		m, err := parseMetadata(text)
		if err != nil {
			return
		}
		vg := &VolumeGroup{Metadata: m}
		for _, lv := range m.LVs {
			if v, err := vg.Open(lv.Name); err == nil {
				v.ReadAt(make([]byte, 16), 0)
			}
		}
	})
}

// FuzzReadPV overlays the first MiB of a synthetic PV (whose metadata
// wraps around its area) with the input, reads it, groups it with the
// second PV of its volume group and reads every LV it can open.
func FuzzReadPV(f *testing.F) {
	a, b := synthImages()
	f.Add(a[:16<<10])
	f.Add(a[:1024])
	f.Add(realHead(f)[:16<<10])
	pvB, err := ReadPV(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img := append([]byte(nil), a...)
		if len(data) > 1<<20 {
			data = data[:1<<20]
		}
		copy(img, data)
		if len(data) > 0 && data[0]&1 == 0 {
			// Byte 0 is not LVM's: use it to let half of the inputs past
			// the checksums.
			fixChecksums(img)
		}
		r := bytes.NewReader(img)
		Probe(r, int64(len(img)))
		pv, err := ReadPV(r, int64(len(img)))
		if err != nil {
			return
		}
		buf := make([]byte, 128<<10)
		for _, vg := range Group([]*PV{pv, pvB}) {
			for _, lv := range vg.Metadata.LVs {
				v, err := vg.Open(lv.Name)
				if err != nil {
					continue
				}
				for _, off := range []int64{0, v.Size() / 2, v.Size() - 100} {
					v.ReadAt(buf, off)
				}
			}
		}
	})
}

// fixChecksums rewrites the checksums of a (mutated) PV image: the
// label's, and those of each metadata area's header and current text.
func fixChecksums(img []byte) {
	le := binary.LittleEndian
	for i := 0; i < labelScanSectors && (i+1)*sectorSize <= len(img); i++ {
		lab := img[i*sectorSize : (i+1)*sectorSize]
		if string(lab[:8]) != labelID {
			continue
		}
		off := int(le.Uint32(lab[20:]))
		if off < 32 || off > sectorSize-56 {
			return
		}
		p := lab[off+40:]
		list := 0
		for len(p) >= 16 && list < 2 {
			o, n := le.Uint64(p), le.Uint64(p[8:])
			p = p[16:]
			if o == 0 {
				list++
				continue
			}
			if list == 1 && o < uint64(len(img)) && n >= mdaHeaderSize && n <= uint64(len(img))-o {
				fixArea(img[o : o+n])
			}
		}
		le.PutUint32(lab[16:], crc(initialCRC, lab[20:]))
		return
	}
}

func fixArea(m []byte) {
	le := binary.LittleEndian
	off, n := le.Uint64(m[40:]), le.Uint64(m[48:])
	size := uint64(len(m))
	if off >= mdaHeaderSize && off < size && n <= size-mdaHeaderSize {
		first := n
		if off+n > size {
			first = size - off
		}
		c := crc(initialCRC, m[off:off+first])
		c = crc(c, m[mdaHeaderSize:mdaHeaderSize+n-first])
		le.PutUint32(m[56:], c)
	}
	le.PutUint32(m, crc(initialCRC, m[4:mdaHeaderSize]))
}

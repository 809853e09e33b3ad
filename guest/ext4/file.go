package ext4

import (
	"fmt"
	"io"

	"github.com/vmaconv/vmaconv/guest"
)

// file is a regular file's (or slow symbolic link's) contents, mapped
// lazily through its extents or block map.
type file struct {
	fs   *fsys
	ino  uint64
	size int64
	m    *mapper
	// inline holds an inline-data inode's contents (i_block, then the
	// system.data attribute), nil for a mapped one.
	inline []byte
}

var (
	_ guest.File   = (*file)(nil)
	_ guest.Sparse = (*file)(nil)
)

func (f *fsys) open(in *inode) (*file, error) {
	fl := &file{fs: f, ino: in.ino, size: int64(in.size)}
	if in.flags&flagInlineData != 0 {
		extra, err := f.inlineData(in.ino)
		if err != nil {
			return nil, err
		}
		fl.inline = append(in.block[:len(in.block):len(in.block)], extra...)
		return fl, nil
	}
	fl.m = newMapper(f, in)
	return fl, nil
}

// Size returns the file's length.
func (fl *file) Size() int64 { return fl.size }

// ReadAt reads the file at off, each contiguous run of blocks with one
// read of the device; holes and unwritten extents read as zeros.
func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ext4: inode %d: read at negative offset %d", fl.ino, off)
	}
	if off >= fl.size {
		return 0, io.EOF
	}
	end := fl.size
	if int64(len(p)) < end-off {
		end = off + int64(len(p))
	}
	if fl.inline != nil {
		n := int(end - off)
		c := 0
		if off < int64(len(fl.inline)) {
			c = copy(p[:n], fl.inline[off:])
		}
		clear(p[c:n])
		return fl.finish(n, off, len(p))
	}
	bs := fl.fs.bs
	for pos := off; pos < end; {
		l := uint64(pos / bs)
		r, err := fl.m.lookup(l)
		if err != nil {
			return int(pos - off), err
		}
		runEnd := end
		if e := int64(l+r.n) * bs; e < runEnd {
			runEnd = e
		}
		chunk := p[pos-off : runEnd-off]
		if r.kind == runData {
			devOff := int64(r.pblk)*bs + pos%bs
			if err := fl.fs.read(chunk, devOff, func() string { return fmt.Sprintf("inode %d: data at %d", fl.ino, pos) }); err != nil {
				return int(pos - off), err
			}
		} else {
			clear(chunk)
		}
		pos = runEnd
	}
	return fl.finish(int(end-off), off, len(p))
}

func (fl *file) finish(n int, off int64, want int) (int, error) {
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// maxHoleRuns bounds the holes Data skips in one call.
const maxHoleRuns = 1 << 12

// Data returns the stored range [start, end) holding off or the first
// one after it, clipped to off and to the file's size; io.EOF when none.
func (fl *file) Data(off int64) (int64, int64, error) {
	if off < 0 {
		return 0, 0, fmt.Errorf("ext4: inode %d: data at negative offset %d", fl.ino, off)
	}
	if off >= fl.size {
		return 0, 0, io.EOF
	}
	if fl.inline != nil {
		return off, fl.size, nil
	}
	bs := fl.fs.bs
	for i, pos := 0, off; pos < fl.size; i++ {
		l := uint64(pos / bs)
		r, err := fl.m.lookup(l)
		if err != nil {
			return 0, 0, err
		}
		e := int64(l+r.n) * bs
		// Past maxHoleRuns holes in a row (a hostile extent tree can
		// make billions of tiny ones), report the next one as data: it
		// reads as zeros all the same.
		if r.kind == runData || i >= maxHoleRuns {
			// Join the data runs that follow (block maps end a run
			// at each pointer block).
			for j := 0; r.kind == runData && j < maxHoleRuns && e < fl.size; j++ {
				l = uint64(e / bs)
				if r, err = fl.m.lookup(l); err != nil {
					return 0, 0, err
				}
				if r.kind == runData {
					e = int64(l+r.n) * bs
				}
			}
			return pos, min(e, fl.size), nil
		}
		pos = e
	}
	return 0, 0, io.EOF
}

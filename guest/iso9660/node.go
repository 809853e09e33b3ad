package iso9660

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"

	"github.com/vmaconv/vmaconv/guest"
)

// node is one file, directory or link. It is immutable once made, so safe
// for concurrent use.
type node struct {
	fs     *FS
	parent *node
	depth  int
	info   guest.Info

	dir     bool
	loc     uint32 // directory: its first block
	dirSize int64

	ext         []extent // regular file: its extents, in file order
	recIno      bool     // Ino is 1<<63 plus the record's offset
	interleaved bool
	target      string
}

// extent is a piece of a file: n bytes at device offset dev, holding the
// file's bytes from off.
type extent struct {
	off, dev, n int64
}

// newNode makes the node of directory record rec (at byte recOff), with
// its Rock Ridge entries a (nil without Rock Ridge).
func (f *FS) newNode(parent *node, rec []byte, recOff int64, a *rrInfo) (*node, error) {
	n := &node{fs: f, parent: parent}
	if parent != nil {
		n.depth = parent.depth + 1
	}
	flags := rec[25]
	loc := le32(rec[2:]) + uint32(rec[1])
	size := int64(le32(rec[10:]))
	t := shortTime(rec[18:25])
	n.info = guest.Info{ModTime: t, ATime: t, CTime: t, Nlink: 1}
	n.dir = flags&0x02 != 0
	if a != nil && a.cl {
		// A deep directory relocated elsewhere: it is here, with the
		// metadata of its own "." record.
		dot, dotOff, err := f.readDot(a.clLoc)
		if err != nil {
			return nil, fmt.Errorf("iso9660: relocated directory %q: %w", a.name, err)
		}
		da, err := f.rrAttrs(dot, dotOff, false)
		if err != nil {
			return nil, fmt.Errorf("iso9660: relocated directory %q: %w", a.name, err)
		}
		da.name, da.nameSet = a.name, a.nameSet
		a = da
		n.dir = true
		loc = le32(dot[2:]) + uint32(dot[1])
		size = int64(le32(dot[10:]))
		t = shortTime(dot[18:25])
		n.info.ModTime, n.info.ATime, n.info.CTime = t, t, t
	}
	if n.dir {
		n.info.Mode = fs.ModeDir | 0o555
		n.loc, n.dirSize = loc, size
		n.info.Size = size
	} else {
		n.info.Mode = 0o444
		n.interleaved = rec[26] != 0 || rec[27] != 0
		if size > 0 {
			n.ext = []extent{{dev: int64(loc) * f.bs, n: size}}
		}
		n.info.Size = size
	}
	if a != nil {
		n.applyRR(a)
	}
	if n.info.Ino == 0 {
		if loc != 0 && (n.dir || size > 0) {
			n.info.Ino = uint64(loc)
		} else {
			n.info.Ino, n.recIno = 1<<63|uint64(recOff), true
		}
	}
	return n, nil
}

// applyRR sets the node's metadata from its Rock Ridge entries.
func (n *node) applyRR(a *rrInfo) {
	switch {
	case a.px:
		m := mode(a.mode)
		if n.dir {
			m = m&^fs.ModeType | fs.ModeDir
		} else if m.IsDir() {
			m &^= fs.ModeType
		}
		n.info.Mode = m
		if a.nlink > 0 {
			n.info.Nlink = a.nlink
		}
		n.info.UID, n.info.GID = a.uid, a.gid
		if a.serial != 0 {
			n.info.Ino = uint64(a.serial)
		}
	case a.linkSet && !n.dir:
		n.info.Mode = fs.ModeSymlink | 0o777
	}
	if n.info.Mode&fs.ModeSymlink != 0 {
		n.target = string(a.link)
		n.info.Size = int64(len(n.target))
		n.ext = nil
	}
	if t := n.info.Mode.Type(); t&^fs.ModeSymlink != 0 && t != fs.ModeDir {
		// Devices, fifos and sockets have no contents.
		n.info.Size, n.ext = 0, nil
		if t&fs.ModeDevice != 0 && a.pn {
			n.info.Rdev = a.rdev
		}
	}
	if !a.mtime.IsZero() {
		n.info.ModTime = a.mtime
	}
	if !a.atime.IsZero() {
		n.info.ATime = a.atime
	}
	if !a.ctime.IsZero() {
		n.info.CTime = a.ctime
	}
}

// Info returns the node's metadata.
func (n *node) Info() guest.Info { return n.info }

// Readlink returns a symbolic link's target.
func (n *node) Readlink() (string, error) {
	if n.info.Mode&fs.ModeSymlink == 0 {
		return "", fmt.Errorf("iso9660: %q: %w", n.info.Name, guest.ErrNotLink)
	}
	return n.target, nil
}

// ReadDir returns the directory's entries (without "." and "..", Rock
// Ridge RE entries and associated files), in the order they are stored.
func (n *node) ReadDir() ([]guest.Node, error) {
	if !n.dir {
		return nil, fmt.Errorf("iso9660: %q: %w", n.info.Name, guest.ErrNotDir)
	}
	f := n.fs
	if n.depth > maxDepth {
		return nil, errorf("directory %q at block %d: more than %d levels deep", n.info.Name, n.loc, maxDepth)
	}
	for p := n.parent; p != nil; p = p.parent {
		if p.loc == n.loc {
			return nil, errorf("directory %q at block %d: a loop (an ancestor is at the same block)", n.info.Name, n.loc)
		}
	}
	start := int64(n.loc) * f.bs
	if start > f.size || n.dirSize > f.size-start {
		return nil, errorf("directory %q: %d bytes at block %d: past the end of the device (%d bytes)", n.info.Name, n.dirSize, n.loc, f.size)
	}
	var (
		out     []guest.Node
		pending *node  // a multi-extent file waiting for its last extent
		pendID  []byte // its identifier
		skipID  []byte // the identifier of a hidden multi-extent file
		buf     = make([]byte, min(n.dirSize, dirReadSize))
	)
	for pos := int64(0); pos < n.dirSize; pos += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), n.dirSize-pos)]
		if err := f.readFull(chunk, start+pos); err != nil {
			return nil, fmt.Errorf("iso9660: directory %q at block %d: %w", n.info.Name, n.loc, err)
		}
		for s := 0; s < len(chunk); s += sectorSize {
			sec := chunk[s:min(s+sectorSize, len(chunk))]
			for i := 0; i < len(sec); {
				l := int(sec[i])
				if l == 0 {
					break // padding to the sector's end
				}
				recOff := start + pos + int64(s+i)
				if l < 34 || i+l > len(sec) || 33+int(sec[i+32]) > l {
					return nil, errorf("directory %q at block %d: record at byte %d: length %d, name length %d, sector end at %d", n.info.Name, n.loc, recOff, l, sec[min(i+32, len(sec)-1)], len(sec)-i)
				}
				rec := sec[i : i+l]
				i += l
				id := rec[33 : 33+int(rec[32])]
				if len(id) == 1 && (id[0] == 0 || id[0] == 1) {
					continue // "." and ".."
				}
				flags := rec[25]
				if skipID != nil {
					// The rest of a hidden multi-extent file.
					if bytes.Equal(id, skipID) {
						if flags&0x80 == 0 {
							skipID = nil
						}
						continue
					}
					skipID = nil
				}
				if pending != nil {
					if !bytes.Equal(id, pendID) || flags&0x02 != 0 {
						return nil, errorf("directory %q at block %d: multi-extent file %q ends without its last extent", n.info.Name, n.loc, pending.info.Name)
					}
					if err := pending.addExtent(rec); err != nil {
						return nil, err
					}
					if flags&0x80 == 0 {
						pending = nil
					}
					continue
				}
				if flags&0x04 != 0 {
					if flags&0x80 != 0 {
						skipID = id
					}
					continue // associated file
				}
				var a *rrInfo
				if f.rr {
					var err error
					if a, err = f.rrAttrs(rec, recOff, false); err != nil {
						return nil, fmt.Errorf("iso9660: directory %q: %w", n.info.Name, err)
					}
					if a.re {
						if flags&0x80 != 0 {
							skipID = id
						}
						continue // shown at its original place, through CL
					}
				}
				name, ok := n.name(id, a)
				if !ok {
					continue
				}
				if len(out) == guest.MaxDirEntries {
					return nil, fmt.Errorf("iso9660: directory %q at block %d: %w", n.info.Name, n.loc, guest.ErrTooManyEntries)
				}
				ch, err := f.newNode(n, rec, recOff, a)
				if err != nil {
					return nil, err
				}
				ch.info.Name = name
				out = append(out, ch)
				if flags&0x80 != 0 && !ch.dir {
					pending, pendID = ch, id
				}
			}
		}
	}
	if pending != nil {
		return nil, errorf("directory %q at block %d: multi-extent file %q ends without its last extent", n.info.Name, n.loc, pending.info.Name)
	}
	return out, nil
}

// name returns the name of a record with identifier id and Rock Ridge
// entries a, and false for "." and "..".
func (n *node) name(id []byte, a *rrInfo) (string, bool) {
	var s string
	switch {
	case a != nil && a.nameSet && len(a.name) > 0 && string(a.name) != "." && string(a.name) != "..":
		s = string(a.name)
	case n.fs.joliet:
		s = isoName(decodeJoliet(id), false)
	default:
		s = isoName(string(id), true)
	}
	return s, s != "." && s != ".."
}

// addExtent appends the extent of record rec to a multi-extent file.
func (n *node) addExtent(rec []byte) error {
	if len(n.ext) >= maxExtents {
		return errorf("file %q: more than %d extents", n.info.Name, maxExtents)
	}
	loc := int64(le32(rec[2:])) + int64(rec[1])
	size := int64(le32(rec[10:]))
	if rec[26] != 0 || rec[27] != 0 {
		n.interleaved = true
	}
	if size == 0 {
		return nil
	}
	dev := loc * n.fs.bs
	if k := len(n.ext) - 1; k >= 0 && n.ext[k].dev+n.ext[k].n == dev {
		n.ext[k].n += size // physically contiguous: one read
	} else {
		n.ext = append(n.ext, extent{off: n.info.Size, dev: dev, n: size})
	}
	if n.info.Mode&fs.ModeSymlink == 0 {
		n.info.Size += size
	}
	if n.recIno && loc != 0 {
		// An empty first extent gave the node a record-based Ino; its
		// first stored extent names it now.
		n.info.Ino, n.recIno = uint64(loc), false
	}
	return nil
}

// Open returns a regular file's contents.
func (n *node) Open() (guest.File, error) {
	if !n.info.Mode.IsRegular() {
		return nil, fmt.Errorf("iso9660: %q: %w", n.info.Name, guest.ErrNotRegular)
	}
	if n.interleaved {
		return nil, fmt.Errorf("iso9660: %q: interleaved files are not read: %w", n.info.Name, errors.ErrUnsupported)
	}
	for _, e := range n.ext {
		if e.dev > n.fs.size || e.n > n.fs.size-e.dev {
			return nil, errorf("file %q: %d bytes at byte %d: past the end of the device (%d bytes)", n.info.Name, e.n, e.dev, n.fs.size)
		}
	}
	return &file{n: n}, nil
}

// file is a regular file's contents. It is safe for concurrent use.
type file struct {
	n *node
}

// Size returns the file's length.
func (f *file) Size() int64 { return f.n.info.Size }

// ReadAt reads len(p) bytes at off; a read within one extent is one read
// of the device.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("iso9660: %q: negative offset %d", f.n.info.Name, off)
	}
	size := f.n.info.Size
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p, eof = p[:size-off], io.EOF
	}
	ext := f.n.ext
	i := sort.Search(len(ext), func(i int) bool { return ext[i].off+ext[i].n > off })
	done := 0
	for done < len(p) {
		if i >= len(ext) || ext[i].off > off {
			// Not covered by an extent (only a hostile image): zeros.
			end := size
			if i < len(ext) {
				end = ext[i].off
			}
			k := int(min(int64(len(p)-done), end-off))
			clear(p[done : done+k])
			done += k
			off += int64(k)
			continue
		}
		e := ext[i]
		k := int(min(int64(len(p)-done), e.off+e.n-off))
		if err := f.n.fs.readFull(p[done:done+k], e.dev+off-e.off); err != nil {
			return done, fmt.Errorf("iso9660: file %q: %w", f.n.info.Name, err)
		}
		done += k
		off += int64(k)
		i++
	}
	return done, eof
}

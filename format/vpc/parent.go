package vpc

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/vmaconv/vmaconv/format"
)

// parentNames returns the names a differencing disk gives its parent, in
// the order they are tried: the relative path of its W2ru locator, the
// file URL of its MacX locator, the absolute path of its W2ku locator,
// its parent_unicode_name. It checks every locator's data against the
// file.
func parentNames(m *image) ([]string, error) {
	var rel, mac, abs []string
	for i, l := range m.head.locators {
		if l.platform == 0 {
			continue
		}
		at := int64(m.foot.dataOffset) + 576 + 24*int64(i)
		switch {
		case l.dataLength > maxLocator:
			return nil, fmt.Errorf("%w: parent locator %d (at %#x): %d bytes of data (a path takes at most %d)", ErrCorrupt, i, at, l.dataLength, maxLocator)
		case l.dataOffset > uint64(m.fileSize) || uint64(l.dataLength) > uint64(m.fileSize)-l.dataOffset:
			return nil, fmt.Errorf("%w: parent locator %d (at %#x): data at %#x (%d bytes) runs past the end of the file (%#x bytes)", ErrCorrupt, i, at, l.dataOffset, l.dataLength, m.fileSize)
		}
		var dst *[]string
		switch l.platform {
		case platformW2ru:
			dst = &rel
		case platformW2ku:
			dst = &abs
		case platformMacX:
			dst = &mac
		default:
			continue // Mac aliases, deprecated Windows paths
		}
		b := make([]byte, l.dataLength)
		if _, err := m.r.ReadAt(b, int64(l.dataOffset)); err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading parent locator %d's data at %#x: %w", i, l.dataOffset, err)
		}
		name := string(b)
		if l.platform != platformMacX {
			name = decodeUTF16(b, binary.LittleEndian)
		} else if i := strings.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if name != "" {
			*dst = append(*dst, name)
		}
	}
	names := append(append(rel, mac...), abs...)
	if m.head.parentName != "" {
		names = append(names, m.head.parentName)
	}
	return names, nil
}

// candidates returns the files a parent named so may be, in dir (the
// child's directory): the name itself where it is a path of this system
// (a Windows path relative to the child, or an absolute one), then its
// base name beside the child, where a chain copied whole keeps it.
func candidates(names []string, dir string) []string {
	var paths, bases []string
	add := func(l *[]string, p string) {
		if p != "" && !slices.Contains(*l, p) {
			*l = append(*l, p)
		}
	}
	for _, n := range names {
		p := n
		if rest, ok := strings.CutPrefix(p, "file://"); ok { // MacX
			if u, err := url.PathUnescape(rest); err == nil {
				p = u
			}
		}
		p = strings.ReplaceAll(p, `\`, "/")
		drive := len(p) >= 2 && p[1] == ':' // C:/… names a Windows volume
		switch {
		case drive:
		case filepath.IsAbs(p):
			add(&paths, filepath.Clean(p))
		default:
			add(&paths, filepath.Join(dir, p))
		}
		if base := p[strings.LastIndexByte(p, '/')+1:]; base != "" && base != "." && base != ".." {
			add(&bases, filepath.Join(dir, base))
		}
	}
	for _, b := range bases {
		add(&paths, b)
	}
	return paths
}

// openParent opens the parent of the differencing disk m, whose file is
// f, if o allows it.
func openParent(m *image, f *os.File, o format.OpenOptions, ch *chain, depth int) (*image, error) {
	names, err := parentNames(m)
	if err != nil {
		return nil, err
	}
	shown := "(no name recorded)"
	if len(names) > 0 {
		shown = fmt.Sprintf("%q", names[0])
	}
	switch {
	case f == nil:
		return nil, fmt.Errorf("%w: a differencing disk (parent %s) needs its parent's file: open it as a file", ErrBacking, shown)
	case !o.AllowBacking:
		return nil, fmt.Errorf("%w: a differencing disk whose parent is %s; pass --allow-backing to read it", ErrBacking, shown)
	case depth+1 >= maxDepth:
		return nil, fmt.Errorf("%w: a chain of parents deeper than %d (a loop?)", ErrBacking, maxDepth)
	}
	paths := candidates(names, filepath.Dir(f.Name()))
	var path string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			path = p
			break
		}
	}
	if path == "" {
		return nil, fmt.Errorf("%w %s not found (looked for %s)", ErrBacking, shown, strings.Join(paths, ", "))
	}
	pf, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBacking, err)
	}
	fail := func(err error) (*image, error) {
		pf.Close()
		return nil, err
	}
	fi, err := pf.Stat()
	if err != nil {
		return fail(err)
	}
	for i, seen := range ch.files {
		if os.SameFile(seen, fi) {
			return fail(fmt.Errorf("%w: a loop of parents: %s is already in the chain as %s", ErrBacking, path, ch.names[i]))
		}
	}
	ch.files, ch.names = append(ch.files, fi), append(ch.names, path)
	if o.Note != nil {
		o.Note(fmt.Sprintf("%s: reading parent %s (vpc)", m.name, path))
	}
	p, err := openImage(pf, fi.Size(), path, pf, true, o, ch, depth+1)
	if err != nil {
		return fail(fmt.Errorf("parent %s: %w", path, err))
	}
	p.closer = pf
	if want := m.head.parentUUID; want != (uuid.UUID{}) && p.foot.uuid != want {
		p.close()
		return nil, fmt.Errorf("%w %s: its UUID is %s, the child's parent (header at %#x) is %s", ErrBacking, path, p.foot.uuid, m.foot.dataOffset+40, want)
	}
	return p, nil
}

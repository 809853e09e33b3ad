package vhdx

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmaconv/vmaconv/format"
)

// maxDepth bounds a chain of differencing images: the image the user
// named and its parents.
const maxDepth = 16

// chain is what open knows of the images opened so far for one Open.
type chain struct {
	files []os.FileInfo // to refuse a loop
	names []string
}

func (ch *chain) add(fi os.FileInfo, name string) error {
	for i, seen := range ch.files {
		if os.SameFile(seen, fi) {
			return fmt.Errorf("%w loop: %s is already in the chain as %s", ErrBacking, name, ch.names[i])
		}
	}
	ch.files, ch.names = append(ch.files, fi), append(ch.names, name)
	return nil
}

// Parent locator keys ([MS-VHDX] 2.6.2.6.3), paths in the order an
// implementation tries them.
var locatorPaths = []string{"relative_path", "volume_path", "absolute_win32_path"}

// firstPath returns the first path the locator gives, for messages.
func (p *locator) firstPath() string {
	for _, k := range locatorPaths {
		if v := p.get(k); v != "" {
			return v
		}
	}
	return ""
}

// candidate is a file a parent locator path may name here.
type candidate struct {
	path string
	how  string // the key, and how its path was read
}

// candidates turns the locator's Windows paths into files to try, in the
// specification's order, each resolved in the child's directory: a
// relative_path as it is (with / for \), then the file names of
// volume_path and absolute_win32_path (a volume or drive of the machine
// that wrote them means nothing here), and an absolute_win32_path that is
// a POSIX path as it is. The parent's DataWriteGuid decides which is the
// parent.
func (p *locator) candidates(dir string) []candidate {
	var cs []candidate
	seen := map[string]bool{}
	add := func(path, how string) {
		if path != "" && !seen[path] {
			seen[path] = true
			cs = append(cs, candidate{path, how})
		}
	}
	for _, k := range locatorPaths {
		v := p.get(k)
		if v == "" {
			continue
		}
		slashed := strings.ReplaceAll(v, `\`, "/")
		switch {
		case k == "relative_path":
			add(filepath.Join(dir, filepath.FromSlash(slashed)), k)
		case strings.HasPrefix(v, "/"):
			add(filepath.Clean(v), k)
		default:
			if base := filepath.Base(slashed); base != "/" && base != "." && base != ".." {
				add(filepath.Join(dir, base), k+"'s file name, in the image's directory")
			}
		}
	}
	return cs
}

// openParent finds, checks and opens the parent of the differencing image
// s: only with o.AllowBacking; the first candidate file whose
// DataWriteGuid is the locator's parent_linkage (or parent_linkage2), as
// Hyper-V checks it; with the child's logical sector size; within
// maxDepth; not already in the chain.
func openParent(s *Source, o format.OpenOptions, ch *chain) (*Source, error) {
	loc := s.l.locator
	if loc.typ != vhdxParentTypeGUID {
		return nil, fmt.Errorf("%s: %w locator type %s: not a VHDX parent, which is the only kind this driver reads", s.name, ErrBacking, loc.typ)
	}
	if !o.AllowBacking {
		return nil, fmt.Errorf("%s: %w: a differencing image, whose parent is %q; pass --allow-backing to read it", s.name, ErrBacking, loc.firstPath())
	}
	if len(ch.names) >= maxDepth {
		return nil, fmt.Errorf("%s: %w chain deeper than %d (a loop?)", s.name, ErrBacking, maxDepth)
	}
	var links []guid
	for _, k := range []string{"parent_linkage", "parent_linkage2"} {
		v := loc.get(k)
		if v == "" {
			continue
		}
		g, ok := parseGUID(v)
		if !ok {
			return nil, fmt.Errorf("%s: %w: parent locator: %s %q is not a GUID", s.name, ErrCorrupt, k, v)
		}
		links = append(links, g)
	}
	if len(links) == 0 {
		return nil, fmt.Errorf("%s: %w: parent locator: no parent_linkage", s.name, ErrCorrupt)
	}
	cs := loc.candidates(filepath.Dir(s.name))
	if len(cs) == 0 {
		return nil, fmt.Errorf("%s: %w: parent locator: no relative_path, volume_path or absolute_win32_path", s.name, ErrCorrupt)
	}
	var tried []string
	for _, c := range cs {
		fi, err := os.Stat(c.path)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, fmt.Sprintf("%s (%s): not found", c.path, c.how))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w %s: %v", s.name, ErrBacking, c.path, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: %w %s (%s) is not a regular file", s.name, ErrBacking, c.path, c.how)
		}
		f, err := os.Open(c.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w %s: %v", s.name, ErrBacking, c.path, err)
		}
		// Check the linkage before the whole parent is opened and its
		// own parent followed.
		pl, err := parse(f, fi.Size())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w %s (%s): %w", s.name, ErrBacking, c.path, c.how, err)
		}
		matched := false
		for _, g := range links {
			matched = matched || pl.head.dataWrite == g
		}
		if !matched {
			f.Close()
			tried = append(tried, fmt.Sprintf("%s (%s): its DataWriteGuid %s is not the parent_linkage %s", c.path, c.how, pl.head.dataWrite, links[0]))
			continue
		}
		if pl.logical != s.l.logical {
			f.Close()
			return nil, fmt.Errorf("%s: %w %s: logical sectors of %d bytes, the image's are %d", s.name, ErrBacking, c.path, pl.logical, s.l.logical)
		}
		if o.Note != nil {
			o.Note(fmt.Sprintf("%s: reading parent %s (%s)", s.name, c.path, c.how))
		}
		p, err := open(f, c.path, o, ch)
		if err != nil {
			return nil, fmt.Errorf("%s: %w %s: %w", s.name, ErrBacking, c.path, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%s: %w not found: %s", s.name, ErrBacking, strings.Join(tried, "; "))
}

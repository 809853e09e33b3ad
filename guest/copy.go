package guest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vmaconv/vmaconv/internal/zero"
)

// CopyOptions control CopyOut.
type CopyOptions struct {
	// Recursive copies directories with everything in them.
	Recursive bool
	// Preserve keeps setuid and setgid bits, which are dropped otherwise,
	// and, run as root, the owners (without, files belong to the user
	// copying them).
	Preserve bool
	// Note, if set, is told of every entry not copied, and why.
	Note func(msg string)
}

// maxHardLinks bounds the hard links CopyOut remembers to link again;
// past it, further links are copied as separate files.
const maxHardLinks = 1 << 16

// CopyOut copies the node n, found at the guest path p, to the host path
// dest, which must not exist unless it is a directory that n, a directory,
// is merged into, or a regular file that n, a regular file, replaces.
// Regular files keep their permission bits (setuid and setgid only with
// Preserve), mtimes and holes; each is written to a temporary file beside
// its place and renamed into it when whole, so that an interrupted copy
// never leaves a file looking complete. Links and directories keep their
// mtimes too; with Preserve, run as root, everything keeps its owner. Symbolic links are copied as links
// and never followed. Hard links within the copy stay hard links. Device
// nodes, FIFOs, sockets and unreadable volumes are not copied, nor are
// entries whose names cannot name a host file ("", ".", "..", names with
// "/" or NUL) or clash with an earlier entry: each is told to Note and
// counted in skipped, and so is an entry whose place on the host holds
// something else (a directory where a file goes); the copy goes on. Names
// with control characters, bytes that are not UTF-8 or backslashes are
// written escaped (HostName). DEST itself, if it was there, keeps its
// mode and times. Nothing is ever written outside dest.
func CopyOut(ctx context.Context, n Node, p, dest string, o CopyOptions) (skipped int, err error) {
	note := func(format string, args ...any) {
		skipped++
		if o.Note != nil {
			o.Note(fmt.Sprintf(format, args...))
		}
	}
	links := map[nodeKey]string{}
	hosts := map[string]string{} // guest directory path → host path, for the directories on the walk's path
	last := map[string]string{}  // guest directory path → the name of the entry visited last in it
	var fsys Node
	first, topExisted := true, false
	if !n.Info().Mode.IsDir() {
		err := copyOne(ctx, n, p, dest, o, note, links, nil)
		if errors.Is(err, errConflict) {
			return 0, fmt.Errorf("%s: %w", Escape(p), err)
		}
		return 0, err
	}
	if !o.Recursive {
		return 0, fmt.Errorf("%s: is a directory (cp -r copies directories)", Escape(p))
	}
	err = WalkLeave(n, p, func(gp string, c Node, werr error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fsRoot(c) {
			fsys = c
		}
		if werr != nil {
			note("%s: not copied: %v", Escape(gp), werr)
			if host, ok := hosts[gp]; ok && gp != p {
				os.Remove(host) // made for it just now: empty
				delete(hosts, gp)
			}
			return SkipDir
		}
		var host string
		if first {
			first, host = false, dest
		} else {
			name := c.Info().Name
			if !ValidName(name) {
				note("%s: not copied: the name cannot name a file", Escape(gp))
				return SkipDir
			}
			dir := strings.TrimSuffix(gp[:len(gp)-len(name)], "/")
			if dir == "" && strings.HasPrefix(p, "/") {
				dir = "/"
			}
			parent, ok := hosts[dir]
			if !ok {
				// The parent was not entered (an invalid name): nothing of it is copied.
				return SkipDir
			}
			if prev, ok := last[dir]; ok && prev == name {
				note("%s: not copied: a second entry of that name in its directory", Escape(gp))
				return SkipDir
			}
			last[dir] = name
			hostName := HostName(name)
			if hostName != name && o.Note != nil {
				o.Note(fmt.Sprintf("%s: written as %s", Escape(gp), hostName))
			}
			host = filepath.Join(parent, hostName)
		}
		var err error
		if c.Info().Mode.IsDir() {
			var existed bool
			if existed, err = makeDir(host, gp != p); err == nil {
				hosts[gp] = host
				topExisted = topExisted || gp == p && existed
			}
		} else {
			err = copyOne(ctx, c, gp, host, o, note, links, fsys)
		}
		if errors.Is(err, errConflict) {
			note("%s: not copied: %v", Escape(gp), err)
			return SkipDir
		}
		return err
	}, func(gp string, c Node) error {
		host := hosts[gp]
		delete(hosts, gp)
		delete(last, gp)
		if gp == p && topExisted {
			return nil // DEST was there: its mode and times are the user's
		}
		i := c.Info()
		if err := chown(host, i, o); err != nil {
			return err
		}
		if err := os.Chmod(host, perm(i.Mode, o.Preserve)); err != nil {
			return err
		}
		return chtimes(host, i)
	})
	return skipped, err
}

// HostName returns the name a file named name in a guest gets on the
// host: name itself, or, if it holds anything Escape changes (control
// characters, bytes that are not UTF-8, backslashes), its escaped form.
// Two guest names never get one host name: an escaped name holds a
// backslash, a name kept as it is holds none.
func HostName(name string) string { return Escape(name) }

// errConflict is wrapped by the errors of entries that cannot be written
// because the host already has something else at their place: the entry
// is not copied, the copy goes on.
var errConflict = errors.New("the destination has something else there")

// makeDir makes the directory host, or takes the one there (never a
// link to one); a directory it takes is made writable by its owner until
// its mode is set, if own (not DEST itself). It reports whether the
// directory was there.
func makeDir(host string, own bool) (existed bool, err error) {
	err = os.Mkdir(host, 0o700)
	if errors.Is(err, fs.ErrExist) {
		fi, lerr := os.Lstat(host)
		if lerr != nil {
			return true, lerr
		}
		if !fi.IsDir() {
			return true, fmt.Errorf("%s exists and is not a directory: %w", host, errConflict)
		}
		if own && fi.Mode().Perm()&0o700 != 0o700 {
			return true, os.Chmod(host, fi.Mode().Perm()|0o700)
		}
		return true, nil
	}
	return false, err
}

// perm returns the host permission bits for a guest mode.
func perm(m fs.FileMode, preserve bool) fs.FileMode {
	p := m & (fs.ModePerm | fs.ModeSticky)
	if preserve {
		p |= m & (fs.ModeSetuid | fs.ModeSetgid)
	}
	return p
}

// chown gives a host file (a link itself, not its target) the guest
// node's owner and group, with Preserve when run as root (as cp -p does);
// nothing otherwise.
func chown(host string, i Info, o CopyOptions) error {
	if !o.Preserve || runtime.GOOS == "windows" || os.Geteuid() != 0 {
		return nil
	}
	return os.Lchown(host, int(i.UID), int(i.GID))
}

// chtimes sets a host file's times to a guest node's.
func chtimes(host string, i Info) error {
	if i.ModTime.IsZero() {
		return nil
	}
	atime := i.ATime
	if atime.IsZero() {
		atime = i.ModTime
	}
	return os.Chtimes(host, atime, i.ModTime)
}

// copyOne copies one node that is not a directory.
func copyOne(ctx context.Context, n Node, gp, host string, o CopyOptions, note func(string, ...any), links map[nodeKey]string, fsys Node) error {
	i := n.Info()
	switch {
	case i.Mode&fs.ModeSymlink != 0:
		target, err := n.Readlink()
		if err != nil {
			note("%s: not copied: %v", Escape(gp), err)
			return nil
		}
		if strings.ContainsRune(target, 0) {
			note("%s: not copied: its target holds a NUL", Escape(gp))
			return nil
		}
		if fi, err := os.Lstat(host); err == nil {
			// A link of an earlier copy is replaced; anything else stays.
			if fi.Mode()&fs.ModeSymlink == 0 {
				return fmt.Errorf("%s exists and is not a symbolic link: %w", host, errConflict)
			}
			if err := os.Remove(host); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, host); err != nil {
			return err
		}
		if err := chown(host, i, o); err != nil {
			return err
		}
		if i.ModTime.IsZero() {
			return nil
		}
		atime := i.ATime
		if atime.IsZero() {
			atime = i.ModTime
		}
		return lchtimes(host, atime, i.ModTime)
	case i.Mode.IsRegular():
	case i.Mode&fs.ModeIrregular != 0:
		_, err := n.Open()
		note("%s: not copied: %v", Escape(gp), err)
		return nil
	default:
		note("%s: not copied: a %s", Escape(gp), TypeName(i.Mode))
		return nil
	}
	if fi, err := os.Lstat(host); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file: %w", host, errConflict)
	}
	key := nodeKey{fsys, i.Ino}
	if i.Nlink > 1 {
		if first, ok := links[key]; ok {
			os.Remove(host)
			return os.Link(first, host)
		}
	}
	f, err := n.Open()
	if err != nil {
		note("%s: not copied: %v", Escape(gp), err)
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(host), ".vmaconv-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	err = ReadData(ctx, f, func(off int64, p []byte) error {
		// Zeros stay holes, as cp --sparse=always leaves them.
		for len(p) > 0 {
			k := min(len(p), 64<<10)
			if !zero.IsZero(p[:k]) {
				if _, err := tmp.WriteAt(p[:k], off); err != nil {
					return err
				}
			}
			p, off = p[k:], off+int64(k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", Escape(gp), err)
	}
	if err := tmp.Truncate(f.Size()); err != nil {
		return err
	}
	if err := chown(tmp.Name(), i, o); err != nil { // before the mode: chown clears setuid
		return err
	}
	if err := tmp.Chmod(perm(i.Mode, o.Preserve)); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := chtimes(tmp.Name(), i); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), host); err != nil {
		return err
	}
	ok = true
	if i.Nlink > 1 && len(links) < maxHardLinks {
		links[key] = host
	}
	return nil
}

// TypeName names a node's type: "directory", "symlink", "char-device",
// "block-device", "fifo", "socket", "volume" (an irregular node: a volume
// that holds nothing vmaconv reads), or "file".
func TypeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeCharDevice != 0:
		return "char-device"
	case m&fs.ModeDevice != 0:
		return "block-device"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeIrregular != 0:
		return "volume"
	}
	return "file"
}

package cache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests' "archives" are plain files and a build copies them: the cache
// does not care what it holds.

func TestMain(m *testing.M) {
	if args := os.Getenv("CACHE_TEST_HELPER"); args != "" {
		os.Exit(helper(strings.Fields(args)))
	}
	os.Exit(m.Run())
}

// helper is a run in another process:
//
//	get DIR FILE SIGNAL  Get FILE's entry; a build ends only once the file
//	                     SIGNAL exists (10 s at most), which a run creates
//	                     when it waits for another's build. Print built or
//	                     used, and waited if it waited.
//	hang DIR FILE        start a build, print building, and never end it
func helper(args []string) int {
	var waited atomic.Bool
	o := Options{Limit: -1, Waiting: func() { waited.Store(true) }}
	build := func(ctx context.Context, src io.Reader, dst *os.File) error {
		io.CopyN(dst, src, 4096)
		fmt.Println("building")
		select {}
	}
	if args[0] == "get" {
		o.Waiting = func() {
			waited.Store(true)
			os.WriteFile(args[3], nil, 0o600)
		}
		build = func(ctx context.Context, src io.Reader, dst *os.File) error {
			if _, err := io.Copy(dst, src); err != nil {
				return err
			}
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(args[3]); err == nil {
					break
				}
			}
			return nil
		}
	}
	c, err := Open(args[1], o)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	src, err := os.Open(args[2])
	if err != nil {
		fmt.Println(err)
		return 1
	}
	e, err := c.Get(context.Background(), src, args[2], build)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer e.Close()
	if !checkData(e, args[2]) {
		fmt.Println("wrong data")
		return 1
	}
	out := "used"
	if e.Built() {
		out = "built"
	}
	if waited.Load() {
		out += " waited"
	}
	fmt.Println(out)
	return 0
}

// checkData reports whether the entry holds the file's content.
func checkData(e *Entry, path string) bool {
	want, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	got := make([]byte, e.Size())
	if _, err := e.ReadAt(got, 0); err != nil && err != io.EOF {
		return false
	}
	return bytes.Equal(got, want)
}

// copyBuild returns a build that copies the archive, counting its calls in
// n (if not nil) and taking at least delay.
func copyBuild(n *atomic.Int32, delay time.Duration) BuildFunc {
	return func(ctx context.Context, src io.Reader, dst *os.File) error {
		if n != nil {
			n.Add(1)
		}
		if _, err := io.Copy(dst, src); err != nil {
			return err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
}

// fixture is a cache directory and an archive in a test's directory.
type fixture struct {
	t      *testing.T
	dir    string // the cache
	arc    string
	builds atomic.Int32
	mu     sync.Mutex
	notes  []string
}

func newFixture(t *testing.T, content []byte) *fixture {
	t.Helper()
	tmp := t.TempDir()
	f := &fixture{t: t, dir: filepath.Join(tmp, "cache"), arc: filepath.Join(tmp, "a.vma.zst")}
	if err := os.WriteFile(f.arc, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// open opens the fixture's cache with a limit (negative: the default).
func (f *fixture) open(limit int64) *Cache {
	f.t.Helper()
	c, err := Open(f.dir, Options{Limit: limit, Note: func(m string) {
		f.mu.Lock()
		f.notes = append(f.notes, m)
		f.mu.Unlock()
	}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// get returns the entry of path from c, checking its data.
func (f *fixture) get(c *Cache, path string) *Entry {
	f.t.Helper()
	src, err := os.Open(path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer src.Close()
	e, err := c.Get(context.Background(), src, path, copyBuild(&f.builds, 0))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { e.Close() })
	if !checkData(e, path) {
		f.t.Fatalf("entry of %s: wrong data", path)
	}
	return e
}

// noted returns the notes so far, one a line, and forgets them.
func (f *fixture) noted() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := strings.Join(f.notes, "\n")
	f.notes = nil
	return s
}

// entryName returns the name of the entry the archive at path has now.
func entryName(t *testing.T, path string) string {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	id, err := Identify(src)
	if err != nil {
		t.Fatal(err)
	}
	return id.Key() + entrySuffix
}

func content(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

// TestGetBuildsOnceThenUses: the first Get builds, the next one uses the
// entry; the entry is 0600 in a new 0700 directory.
func TestGetBuildsOnceThenUses(t *testing.T) {
	f := newFixture(t, content(1, 3<<20))
	c := f.open(-1)
	if e := f.get(c, f.arc); !e.Built() {
		t.Error("first Get did not build")
	}
	if e := f.get(c, f.arc); e.Built() {
		t.Error("second Get built again")
	}
	if n := f.builds.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
	fi, err := os.Stat(f.dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cache directory mode %v (%v), want 0700", fi.Mode(), err)
	}
	fi, err = os.Lstat(filepath.Join(f.dir, entryName(t, f.arc)))
	if err != nil || fi.Mode() != 0o600 {
		t.Errorf("entry mode %v (%v), want 0600", fi.Mode(), err)
	}
}

// TestSharedDirectory: a directory open to others (/var/tmp: sticky and
// world-writable; a 0755 one) holds the cache in vmaconv-UID, made 0700; a
// symlink or a directory open to others there is refused.
func TestSharedDirectory(t *testing.T) {
	if currentUID() < 0 {
		t.Skip("no ownership on this system")
	}
	for _, mode := range []os.FileMode{os.ModeSticky | 0o777, 0o755} {
		tmp := t.TempDir()
		shared := filepath.Join(tmp, "shared")
		os.Mkdir(shared, 0o700)
		if err := os.Chmod(shared, mode); err != nil {
			t.Fatal(err)
		}
		c, err := Open(shared, Options{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(shared, fmt.Sprintf("vmaconv-%d", os.Geteuid()))
		if c.Dir() != want {
			t.Errorf("mode %v: cache in %s, want %s", mode, c.Dir(), want)
		}
		c.Close()
		if fi, err := os.Lstat(want); err != nil || fi.Mode() != os.ModeDir|0o700 {
			t.Errorf("mode %v: %s has mode %v (%v), want 0700", mode, want, fi.Mode(), err)
		}
	}
	tmp := t.TempDir()
	os.Chmod(tmp, os.ModeSticky|0o777)
	sub := filepath.Join(tmp, fmt.Sprintf("vmaconv-%d", os.Geteuid()))
	os.Mkdir(filepath.Join(tmp, "elsewhere"), 0o700)
	os.Symlink("elsewhere", sub)
	if _, err := Open(tmp, Options{}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("a symlink as the per-user directory: %v", err)
	}
	os.Remove(sub)
	os.Mkdir(sub, 0o700)
	os.Chmod(sub, 0o770)
	if _, err := Open(tmp, Options{}); err == nil || !strings.Contains(err.Error(), "open to others") {
		t.Errorf("a per-user directory open to the group: %v", err)
	}
}

// TestUntrustedEntries: an entry owned by another user, or writable by
// the group, is ignored with a note and replaced by a new build.
func TestUntrustedEntries(t *testing.T) {
	if currentUID() < 0 {
		t.Skip("no ownership on this system")
	}
	f := newFixture(t, content(2, 100000))
	c := f.open(-1)
	f.get(c, f.arc).Close()
	entry := filepath.Join(f.dir, entryName(t, f.arc))
	type plant struct {
		name string
		do   func() error
		note string
	}
	plants := []plant{
		{"group-writable", func() error { return os.Chmod(entry, 0o620) }, "writable by group or others"},
		{"other-writable", func() error { return os.Chmod(entry, 0o602) }, "writable by group or others"},
	}
	if os.Geteuid() == 0 {
		plants = append(plants, plant{"owned by nobody", func() error { return os.Chown(entry, 65534, 65534) }, "owned by uid 65534"})
	} else if os.Getenv("CI") == "true" {
		t.Error("CI runs as root: the entry owned by another user is not checked")
	}
	for _, p := range plants {
		if err := p.do(); err != nil {
			t.Fatal(err)
		}
		before := f.builds.Load()
		e := f.get(c, f.arc)
		if !e.Built() || f.builds.Load() != before+1 {
			t.Errorf("%s: the entry was used", p.name)
		}
		if n := f.noted(); !strings.Contains(n, p.note) || !strings.Contains(n, "ignored") {
			t.Errorf("%s: notes %q, want %q", p.name, n, p.note)
		}
		e.Close()
		fi, err := os.Lstat(entry)
		if err != nil || fi.Mode() != 0o600 || owner(fi) != os.Geteuid() {
			t.Errorf("%s: the new entry is %v, uid %d (%v)", p.name, fi.Mode(), owner(fi), err)
		}
	}
}

// TestIdentityFields: Identify hashes each end of the file, a change at
// either end (and only there) changes the hash of that end; every field
// but the path tells two identities apart and changes the key.
func TestIdentityFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a")
	b := content(10, 3<<20)
	identify := func() Identity {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id, err := Identify(f)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	id := identify()
	b[len(b)-1]++
	tail := identify()
	b[0]++
	head := identify()
	if tail.Head != id.Head || tail.Tail == id.Tail || head.Head == tail.Head || head.Tail != tail.Tail {
		t.Errorf("ends hashed wrong: first %.8s %.8s, last byte changed %.8s %.8s, first byte changed %.8s %.8s",
			id.Head, id.Tail, tail.Head, tail.Tail, head.Head, head.Tail)
	}
	changes := map[string]func(*Identity){
		"dev": func(o *Identity) { o.Dev++ }, "ino": func(o *Identity) { o.Ino++ },
		"size": func(o *Identity) { o.Size++ }, "mtime": func(o *Identity) { o.MTime++ },
		"ctime": func(o *Identity) { o.CTime++ }, "head": func(o *Identity) { o.Head = tail.Tail },
		"tail": func(o *Identity) { o.Tail = tail.Head },
	}
	for what, change := range changes {
		o := id
		change(&o)
		if id.Same(o) || o.Same(id) || id.Key() == o.Key() {
			t.Errorf("identities that differ in %s: same %v, keys %s %s", what, id.Same(o), id.Key(), o.Key())
		}
	}
	o := id
	o.Path = "/elsewhere"
	if !id.Same(o) || id.Key() != o.Key() {
		t.Error("identities that differ in the path only are told apart")
	}
}

// TestRewrittenInPlace: an archive rewritten in place, same inode and
// size, its modification time set back (touch -r), is never served from
// its old entry, even when its first and last MiB are unchanged.
func TestRewrittenInPlace(t *testing.T) {
	old := content(3, 3<<20)
	f := newFixture(t, old)
	c := f.open(-1)
	f.get(c, f.arc).Close()
	fi, _ := os.Stat(f.arc)
	time.Sleep(20 * time.Millisecond) // past a coarse clock's tick
	w, err := os.OpenFile(f.arc, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("a new middle"), 3<<20/2); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := os.Chtimes(f.arc, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.Stat(f.arc); !now.ModTime().Equal(fi.ModTime()) || !os.SameFile(now, fi) || now.Size() != fi.Size() {
		t.Fatal("the rewrite changed more than the content and change time")
	}
	if e := f.get(c, f.arc); !e.Built() { // get checks the data is the new one
		t.Error("the rewritten archive's entry was not built again")
	}
}

// TestChangedDuringBuild: a build whose archive changes meanwhile fails and
// leaves no entry.
func TestChangedDuringBuild(t *testing.T) {
	f := newFixture(t, content(4, 100000))
	c := f.open(-1)
	src, _ := os.Open(f.arc)
	defer src.Close()
	_, err := c.Get(context.Background(), src, f.arc, func(ctx context.Context, r io.Reader, dst *os.File) error {
		io.Copy(dst, r)
		time.Sleep(20 * time.Millisecond)
		return os.WriteFile(f.arc, content(5, 100000), 0o600)
	})
	if err == nil || !strings.Contains(err.Error(), "changed while") {
		t.Errorf("Get: %v, want a change noticed", err)
	}
	if infos, _ := c.List(); len(infos) != 0 {
		t.Errorf("entries left: %v", infos)
	}
	if names, _ := c.names(); len(names) != 0 {
		t.Errorf("files left: %v", names)
	}
}

// TestNotFollowed: a symlink (dangling, or to a valid entry elsewhere), a
// FIFO, a directory or a file without a record at an entry's name is never
// followed or served, and is replaced.
func TestNotFollowed(t *testing.T) {
	f := newFixture(t, content(6, 70000))
	c := f.open(-1)
	name := entryName(t, f.arc)
	entry := filepath.Join(f.dir, name)
	elsewhere := filepath.Join(t.TempDir(), "planted")
	f.get(c, f.arc).Close()
	if err := os.Rename(entry, elsewhere); err != nil { // a valid entry, elsewhere
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "target")
	plants := map[string]func() error{
		"dangling symlink": func() error { return os.Symlink(target, entry) },
		"symlink to entry": func() error { return os.Symlink(elsewhere, entry) },
		"fifo":             func() error { return syscall.Mkfifo(entry, 0o600) },
		"directory":        func() error { return os.Mkdir(entry, 0o700) },
		"no record":        func() error { return os.WriteFile(entry, content(7, 70000), 0o600) },
	}
	noted := "" // said once for both symlinks
	for what, plant := range plants {
		os.Remove(entry)
		if err := plant(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		type result struct {
			e   *Entry
			err error
		}
		done := make(chan result, 1)
		go func() {
			src, err := os.Open(f.arc)
			if err != nil {
				done <- result{nil, err}
				return
			}
			defer src.Close()
			e, err := c.Get(context.Background(), src, f.arc, copyBuild(&f.builds, 0))
			done <- result{e, err}
		}()
		var e *Entry
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("%s: %v", what, r.err)
			}
			e = r.e
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Get hangs", what)
		}
		if !e.Built() || !checkData(e, f.arc) {
			t.Errorf("%s: followed or used", what)
		}
		noted += f.noted() + "\n"
		e.Close()
		if fi, err := os.Lstat(entry); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: not replaced (%v)", what, err)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("%s: the symlink's target was written", what)
		}
	}
	for _, why := range []string{"not a regular file (a symlink)", "not a regular file (a special file)",
		"not a regular file (a directory)", "not a cache entry of vmaconv"} {
		if !strings.Contains(noted, why) {
			t.Errorf("no note %q in %q", why, noted)
		}
	}
}

// TestLockNotFollowed: a symlink or a directory at a build's lock file
// is removed, never followed: the build goes on, and nothing is created
// where the symlink points.
func TestLockNotFollowed(t *testing.T) {
	f := newFixture(t, content(15, 70000))
	c := f.open(-1)
	lockFile := filepath.Join(f.dir, strings.TrimSuffix(entryName(t, f.arc), entrySuffix)+lockSuffix)
	target := filepath.Join(t.TempDir(), "target")
	for what, plant := range map[string]func() error{
		"dangling symlink": func() error { return os.Symlink(target, lockFile) },
		"directory":        func() error { return os.Mkdir(lockFile, 0o700) },
	} {
		if err := plant(); err != nil {
			t.Fatal(err)
		}
		if e := f.get(c, f.arc); !e.Built() {
			t.Errorf("%s: no build", what)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("%s: the symlink's target was created", what)
		}
		os.Remove(filepath.Join(f.dir, entryName(t, f.arc)))
	}
}

// TestRecordChecked: an entry whose record names another archive (an
// entry renamed to this archive's key) is not served.
func TestRecordChecked(t *testing.T) {
	f := newFixture(t, content(8, 50000))
	other := filepath.Join(filepath.Dir(f.arc), "b.vma.zst")
	os.WriteFile(other, content(9, 50000), 0o600)
	c := f.open(-1)
	f.get(c, other).Close()
	if err := os.Rename(filepath.Join(f.dir, entryName(t, other)), filepath.Join(f.dir, entryName(t, f.arc))); err != nil {
		t.Fatal(err)
	}
	if e := f.get(c, f.arc); !e.Built() {
		t.Error("an entry recording another archive was used")
	}
	if n := f.noted(); !strings.Contains(n, "records another archive") {
		t.Errorf("notes %q", n)
	}
}

// TestEvictionKeepsInUse: past the limit, the entries least recently used
// go first, never one in use; an entry over the limit on its own goes when
// its last user closes it.
func TestEvictionKeepsInUse(t *testing.T) {
	const size = 100000
	f := newFixture(t, content(10, size))
	tmp := filepath.Dir(f.arc)
	var arcs []string
	for i := range 4 {
		p := filepath.Join(tmp, fmt.Sprintf("%d.vma.zst", i))
		os.WriteFile(p, content(byte(20+i), size), 0o600)
		arcs = append(arcs, p)
	}
	c := f.open(3*size + 2000) // three entries and their records
	inUse := f.get(c, arcs[0])
	f.get(c, arcs[1]).Close()
	f.get(c, arcs[2]).Close()
	// Last uses: 0 oldest, then 1, then 2.
	for i, a := range arcs[:3] {
		tm := time.Now().Add(time.Duration(i-10) * time.Hour)
		os.Chtimes(filepath.Join(f.dir, entryName(t, a)), tm, tm)
	}
	f.noted()
	f.get(c, arcs[3]).Close()
	has := func(i int) bool {
		_, err := os.Stat(filepath.Join(f.dir, entryName(t, arcs[i])))
		return err == nil
	}
	if got := []bool{has(0), has(1), has(2), has(3)}; !slices.Equal(got, []bool{true, false, true, true}) {
		t.Errorf("entries kept %v, want the one in use, and 2 and 3 (1 evicted)", got)
	}
	if n := f.noted(); !strings.Contains(n, "removed the entry of "+arcs[1]) {
		t.Errorf("notes %q", n)
	}
	infos, _ := c.List()
	for _, in := range infos {
		if in.InUse != (in.Archive.Path == arcs[0]) {
			t.Errorf("%s listed in use: %v", in.Archive.Path, in.InUse)
		}
	}
	// Over the limit on its own: kept while in use, removed after.
	big := filepath.Join(tmp, "big.vma.zst")
	os.WriteFile(big, content(30, 4*size), 0o600)
	e := f.get(c, big)
	if !has(0) {
		t.Error("the entry in use was evicted")
	}
	bigEntry := filepath.Join(f.dir, entryName(t, big))
	if _, err := os.Stat(bigEntry); err != nil {
		t.Errorf("the entry over the limit was evicted while in use: %v", err)
	}
	if n := f.noted(); !strings.Contains(n, "larger than the cache's limit") {
		t.Errorf("notes %q", n)
	}
	e.Close()
	if _, err := os.Stat(bigEntry); err == nil {
		t.Error("the entry over the limit outlived its use")
	}
	inUse.Close()
}

// TestRemove: Remove takes what matches, except what is in use.
func TestRemove(t *testing.T) {
	f := newFixture(t, content(11, 5000))
	c := f.open(-1)
	other := filepath.Join(filepath.Dir(f.arc), "b.vma.zst")
	os.WriteFile(other, content(12, 5000), 0o600)
	e := f.get(c, f.arc)
	f.get(c, other).Close()
	removed, busy, err := c.Remove(func(Info) bool { return true })
	if err != nil || len(removed) != 1 || removed[0].Archive.Path != other || len(busy) != 1 || busy[0].Archive.Path != f.arc {
		t.Errorf("Remove: removed %v, busy %v, %v", removed, busy, err)
	}
	e.Close()
	removed, _, _ = c.Remove(func(Info) bool { return true })
	if len(removed) != 1 {
		t.Errorf("removed %v once unused", removed)
	}
}

// run starts a helper process: a run of vmaconv as far as the cache goes.
func run(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CACHE_TEST_HELPER="+strings.Join(args, " "))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

// TestRaceColdCache: two processes wanting the same entry at once both
// succeed, with one build. The build lasts until the other run waits for
// it: the two always race.
func TestRaceColdCache(t *testing.T) {
	f := newFixture(t, content(13, 1<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var outs [2]string
	var wg sync.WaitGroup
	for i := range outs {
		cmd, out := run(t, ctx, "get", f.dir, f.arc, filepath.Join(filepath.Dir(f.arc), "waiting"))
		wg.Go(func() {
			b, _ := io.ReadAll(out)
			outs[i] = strings.TrimSpace(string(b))
			if err := cmd.Wait(); err != nil {
				outs[i] += " " + err.Error()
			}
		})
	}
	wg.Wait()
	slices.Sort(outs[:])
	if outs != [2]string{"built", "used waited"} {
		t.Errorf("the runs said %q, want one built and one waited", outs)
	}
}

// TestDeadBuildRemoved: the temporary file of a build killed with SIGKILL
// is removed by the next run, and a live build's is not.
func TestDeadBuildRemoved(t *testing.T) {
	f := newFixture(t, content(14, 1<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, out := run(t, ctx, "hang", f.dir, f.arc)
	if line, err := out.ReadString('\n'); line != "building\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	temps := func() []string {
		names, _ := filepath.Glob(filepath.Join(f.dir, "*"+tempSuffix))
		return names
	}
	if len(temps()) != 1 {
		t.Fatalf("temporary files %v, want one", temps())
	}
	f.open(-1).Close()
	if len(temps()) != 1 {
		t.Fatal("a live build's temporary file was removed")
	}
	cmd.Process.Kill()
	cmd.Wait()
	f.open(-1).Close()
	if len(temps()) != 0 {
		t.Errorf("a dead build's temporary file was kept: %v", temps())
	}
	if n := f.noted(); !strings.Contains(n, "left by a build that did not finish") {
		t.Errorf("notes %q", n)
	}
	if names, _ := os.ReadDir(f.dir); len(names) != 0 {
		t.Errorf("files left: %v", names)
	}
}

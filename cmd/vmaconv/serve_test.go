package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/remote/remotetest"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serving runs vmaconv serve ARGS in-process until the test ends and
// returns the export URIs it prints.
func serving(t *testing.T, args ...string) map[string]string {
	t.Helper()
	uris, _ := servingErr(t, args...)
	return uris
}

// servingErr is serving, that also returns what serve writes to stderr.
func servingErr(t *testing.T, args ...string) (map[string]string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() { done <- run(ctx, append([]string{"serve"}, args...), nil, &stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case st := <-done:
			if st != exitInterrupted || !strings.HasSuffix(stderr.String(), "vmaconv: interrupted\n") {
				t.Errorf("serve ended with status %d, want %d (interrupted): %s", st, exitInterrupted, stderr.String())
			}
		case <-time.After(interruptGrace):
			t.Errorf("serve did not end within %v of its interruption", interruptGrace)
		}
	})
	// "  NAME  SIZE  URI", NAME printable() (quoted if it has spaces)
	uri := regexp.MustCompile(`(?m)^  (.*\S) +[\d.]+ [KMGTPE]?i?B  (nbd\S+)$`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case st := <-done:
			t.Fatalf("serve exited with status %d: %s", st, stderr.String())
		default:
		}
		if strings.Contains(stdout.String(), "  nbd") { // the table has begun
			time.Sleep(50 * time.Millisecond) // every line printed
			out := map[string]string{}
			for _, x := range uri.FindAllStringSubmatch(stdout.String(), -1) {
				out[x[1]] = x[2]
			}
			if len(out) == 0 {
				t.Fatalf("serve printed no URI: %s", stdout.String())
			}
			return out, &stderr
		}
	}
	t.Fatalf("serve printed no exports: %s %s", stdout.String(), stderr.String())
	return nil, nil
}

// TestServeGolden: every device of every golden archive, plain and
// compressed (through the cache), served over NBD: qemu-img reads it
// byte for byte as the manifest says and as a restore gives it, sees its
// unstored clusters as zero ranges (qemu-img map), and copies it sparse.
func TestServeGolden(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dir, manifest := testutil.LoadManifest(t)
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "cache")
	for name, want := range manifest {
		if len(want.Devices) == 0 {
			continue
		}
		for _, a := range []string{name} { // the manifest lists the compressed ones too
			t.Run(a, func(t *testing.T) {
				path := filepath.Join(dir, a)
				uris := serving(t, path, "--socket", filepath.Join(tmp, a+".sock"), "--cache-dir", cache)
				for _, d := range want.Devices {
					if d.Name == "vmstate" {
						continue
					}
					uri, ok := uris[d.Name]
					if !ok {
						t.Fatalf("%s not served: %v", d.Name, uris)
					}
					out := filepath.Join(tmp, a+"."+d.Name+".raw")
					qemuImg(t, "convert", "-O", "raw", uri, out)
					if got := fileSHA(t, out); got != d.SHA256 {
						t.Errorf("%s: sha256 %s over NBD, manifest %s", d.Name, got, d.SHA256)
					}
					restored := filepath.Join(tmp, a+"."+d.Name+".restored.raw")
					vmaconv(t, path+":"+d.Name, restored)
					qemuImg(t, "compare", "-f", "raw", restored, uri)
					// The zero ranges qemu-img map sees are zero, and the
					// copy made through NBD is no larger on disk than the
					// restore.
					js := qemuImg(t, "map", "--output=json", uri)
					var m []struct {
						Start, Length int64
						Zero, Data    bool
					}
					if err := json.Unmarshal(js, &m); err != nil {
						t.Fatal(err)
					}
					b, _ := os.ReadFile(restored)
					var zero int64
					for _, x := range m {
						if x.Zero {
							zero += x.Length
							if !testutil.AllZero(b[x.Start : x.Start+x.Length]) {
								t.Errorf("%s: qemu-img map says %d bytes at %d are zero; they are not", d.Name, x.Length, x.Start)
							}
						}
					}
					if zero == 0 && bytes.Count(b, []byte{0}) > len(b)/2 {
						t.Errorf("%s: qemu-img map shows no zero range", d.Name)
					}
					if nb, rb := blocks(t, out), blocks(t, restored); nb > rb {
						t.Errorf("%s: the copy through NBD takes %d bytes on disk, the restore %d", d.Name, nb, rb)
					}
				}
			})
		}
	}
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestServeCLI: what serve refuses, and that it serves chosen devices only.
func TestServeCLI(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	arc := filepath.Join(dir, "vzdump-qemu-100-2024_06_10-06_13_20.vma")
	ex, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(t), "examples", "vzdump-qemu-100-2024_06_10-06_13_20.vma"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(arc, ex, 0o644)
	uris := serving(t, arc, "--socket", filepath.Join(dir, "s"), "-d", "scsi0")
	if len(uris) != 1 || uris["drive-scsi0"] == "" {
		t.Errorf("-d scsi0 served %v", uris)
	}
	fi, err := os.Stat(filepath.Join(dir, "s"))
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("socket %v (%v): want it for the owner only", fi.Mode(), err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-", "--socket", filepath.Join(dir, "x")}, "reading at random needs an archive file, not standard input"},
		{[]string{arc, "-d", "drive-virtio7", "--socket", filepath.Join(dir, "y")}, `no device "drive-virtio7" in the archive (devices: drive-efidisk0, drive-scsi0)`},
		{[]string{arc, "--socket", filepath.Join(dir, "s")}, filepath.Join(dir, "s") + ": a server is listening on it"},
	} {
		var stderr bytes.Buffer
		st := run(refusing(t), append([]string{"serve"}, tc.args...), nil, &bytes.Buffer{}, &stderr)
		if st == 0 || !strings.Contains(stderr.String(), tc.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("serve %v: status %d, %q; want one line with %q", tc.args, st, stderr.String(), tc.want)
		}
	}
	// TCP, on a port the system picks.
	tcp := serving(t, arc, "--listen", "127.0.0.1:0")
	if u := tcp["drive-efidisk0"]; !strings.HasPrefix(u, "nbd://127.0.0.1:") {
		t.Errorf("--listen: URI %q", u)
	} else {
		out := filepath.Join(dir, "efi.raw")
		qemuImg(t, "convert", "-O", "raw", u, out)
		vmaconv(t, arc+":efidisk0", filepath.Join(dir, "efi-restored.raw"))
		qemuImg(t, "compare", "-f", "raw", "-F", "raw", out, filepath.Join(dir, "efi-restored.raw"))
	}
	// A damaged archive is refused at open, in one line.
	bad := bytes.Clone(ex)
	bad[12800+100] ^= 0xff // inside the first extent's header
	badPath := filepath.Join(dir, "vzdump-qemu-101-2024_06_10-06_13_20.vma")
	os.WriteFile(badPath, bad, 0o644)
	var stderr bytes.Buffer
	if st := run(refusing(t), []string{"serve", badPath, "--socket", filepath.Join(dir, "z")}, nil, &bytes.Buffer{}, &stderr); st != 1 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), badPath+": vma: ") {
		t.Errorf("damaged archive: status %d, %q", st, stderr.String())
	}
	p, err := kong.New(&cli{}, kong.Name("vmaconv"), helpVars(""))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(commandWords(p.Model), "serve") {
		t.Error("serve is not among the commands")
	}
}

// TestServeSeekable: a seekable .vma.zst is served at random with no
// cache, is what zstd -d and vmaconv read as a stream, and --seekable is
// refused where it means nothing.
func TestServeSeekable(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	disk := testutil.GenDisk(3, 9<<20+4096, "mixed")
	os.WriteFile(at("d.raw"), disk, 0o644)
	arc := at("vzdump-qemu-100-2024_06_10-06_13_20.vma.zst")
	vmaconv(t, "-f", "raw", at("d.raw"), arc, "--seekable", "--uuid", "6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "--ctime", "1718000000")
	plain := at("plain.vma")
	vmaconv(t, "-f", "raw", at("d.raw"), plain, "--uuid", "6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "--ctime", "1718000000")
	if zstd, err := exec.LookPath("zstd"); err == nil {
		out, err := exec.Command(zstd, "-q", "-d", "-c", arc).Output()
		want, _ := os.ReadFile(plain)
		if err != nil || !bytes.Equal(out, want) {
			t.Errorf("zstd -d of the seekable archive is not the plain archive (%v)", err)
		}
	} else {
		testutil.RequireTool(t, "zstd")
	}
	cache := at("cache")
	uris := serving(t, arc, "--socket", at("s"), "--cache-dir", cache)
	out := at("nbd.raw")
	qemuImg(t, "convert", "-O", "raw", uris["drive-scsi0"], out)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, disk) {
		t.Error("the seekable archive served over NBD differs from the disk")
	}
	if es, _ := os.ReadDir(cache); len(es) > 0 {
		t.Errorf("a seekable archive was cached: %v", es)
	}
	var stderr bytes.Buffer
	for _, args := range [][]string{
		{"-f", "raw", at("d.raw"), at("x.vma.gz"), "--seekable"},
		{"-f", "raw", at("d.raw"), at("x.qcow2"), "--seekable"},
		{"-f", "raw", at("d.raw"), at("x.vma"), "--seekable"},
	} {
		stderr.Reset()
		if st := run(context.Background(), args, nil, &bytes.Buffer{}, &stderr); st != 2 || !strings.Contains(stderr.String(), "--seekable") {
			t.Errorf("vmaconv %v: status %d, %q", args, st, stderr.String())
		}
	}
}

// refusing is the context of a serve that must fail at once: if it
// serves instead, it is interrupted after 10 s (and fails the test: an
// interrupted serve exits 130).
func refusing(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// qemuImg runs qemu-img against a served export, with a deadline of 60 s
// (a server that stops answering fails the test instead of hanging it),
// and returns its standard output.
func qemuImg(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, testutil.RequireTool(t, "qemu-img"), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// TestServeSocket: the URIs printed are percent-escaped, so that qemu-img
// opens them with a socket path and a device name full of characters
// that mean something in a URI; a socket a server listens on is refused,
// naming it; one left by a killed server is replaced; a file that is not
// a socket is left alone.
func TestServeSocket(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := filepath.Join(t.TempDir(), "u d#?&=+%")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	at := func(n string) string { return filepath.Join(dir, n) }
	const name = "drive-x y#1?%&=+;é"
	disk := testutil.GenDisk(5, 1<<20, "mixed")
	os.WriteFile(at("d.raw"), disk, 0o644)
	arc := at("vzdump-qemu-100-2024_06_10-06_13_20.vma")
	os.WriteFile(arc, testutil.WriteArchive(t, []testutil.Disk{{Name: name, Data: disk}, {Name: "drive-scsi1", Data: disk[:64<<10]}}, nil, "seq", 0), 0o644)
	sock := at("s#1.sock")
	uris := serving(t, arc, "--socket", sock)
	uri := uris[printable(name)]
	esc := strings.NewReplacer(" ", "%20", "#", "%23", "?", "%3F", "&", "%26", "=", "%3D", "+", "%2B", "%", "%25")
	if want := "nbd+unix:///drive-x%20y%231%3F%25%26%3D%2B%3B%C3%A9?socket=" + esc.Replace(sock); uri != want {
		t.Fatalf("URI %q, want %q", uri, want)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if out := qemuImg(t, "info", "--output=json", uri); json.Unmarshal(out, &info) != nil || info.VirtualSize != 1<<20 {
		t.Errorf("qemu-img info %s: %s", uri, out)
	}
	qemuImg(t, "compare", "-f", "raw", at("d.raw"), uri)
	// A live socket is refused, naming its server (this process).
	var stderr bytes.Buffer
	who := "" // the system does not tell
	if runtime.GOOS == "linux" {
		comm, err := os.ReadFile("/proc/self/comm")
		if err != nil {
			t.Fatal(err)
		}
		who = fmt.Sprintf(" (pid %d, %s)", os.Getpid(), strings.TrimSpace(string(comm)))
	}
	if st := run(refusing(t), []string{"serve", arc, "--socket", sock}, nil, &bytes.Buffer{}, &stderr); st != 1 ||
		stderr.String() != fmt.Sprintf("vmaconv: %s: a server is listening on it%s; stop it, or choose another --socket\n", sock, who) {
		t.Errorf("serve on a live socket: status %d, %q", st, stderr.String())
	}
	// A file that is not a socket is left alone.
	os.WriteFile(at("file"), []byte("keep"), 0o600)
	stderr.Reset()
	if st := run(refusing(t), []string{"serve", arc, "--socket", at("file")}, nil, &bytes.Buffer{}, &stderr); st != 1 || !strings.Contains(stderr.String(), "exists and is not a socket") {
		t.Errorf("serve on a regular file: status %d, %q", st, stderr.String())
	}
	if b, err := os.ReadFile(at("file")); err != nil || string(b) != "keep" {
		t.Errorf("the regular file became %q (%v)", b, err)
	}
	// A socket no one listens on (its server was killed) is replaced.
	l, err := net.Listen("unix", at("stale"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	uris, errs := servingErr(t, arc, "--socket", at("stale"))
	if !strings.Contains(errs.String(), "vmaconv: note: "+at("stale")+": replaced a socket no server listened on") {
		t.Errorf("stale socket replaced without a note: %q", errs.String())
	}
	qemuImg(t, "compare", "-f", "raw", at("d.raw"), uris[printable(name)])
}

// serveProcess starts vmaconv serve ARGS as a process of its own (this
// test binary under the name vmaconv, as testscript runs it) and waits,
// at most 10 s, for its first URI. The process is killed when the test
// ends, if it is still running.
func serveProcess(t *testing.T, args ...string) (cmd *exec.Cmd, uri string, stderr *syncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "vmaconv")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	var stdout syncBuffer
	stderr = &syncBuffer{}
	cmd = exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	re := regexp.MustCompile(`(?m) (nbd\S+)$`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			return cmd, m[1], stderr
		}
	}
	t.Fatalf("serve printed no URI: %q %q", stdout.String(), stderr.String())
	return nil, "", nil
}

// nbdGo connects to an NBD server on a Unix socket and enters
// transmission with export name, simple replies (the least of a client,
// for tests that need the protocol's bytes); the connection has a
// deadline of 10 s.
func nbdGo(t *testing.T, sock, name string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	be := binary.BigEndian
	if _, err := io.ReadFull(c, make([]byte, 18)); err != nil {
		t.Fatal(err)
	}
	b := be.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	b = be.AppendUint64(b, 0x49484156454f5054)
	b = be.AppendUint32(b, 7) // NBD_OPT_GO
	b = be.AppendUint32(b, uint32(4+len(name)+2))
	b = append(be.AppendUint32(b, uint32(len(name))), name...)
	if _, err := c.Write(append(b, 0, 0)); err != nil {
		t.Fatal(err)
	}
	for {
		h := make([]byte, 20)
		if _, err := io.ReadFull(c, h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, c, int64(be.Uint32(h[16:]))); err != nil {
			t.Fatal(err)
		}
		switch typ := be.Uint32(h[12:]); {
		case typ == 1:
			return c
		case typ&(1<<31) != 0:
			t.Fatalf("NBD_OPT_GO %q: error %#x", name, typ)
		}
	}
}

// nbdRead sends a read request with simple replies.
func nbdRead(t *testing.T, c net.Conn, handle, off uint64, n uint32) {
	t.Helper()
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0x25609513)
	b = be.AppendUint32(b, 0) // flags, NBD_CMD_READ
	b = be.AppendUint64(b, handle)
	b = be.AppendUint64(b, off)
	if _, err := c.Write(be.AppendUint32(b, n)); err != nil {
		t.Fatal(err)
	}
}

// TestServeShutdown: on SIGTERM serve accepts no more connections, sends
// a reply it has begun whole, answers a request that arrives meanwhile
// with ESHUTDOWN, then exits 143 (interrupted) within the grace period
// and removes its socket; SIGINT with nothing in flight exits 130 at
// once. A serve killed (SIGKILL) leaves its socket, which the next one
// replaces.
func TestServeShutdown(t *testing.T) {
	dir := t.TempDir()
	disk := testutil.GenDisk(7, 8<<20, "data")
	arc := filepath.Join(dir, "vzdump-qemu-100-2024_06_10-06_13_20.vma")
	os.WriteFile(arc, testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: disk}}, nil, "seq", 0), 0o644)
	sock := filepath.Join(dir, "s")
	be := binary.BigEndian
	t.Run("SIGTERM", func(t *testing.T) {
		cmd, _, stderr := serveProcess(t, arc, "--socket", sock)
		c := nbdGo(t, sock, "drive-scsi0")
		nbdRead(t, c, 1, 0, uint32(len(disk)))
		got := make([]byte, 16+64<<10) // the reply's header and its first bytes: the rest waits
		if _, err := io.ReadFull(c, got); err != nil || be.Uint32(got[4:]) != 0 || be.Uint64(got[8:]) != 1 {
			t.Fatalf("reply %x: %v", got[:16], err)
		}
		start := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			d, err := net.Dial("unix", sock)
			if err != nil {
				break
			}
			d.Close()
			if time.Now().After(deadline) {
				t.Fatal("serve accepts connections a second after SIGTERM")
			}
		}
		time.Sleep(50 * time.Millisecond) // the connection's shutdown has begun too
		nbdRead(t, c, 2, 0, 4096)
		rest := make([]byte, len(disk)-64<<10+16)
		if _, err := io.ReadFull(c, rest); err != nil {
			t.Fatalf("the reply in flight at SIGTERM: %v", err)
		}
		if !bytes.Equal(append(got[16:], rest[:len(rest)-16]...), disk) {
			t.Error("the reply in flight at SIGTERM is not the disk")
		}
		if h := rest[len(rest)-16:]; be.Uint32(h[4:]) != 108 || be.Uint64(h[8:]) != 2 {
			t.Errorf("a request after SIGTERM: reply %x, want ESHUTDOWN (108)", h)
		}
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("the connection is still open after its last reply (%d more bytes)", n)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 143 || !strings.HasSuffix(stderr.String(), "vmaconv: interrupted\n") {
			t.Errorf("serve after SIGTERM: %v, %q; want exit status 143, interrupted", err, stderr.String())
		}
		if d := time.Since(start); d > interruptGrace {
			t.Errorf("serve took %v to end after SIGTERM", d)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
	})
	t.Run("SIGINT", func(t *testing.T) {
		cmd, _, stderr := serveProcess(t, arc, "--socket", sock)
		nbdGo(t, sock, "drive-scsi0") // connected, nothing in flight
		start := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 || !strings.HasSuffix(stderr.String(), "vmaconv: interrupted\n") {
			t.Errorf("serve after SIGINT: %v, %q; want exit status 130, interrupted", err, stderr.String())
		}
		if d := time.Since(start); d > serveGrace()/2 {
			t.Errorf("serve with an idle client took %v to end after SIGINT", d)
		}
	})
	t.Run("SIGKILL", func(t *testing.T) {
		cmd, _, _ := serveProcess(t, arc, "--socket", sock)
		cmd.Process.Kill()
		cmd.Wait()
		if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("no socket left by the killed serve: %v", err)
		}
		_, uri, stderr := serveProcess(t, arc, "--socket", sock)
		// The note is on stderr, the URI on stdout: two pipes, copied
		// apart, so the note may come after the URI is seen.
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "replaced a socket no server listened on"); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("stderr %q", stderr.String())
			}
		}
		out := filepath.Join(dir, "out.raw")
		qemuImg(t, "convert", "-O", "raw", uri, out)
		if b, _ := os.ReadFile(out); !bytes.Equal(b, disk) {
			t.Error("served after replacing the stale socket: not the disk")
		}
	})
}

// TestServeRemote: an archive on an HTTP server is served at random as a
// local one is (ranged reads, no cache), and qemu-img reads the same disk.
func TestServeRemote(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	ex, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(t), "examples", "vzdump-qemu-100-2024_06_10-06_13_20.vma"))
	if err != nil {
		t.Fatal(err)
	}
	h := remotetest.NewHTTP(t)
	h.Put("/dump/vm.vma", ex)
	cache := filepath.Join(dir, "cache")
	uris := serving(t, h.URL+"/dump/vm.vma", "--socket", filepath.Join(dir, "s"), "--cache-dir", cache)
	out := filepath.Join(dir, "nbd.raw")
	qemuImg(t, "convert", "-O", "raw", uris["drive-scsi0"], out)
	local := filepath.Join(dir, "vm.vma")
	os.WriteFile(local, ex, 0o644)
	vmaconv(t, local+":scsi0", filepath.Join(dir, "local.raw"))
	qemuImg(t, "compare", "-f", "raw", "-F", "raw", out, filepath.Join(dir, "local.raw"))
	if es, _ := os.ReadDir(cache); len(es) > 0 {
		t.Errorf("a remote plain archive was cached: %v", es)
	}
	if h.Counts.Sent.Load() == 0 {
		t.Error("nothing was read from the server")
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/internal/testutil"
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
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() { done <- run(ctx, append([]string{"serve"}, args...), nil, &stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if st := <-done; st != 0 {
			t.Errorf("serve ended with status %d: %s", st, stderr.String())
		}
	})
	uri := regexp.MustCompile(`(?m)^  (\S+) +.* (nbd\S+)$`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case st := <-done:
			t.Fatalf("serve exited with status %d: %s", st, stderr.String())
		default:
		}
		if m := uri.FindAllStringSubmatch(stdout.String(), -1); len(m) > 0 && strings.Contains(stdout.String(), "\n") {
			time.Sleep(50 * time.Millisecond) // every line printed
			out := map[string]string{}
			for _, x := range uri.FindAllStringSubmatch(stdout.String(), -1) {
				out[x[1]] = x[2]
			}
			return out
		}
	}
	t.Fatalf("serve printed no exports: %s %s", stdout.String(), stderr.String())
	return nil
}

// TestServeGolden: every device of every golden archive, plain and
// compressed (through the cache), served over NBD: qemu-img reads it
// byte for byte as the manifest says and as a restore gives it, sees its
// unstored clusters as zero ranges (qemu-img map), and copies it sparse.
func TestServeGolden(t *testing.T) {
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
					testutil.Run(t, "qemu-img", "convert", "-O", "raw", uri, out)
					if got := fileSHA(t, out); got != d.SHA256 {
						t.Errorf("%s: sha256 %s over NBD, manifest %s", d.Name, got, d.SHA256)
					}
					restored := filepath.Join(tmp, a+"."+d.Name+".restored.raw")
					vmaconv(t, path+":"+d.Name, restored)
					testutil.Run(t, "qemu-img", "compare", "-f", "raw", restored, uri)
					// The zero ranges qemu-img map sees are zero, and the
					// copy made through NBD is no larger on disk than the
					// restore.
					js, err := exec.Command("qemu-img", "map", "--output=json", uri).Output()
					if err != nil {
						t.Fatal(err)
					}
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
		{[]string{arc, "--socket", filepath.Join(dir, "s")}, "address already in use"},
	} {
		var stderr bytes.Buffer
		st := run(context.Background(), append([]string{"serve"}, tc.args...), nil, &bytes.Buffer{}, &stderr)
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
		testutil.Run(t, "qemu-img", "convert", "-O", "raw", u, out)
		vmaconv(t, arc+":efidisk0", filepath.Join(dir, "efi-restored.raw"))
		testutil.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", out, filepath.Join(dir, "efi-restored.raw"))
	}
	// A damaged archive is refused at open, in one line.
	bad := bytes.Clone(ex)
	bad[12800+100] ^= 0xff // inside the first extent's header
	badPath := filepath.Join(dir, "vzdump-qemu-101-2024_06_10-06_13_20.vma")
	os.WriteFile(badPath, bad, 0o644)
	var stderr bytes.Buffer
	if st := run(context.Background(), []string{"serve", badPath, "--socket", filepath.Join(dir, "z")}, nil, &bytes.Buffer{}, &stderr); st != 1 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), badPath+": vma: ") {
		t.Errorf("damaged archive: status %d, %q", st, stderr.String())
	}
	if !slices.Contains(commands, "serve") {
		t.Error("serve is not among the commands")
	}
}

// TestServeSeekable: a seekable .vma.zst is served at random with no
// cache, is what zstd -d and vmaconv read as a stream, and --seekable is
// refused where it means nothing.
func TestServeSeekable(t *testing.T) {
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
	testutil.Run(t, "qemu-img", "convert", "-O", "raw", uris["drive-scsi0"], out)
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

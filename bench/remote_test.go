package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
	"github.com/vmaconv/vmaconv/remote"
	"github.com/vmaconv/vmaconv/remote/remotetest"
)

// The remote restore's archive: two disks stored as Proxmox interleaves
// them (runs of 1 to 4 clusters each in turn), so that restoring one reads
// runs scattered among the other's: a 64 MiB disk (half its 4 KiB blocks
// zero) and a 32 MiB one.
const remoteDisk = 64 << 20

var (
	remoteOnce sync.Once
	remoteArc  []byte
	remotePath string
	remoteDir  string // removed by TestMain
)

func remoteArchive(b *testing.B) ([]byte, string) {
	remoteOnce.Do(func() {
		remoteArc = testutil.WriteArchive(b, []testutil.Disk{
			{Name: "drive-scsi0", Data: disk(remoteDisk)},
			{Name: "drive-scsi1", Data: testutil.GenDisk(3, 32<<20, "data")},
		}, nil, "runs", 1)
		var err error
		if remoteDir, err = os.MkdirTemp("", "vmaconv-bench-remote-"); err != nil {
			b.Fatal(err)
		}
		remotePath = filepath.Join(remoteDir, "vm.vma")
		if err := os.WriteFile(remotePath, remoteArc, 0o644); err != nil {
			b.Fatal(err)
		}
	})
	return remoteArc, remotePath
}

// restore does what vmaconv ARCHIVE:drive-scsi0 out.raw does: it returns
// the bytes the disk stores in the archive.
func restore(b *testing.B, ref string, o remote.Options, out string) int64 {
	in, err := input.Open(context.Background(), all.Registry(), format.ParseRef(ref), input.Options{Remote: o})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	i, err := in.One()
	if err != nil {
		b.Fatal(err)
	}
	stored := int64(-1)
	if st, ok := in.Image().Disks()[i].Source.(format.Stored); ok {
		stored = st.Stored()
	}
	os.Remove(out)
	sink, err := raw.Create(format.Dest{Path: out}, []format.Device{{Size: in.Devices()[i].Size}}, format.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Abort()
	if err := pipeline.Convert(context.Background(), sink, []pipeline.Selection{{Input: in, Disks: []int{i}}}, pipeline.ConvertOptions{Workers: benchWorkers}); err != nil {
		b.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		b.Fatal(err)
	}
	return stored
}

// BenchmarkRemoteRestore: one disk of a plain archive restored to a raw
// file from a local file, from S3 (gofakes3 on loopback) and from an HTTP
// server on loopback (device bytes per second: the 64 MiB disk). The
// servers count the body bytes they send: transfer/stored is that over the
// bytes the disk stores in the archive, which must stay at most 1.05 (the
// benchmark fails past it): only the disk's runs and the extent headers
// are fetched, not the other disk's data. Compare the remote rows' MB/s
// with the local one: the goal is at least 0.8 of it.
func BenchmarkRemoteRestore(b *testing.B) {
	arc, local := remoteArchive(b)
	s3 := remotetest.NewS3(b)
	s3.Bucket(b, "bench")
	s3.Put(b, "bench", "vm.vma", arc)
	h := remotetest.NewHTTP(b)
	h.Put("/vm.vma", arc)
	for _, c := range []struct {
		name string
		ref  string
		o    remote.Options
		sent func() int64
	}{
		{"local", local + ":drive-scsi0", remote.Options{}, nil},
		{"s3", "s3://bench/vm.vma:drive-scsi0", remote.Options{Env: s3.Getenv}, s3.Counts.Sent.Load},
		{"http", h.URL + "/vm.vma:drive-scsi0", remote.Options{}, h.Counts.Sent.Load},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(remoteDisk)
			out := filepath.Join(b.TempDir(), "out.raw")
			var sent, stored int64
			for b.Loop() {
				before := int64(0)
				if c.sent != nil {
					before = c.sent()
				}
				stored = restore(b, c.ref, c.o, out)
				if c.sent != nil {
					sent = c.sent() - before
				}
			}
			if c.sent != nil {
				ratio := float64(sent) / float64(stored)
				b.ReportMetric(ratio, "transfer/stored")
				if ratio > 1.05 {
					b.Fatalf("restoring one disk transferred %d bytes for the %d it stores: %.3f×, more than 1.05×", sent, stored, ratio)
				}
			}
		})
	}
}

var benchWorkers = 0

// The environment that makes the test binary an HTTP server child of
// BenchmarkRemoteRestoreApart: it serves the file named by the variable
// at /vm.vma, prints its URL, and runs until its standard input closes.
const apartServerEnv = "VMACONV_BENCH_HTTP_SERVE"

// httpServerChild is that child.
func httpServerChild(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h := remotetest.StartHTTP()
	defer h.Close()
	h.Put("/vm.vma", data)
	fmt.Println(h.URL)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// BenchmarkRemoteRestoreApart is BenchmarkRemoteRestore's local and HTTP
// rows with the HTTP server in a process of its own, on CPU 1 where
// taskset is installed, as a server is on another machine: run the
// benchmark on CPU 0 (taskset -c 0 go test -bench RemoteRestoreApart) to
// compare one client core reading a local file with one reading from the
// server. Issue 23's goal: the HTTP row at least 0.8 of the local one.
func BenchmarkRemoteRestoreApart(b *testing.B) {
	_, local := remoteArchive(b)
	args := []string{os.Args[0], "-test.run=^$"}
	if ts, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{ts, "-c", "1"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), apartServerEnv+"="+local)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("server child: %v", err)
	}
	url = strings.TrimSpace(url)
	for _, c := range []struct{ name, ref string }{
		{"local", local + ":drive-scsi0"},
		{"http", url + "/vm.vma:drive-scsi0"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(remoteDisk)
			out := filepath.Join(b.TempDir(), "out.raw")
			cpu, srv := selfCPU(), procCPU(cmd.Process.Pid)
			for b.Loop() {
				restore(b, c.ref, remote.Options{}, out)
			}
			// The CPU time of each side per restore: the client's,
			// beside its wall time (ns/op), says whether it waited;
			// the server's whether it was the bound.
			if cpu >= 0 {
				b.ReportMetric(float64(selfCPU()-cpu)/float64(b.N)/1e6, "client-cpu-ms/op")
			}
			if srv >= 0 && c.name == "http" {
				if now := procCPU(cmd.Process.Pid); now >= 0 {
					b.ReportMetric(float64(now-srv)/float64(b.N)/1e6, "server-cpu-ms/op")
				}
			}
		})
	}
}

// selfCPU returns the user and system time of this process so far, or -1.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the user and system time of process pid so far, from
// /proc (counted in clock ticks, USER_HZ: 100 a second on Linux), or -1
// where there is no /proc.
func procCPU(pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after the command's name, "(…)": utime and stime are
	// the 12th and 13th of them.
	i := strings.LastIndexByte(string(st), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(u+s) * 10 * time.Millisecond
}

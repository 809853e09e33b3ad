//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// graceEnv sets interruptGrace in vmaconv run as a process by the tests
// (this test binary under the name vmaconv), so that a test can wait past
// it cheaply.
const graceEnv = "VMACONV_TEST_GRACE"

func init() {
	if d, err := time.ParseDuration(os.Getenv(graceEnv)); err == nil {
		interruptGrace = d
	}
}

// vmaconvBinary returns this test binary under the name vmaconv, which
// runs main (TestMain).
func vmaconvBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "vmaconv")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// extractGrace is the grace period of the stalled extracts: shorter than
// vmaconv's, so that waiting it out is cheap.
const extractGrace = time.Second

// stalledExtract starts vmaconv extract (this test binary under the name
// vmaconv, as testscript runs it) on a FIFO that delivers the first 300000
// bytes of archive raw, cut inside its first extent, and then stays open
// and silent, and waits until the output directory exists: the command is
// then blocked in a read.
func stalledExtract(t *testing.T, raw []byte) (cmd *exec.Cmd, out string, stderr *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	bin := vmaconvBinary(t)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		w.Write(raw[:300000])
		time.Sleep(30 * time.Second) // holds the pipe open, silent
		w.Close()
	}()
	out = filepath.Join(dir, "out")
	stderr = &bytes.Buffer{}
	cmd = exec.Command(bin, "extract", fifo, out)
	cmd.Env = append(os.Environ(), graceEnv+"="+extractGrace.String())
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(out); err == nil {
			return cmd, out, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("extract did not start: %s", stderr.String())
		}
	}
}

// TestSignals pins the exit statuses: SIGINT 130 and SIGTERM 143, the
// partial output removed and "interrupted" said, even when the command is
// stuck in a read (after the grace period); a second signal during it
// kills the process at once.
func TestSignals(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(3, 1<<20, "data")}},
		[]format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}, "seq", 0)
	for _, tc := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			t.Parallel() // each mostly waits for its process
			cmd, out, stderr := stalledExtract(t, raw)
			cmd.Process.Signal(tc.sig)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.want {
				t.Fatalf("after %v: %v, want exit status %d", tc.sig, err, tc.want)
			}
			if !strings.HasSuffix(stderr.String(), "vmaconv: interrupted\n") {
				t.Errorf("stderr %q", stderr.String())
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("partial output left behind: %v", err)
			}
		})
	}
	t.Run("second signal", func(t *testing.T) {
		t.Parallel()
		// The first signal must find the command still blocked in its
		// read (on a loaded machine it may not have got there yet, and
		// then ends by itself, 130): such attempts are retried.
		for attempt := 1; ; attempt++ {
			cmd, _, _ := stalledExtract(t, raw)
			time.Sleep(300 * time.Millisecond) // into the read that never returns
			cmd.Process.Signal(syscall.SIGINT)
			time.Sleep(200 * time.Millisecond) // within the grace period
			if exited(cmd.Process.Pid) {
				cmd.Wait()
				if attempt == 5 {
					t.Fatal("the command never stayed blocked until the second signal")
				}
				t.Logf("attempt %d: the command ended before the second signal; again", attempt)
				continue
			}
			start := time.Now()
			cmd.Process.Signal(syscall.SIGINT)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("after two signals: %v", err)
			}
			ws, ok := ee.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
				t.Errorf("after two signals: %v, want killed by SIGINT", err)
			}
			if d := time.Since(start); d > extractGrace/2 {
				t.Errorf("the second signal took %v to end the process", d)
			}
			return
		}
	})
}

// exited reports whether process pid has ended (a zombie not yet waited
// for), from /proc where there is one.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

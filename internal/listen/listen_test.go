//go:build unix

package listen

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestUnix: a socket is made for its owner only and left in place by
// Close; a socket no one listens on is replaced and said to be, one a
// server listens on is refused naming the server, and a file that is not
// a socket is left alone.
func TestUnix(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	l, replaced, err := Unix(at("s"))
	if err != nil || replaced {
		t.Fatalf("Unix: %v, replaced %v", err, replaced)
	}
	fi, err := os.Lstat(at("s"))
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("socket %v: %v, want the owner's only", fi.Mode(), err)
	}
	// Live: refused, naming this process.
	who := ""
	if runtime.GOOS == "linux" {
		comm, _ := os.ReadFile("/proc/self/comm")
		who = fmt.Sprintf(" (pid %d, %s)", os.Getpid(), strings.TrimSpace(string(comm)))
	}
	if _, _, err := Unix(at("s")); err == nil || err.Error() != at("s")+": a server is listening on it"+who+"; stop it, or choose another --socket" {
		t.Errorf("a live socket: %v", err)
	}
	// Stale once closed: replaced.
	l.Close()
	if _, err := os.Lstat(at("s")); err != nil {
		t.Fatalf("Close removed the socket: %v", err)
	}
	l, replaced, err = Unix(at("s"))
	if err != nil || !replaced {
		t.Fatalf("a stale socket: %v, replaced %v", err, replaced)
	}
	c, err := net.Dial("unix", at("s"))
	if err != nil {
		t.Errorf("the replacing socket: %v", err)
	} else {
		c.Close()
	}
	l.Close()
	// Not a socket: left alone.
	os.WriteFile(at("f"), []byte("keep"), 0o600)
	if _, _, err := Unix(at("f")); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("a regular file: %v", err)
	}
	if b, _ := os.ReadFile(at("f")); string(b) != "keep" {
		t.Errorf("the file became %q", b)
	}
}

package nbd

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestURIs: names and socket paths are percent-escaped (RFC 3986), and
// qemu-img opens what is printed, with a socket path and an export name
// full of characters that mean something in a URI.
func TestURIs(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{UnixURI("/tmp/vm.sock", "drive-scsi0"), "nbd+unix:///drive-scsi0?socket=/tmp/vm.sock"},
		{UnixURI("/tmp/u d/s#1.sock", "drive-scsi0"), "nbd+unix:///drive-scsi0?socket=/tmp/u%20d/s%231.sock"},
		{UnixURI("/a?b&c=d+e%f", "x/y z?#%&=+ü"), "nbd+unix:///x%2Fy%20z%3F%23%25%26%3D%2B%C3%BC?socket=/a%3Fb%26c%3Dd%2Be%25f"},
		{UnixURI("s", ""), "nbd+unix:///?socket=s"},
		{TCPURI("127.0.0.1:10809", "drive-scsi0"), "nbd://127.0.0.1:10809/drive-scsi0"},
		{TCPURI("[::1]:10809", "a b"), "nbd://[::1]:10809/a%20b"},
		{TCPURI("[fe80::1%eth0]:10809", "d"), "nbd://[fe80::1%25eth0]:10809/d"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
	qemu := testutil.RequireTool(t, "qemu-img")
	dir := filepath.Join(t.TempDir(), "u d#?&=+%")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	name := "drive x/y#1?%&=+;ü"
	s := &Server{Exports: []Export{{Name: name, Source: source(1<<20, zeros{}, holes{})}, {Name: "other", Source: source(2<<20, zeros{}, nil)}}}
	sock := filepath.Join(dir, "s#1.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	}()
	out, err := exec.CommandContext(ctx, qemu, "info", "--output=json", UnixURI(sock, name)).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", UnixURI(sock, name), err, out)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.VirtualSize != 1<<20 {
		t.Errorf("qemu-img info %s: %s (%v), want the 1 MiB export", UnixURI(sock, name), out, err)
	}
}

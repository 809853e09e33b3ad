package listen

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/vmaconv/vmaconv/internal/text"
)

// peerProcess names the process at the other end of a Unix socket
// connection, " (pid N, NAME)", from SO_PEERCRED; "" if it cannot.
func peerProcess(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ""
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil || cred.Pid <= 0 {
		return ""
	}
	who := fmt.Sprintf(" (pid %d", cred.Pid)
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cred.Pid)); err == nil {
		who += ", " + text.Printable(strings.TrimSpace(string(comm)))
	}
	return who + ")"
}

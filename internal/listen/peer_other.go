//go:build unix && !linux

package listen

import "net"

// peerProcess names the process at the other end of a Unix socket
// connection where the system tells; here it does not.
func peerProcess(c net.Conn) string { return "" }

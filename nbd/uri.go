package nbd

import (
	"net"
	"strings"
)

// UnixURI is the URI of export name on the Unix socket at path, as NBD's
// doc/uri.md and RFC 3986 spell it, and qemu and libnbd read it:
// nbd+unix:///NAME?socket=PATH, name and path percent-escaped (a path's
// slashes kept).
func UnixURI(path, name string) string {
	return "nbd+unix:///" + escape(name, false) + "?socket=" + escape(path, true)
}

// TCPURI is the URI of export name at addr (HOST:PORT, as net.Listener
// Addr gives it): nbd://HOST:PORT/NAME, an IPv6 host in brackets, the
// name percent-escaped.
func TCPURI(addr, name string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if strings.Contains(host, ":") {
			host = "[" + strings.ReplaceAll(host, "%", "%25") + "]" // a zone's % escaped (RFC 6874)
		}
		addr = host + ":" + port
	}
	return "nbd://" + addr + "/" + escape(name, false)
}

// escape percent-escapes every byte of s except the unreserved
// characters of RFC 3986 (letters, digits, "-", ".", "_", "~"), and "/"
// if slash is set.
func escape(s string, slash bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/' && slash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

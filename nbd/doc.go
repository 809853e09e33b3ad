// Package nbd is a read-only NBD (Network Block Device) server: it
// exports disks (format.Source), with their holes, to NBD clients such as
// qemu-img, qemu-nbd, nbd-client, nbdfuse and guestfish.
//
// It speaks the fixed newstyle handshake with NBD_OPT_GO, NBD_OPT_INFO,
// NBD_OPT_LIST, NBD_OPT_EXPORT_NAME and NBD_OPT_ABORT; structured replies
// (NBD_OPT_STRUCTURED_REPLY), with reads that send holes as
// NBD_REPLY_TYPE_OFFSET_HOLE; and the base:allocation metadata context
// (NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT,
// NBD_CMD_BLOCK_STATUS), so that clients see which ranges read as zeros
// without reading them. Exports are read-only and safe for several
// connections at once (NBD_FLAG_CAN_MULTI_CONN); requests on one
// connection are served concurrently. The protocol is doc/proto.md of the
// NetworkBlockDevice project.
//
// Hostile clients get protocol errors, not a crashed or bloated server:
// option data, request lengths, requests in flight, connections and the
// handshake's duration are bounded. Each connection has a share of read
// buffers of its own, and a write deadline: a client that does not take
// its replies holds its share only, until its connection is dropped.
// When Serve's context ends, the requests in flight are answered (new
// ones get ESHUTDOWN) before the connections close. UnixURI and TCPURI
// name an export as clients expect (doc/uri.md).
package nbd

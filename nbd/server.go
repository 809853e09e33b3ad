package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/vmaconv/vmaconv/format"
)

// Export is one disk a Server offers.
type Export struct {
	// Name is what clients ask for (nbd+unix:///NAME?socket=…).
	Name string
	// Description is shown by clients that list exports.
	Description string
	// Size is the disk size in bytes.
	Size int64
	// Data reads the disk; it must allow parallel calls.
	Data io.ReaderAt
	// Map, if set, reports the ranges that read as zeros: block status
	// (base:allocation) shows them as holes, and reads send them as
	// holes without reading them.
	Map format.Extenter
}

// Server serves Exports, read-only. Its zero value needs Exports only.
type Server struct {
	Exports []Export
	// Default is the export a client gets when it asks for the empty
	// name; "" means the only export, if there is just one.
	Default string
	// MaxConns bounds the connections served at once (default 64);
	// more are closed as they arrive.
	MaxConns int
	// HandshakeTimeout bounds the negotiation (default 30 s): a client
	// that connects and says nothing does not hold a connection.
	HandshakeTimeout time.Duration
	// Log, if set, is told of connections that end with an error.
	Log func(msg string)

	once     sync.Once
	conns    *semaphore.Weighted
	inFlight *semaphore.Weighted // bytes of read buffers, all connections
}

// Limits.
const (
	// MaxPayload is the largest read served at once (qemu's own limit);
	// clients learn it from NBD_INFO_BLOCK_SIZE.
	MaxPayload = 32 << 20
	// maxInFlight bounds the bytes of read buffers of all connections.
	maxInFlight = 64 << 20
	// maxOptionData bounds one option's data (names are at most 4096
	// bytes, a few queries beside).
	maxOptionData = 64 << 10
	// maxRequestsPerConn bounds the requests served at once on one
	// connection.
	maxRequestsPerConn = 32
	// maxDescriptors bounds the extents of one block status reply.
	maxDescriptors = 1 << 12
)

// Protocol constants (doc/proto.md).
const (
	nbdMagic         = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic         = 0x49484156454f5054 // "IHAVEOPT"
	repMagic         = 0x3e889045565a9
	requestMagic     = 0x25609513
	simpleReplyMagic = 0x67446698
	structReplyMagic = 0x668e33ef

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName  = 1
	optAbort       = 2
	optList        = 3
	optStartTLS    = 5
	optInfo        = 6
	optGo          = 7
	optStructured  = 8
	optListMeta    = 9
	optSetMeta     = 10
	optExtHeaders  = 11
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrUnsup    = 1<<31 + 1
	repErrPolicy   = 1<<31 + 2
	repErrInvalid  = 1<<31 + 3
	repErrUnknown  = 1<<31 + 6
	repErrTooBig   = 1<<31 + 9

	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	tflagHasFlags   = 1 << 0
	tflagReadOnly   = 1 << 1
	tflagSendFlush  = 1 << 2
	tflagSendDF     = 1 << 7
	tflagMultiConn  = 1 << 8
	tflagSendCache  = 1 << 10
	cmdRead         = 0
	cmdWrite        = 1
	cmdDisc         = 2
	cmdFlush        = 3
	cmdTrim         = 4
	cmdCache        = 5
	cmdWriteZeroes  = 6
	cmdBlockStatus  = 7
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	replyFlagDone        = 1
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 + 1
	replyTypeErrorOffset = 1<<15 + 2

	stateHole = 1
	stateZero = 2

	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errOverflow = 75
	errNotSup   = 95

	baseAllocation   = "base:allocation"
	baseAllocationID = 1
)

func (s *Server) init() {
	s.once.Do(func() {
		n := s.MaxConns
		if n <= 0 {
			n = 64
		}
		s.conns = semaphore.NewWeighted(int64(n))
		s.inFlight = semaphore.NewWeighted(maxInFlight)
		if s.HandshakeTimeout <= 0 {
			s.HandshakeTimeout = 30 * time.Second
		}
	})
}

// Serve accepts connections on l and serves them until ctx is done (then
// it closes l and every connection, and returns nil) or Accept fails.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.init()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if !s.conns.TryAcquire(1) {
			c.Close() // too many: the client sees the connection closed
			s.logf("refused a connection: %d already served", s.MaxConns)
			continue
		}
		wg.Go(func() {
			defer s.conns.Release(1)
			if err := s.ServeConn(ctx, c); err != nil {
				s.logf("%v", err)
			}
		})
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log(fmt.Sprintf(format, args...))
	}
}

// ServeConn serves one connection until the client disconnects or ctx
// is done, and closes it. It returns the protocol error that ended it,
// if any (not a client's orderly disconnect).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	s.init()
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	cn := &conn{s: s, c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}
	c.SetDeadline(time.Now().Add(s.HandshakeTimeout))
	exp, err := cn.handshake()
	if err != nil || exp == nil {
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.SetDeadline(time.Time{})
	err = cn.transmit(ctx, exp)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
		return nil
	}
	return err
}

// conn is one client.
type conn struct {
	s          *Server
	c          net.Conn
	r          *bufio.Reader
	w          *bufio.Writer
	wmu        sync.Mutex // replies
	noZeroes   bool
	structured bool
	metaExport string // the export base:allocation was selected for
	metaOn     bool
}

// ProtocolError is a client's breach of the protocol that ends its
// connection.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "nbd: " + e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

func (cn *conn) find(name string) *Export {
	s := cn.s
	if name == "" {
		name = s.Default
		if name == "" && len(s.Exports) == 1 {
			return &s.Exports[0]
		}
	}
	for i := range s.Exports {
		if s.Exports[i].Name == name {
			return &s.Exports[i]
		}
	}
	return nil
}

func (cn *conn) names() string {
	var n []string
	for _, e := range cn.s.Exports {
		n = append(n, e.Name)
	}
	return strings.Join(n, ", ")
}

// transmission flags of every export.
func (cn *conn) tflags() uint16 {
	f := uint16(tflagHasFlags | tflagReadOnly | tflagSendFlush | tflagMultiConn | tflagSendCache)
	if cn.structured {
		f |= tflagSendDF
	}
	return f
}

// handshake runs the fixed newstyle negotiation; it returns the export
// chosen, or nil when the client ended the session.
func (cn *conn) handshake() (*Export, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if err := cn.send(hello[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(cn.r, cf[:]); err != nil {
		return nil, err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&flagFixedNewstyle == 0 {
		return nil, protoErr("client does not speak fixed newstyle (flags %#x)", flags)
	}
	if flags&^(flagFixedNewstyle|flagNoZeroes) != 0 {
		return nil, protoErr("unknown client flags %#x", flags)
	}
	cn.noZeroes = flags&flagNoZeroes != 0
	var hdr [16]byte
	for {
		if _, err := io.ReadFull(cn.r, hdr[:]); err != nil {
			return nil, err
		}
		if m := binary.BigEndian.Uint64(hdr[:]); m != optMagic {
			return nil, protoErr("bad option magic %#x", m)
		}
		opt, n := binary.BigEndian.Uint32(hdr[8:]), binary.BigEndian.Uint32(hdr[12:])
		if n > maxOptionData {
			// Skip what we will not hold, then say so.
			if _, err := io.CopyN(io.Discard, cn.r, int64(n)); err != nil {
				return nil, err
			}
			if opt == optExportName {
				return nil, protoErr("export name of %d bytes", n)
			}
			if err := cn.optReply(opt, repErrTooBig, []byte("option data too large")); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(cn.r, data); err != nil {
			return nil, err
		}
		exp, done, err := cn.option(opt, data)
		if err != nil || done {
			return exp, err
		}
	}
}

// option answers one option; done says the negotiation is over.
func (cn *conn) option(opt uint32, data []byte) (exp *Export, done bool, err error) {
	switch opt {
	case optExportName:
		e := cn.find(string(data))
		if e == nil {
			return nil, true, protoErr("no export %q (exports: %s)", data, cn.names())
		}
		var b [10 + 124]byte
		binary.BigEndian.PutUint64(b[0:], uint64(e.Size))
		binary.BigEndian.PutUint16(b[8:], cn.tflags())
		out := b[:]
		if cn.noZeroes {
			out = b[:10]
		}
		return e, true, cn.send(out)
	case optAbort:
		cn.optReply(opt, repAck, nil)
		return nil, true, nil
	case optList:
		if len(data) != 0 {
			return nil, false, cn.optReply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for _, e := range cn.s.Exports {
			b := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
			b = append(append(b, e.Name...), e.Description...)
			if err := cn.optReply(opt, repServer, b); err != nil {
				return nil, false, err
			}
		}
		return nil, false, cn.optReply(opt, repAck, nil)
	case optInfo, optGo:
		return cn.infoGo(opt, data)
	case optStructured:
		if len(data) != 0 {
			return nil, false, cn.optReply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		cn.structured = true
		return nil, false, cn.optReply(opt, repAck, nil)
	case optListMeta, optSetMeta:
		return nil, false, cn.meta(opt, data)
	case optStartTLS:
		return nil, false, cn.optReply(opt, repErrPolicy, []byte("TLS is not offered; use a Unix socket or a trusted network"))
	default: // optExtHeaders and anything unknown
		return nil, false, cn.optReply(opt, repErrUnsup, nil)
	}
}

// infoGo answers NBD_OPT_INFO and NBD_OPT_GO.
func (cn *conn) infoGo(opt uint32, data []byte) (*Export, bool, error) {
	if len(data) < 6 {
		return nil, false, cn.optReply(opt, repErrInvalid, []byte("short NBD_OPT_INFO/GO data"))
	}
	nl := binary.BigEndian.Uint32(data)
	if uint64(nl) > uint64(len(data))-6 {
		return nil, false, cn.optReply(opt, repErrInvalid, []byte("export name longer than the option"))
	}
	name := string(data[4 : 4+nl])
	rest := data[4+nl:]
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return nil, false, cn.optReply(opt, repErrInvalid, []byte("information requests do not match the option length"))
	}
	e := cn.find(name)
	if e == nil {
		msg := fmt.Sprintf("no export %q; exports: %s", name, cn.names())
		return nil, false, cn.optReply(opt, repErrUnknown, []byte(msg))
	}
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(e.Size))
	info = binary.BigEndian.AppendUint16(info, cn.tflags())
	if err := cn.optReply(opt, repInfo, info); err != nil {
		return nil, false, err
	}
	for i := range nreq {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			b := append(binary.BigEndian.AppendUint16(nil, infoName), e.Name...)
			if err := cn.optReply(opt, repInfo, b); err != nil {
				return nil, false, err
			}
		case infoDescription:
			b := append(binary.BigEndian.AppendUint16(nil, infoDescription), e.Description...)
			if err := cn.optReply(opt, repInfo, b); err != nil {
				return nil, false, err
			}
		}
	}
	// Size constraints are sent whether asked or not: a client that did
	// not ask is held to the defaults, which these are (any alignment,
	// payloads of up to 32 MiB).
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)
	bs = binary.BigEndian.AppendUint32(bs, 4096)
	bs = binary.BigEndian.AppendUint32(bs, MaxPayload)
	if err := cn.optReply(opt, repInfo, bs); err != nil {
		return nil, false, err
	}
	if err := cn.optReply(opt, repAck, nil); err != nil {
		return nil, false, err
	}
	if opt == optInfo {
		return nil, false, nil
	}
	if cn.metaOn && cn.metaExport != e.Name {
		cn.metaOn = false // selected for another export: not usable
	}
	return e, true, nil
}

// meta answers NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT:
// the one context is base:allocation.
func (cn *conn) meta(opt uint32, data []byte) error {
	if opt == optSetMeta {
		cn.metaOn = false // replaced, even on failure
	}
	if !cn.structured {
		return cn.optReply(opt, repErrInvalid, []byte("negotiate structured replies first"))
	}
	str := func(b []byte) (string, []byte, bool) {
		if len(b) < 4 {
			return "", nil, false
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b))-4 {
			return "", nil, false
		}
		return string(b[4 : 4+n]), b[4+n:], true
	}
	name, rest, ok := str(data)
	if !ok || len(rest) < 4 {
		return cn.optReply(opt, repErrInvalid, []byte("malformed metadata context request"))
	}
	nq := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for range nq {
		var q string
		if q, rest, ok = str(rest); !ok {
			return cn.optReply(opt, repErrInvalid, []byte("malformed metadata context query"))
		}
		queries = append(queries, q)
	}
	if len(rest) != 0 {
		return cn.optReply(opt, repErrInvalid, []byte("trailing data after the queries"))
	}
	e := cn.find(name)
	if e == nil {
		return cn.optReply(opt, repErrUnknown, []byte(fmt.Sprintf("no export %q; exports: %s", name, cn.names())))
	}
	match := opt == optListMeta && nq == 0
	for _, q := range queries {
		if q == baseAllocation || opt == optListMeta && q == "base:" {
			match = true
		}
	}
	if match {
		id := uint32(baseAllocationID)
		if opt == optListMeta {
			id = 0 // reserved in list replies
		}
		b := append(binary.BigEndian.AppendUint32(nil, id), baseAllocation...)
		if err := cn.optReply(opt, repMetaContext, b); err != nil {
			return err
		}
		if opt == optSetMeta {
			cn.metaOn, cn.metaExport = true, e.Name
		}
	}
	return cn.optReply(opt, repAck, nil)
}

func (cn *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], repMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	return cn.send(h[:], data)
}

// send writes and flushes, under the reply lock.
func (cn *conn) send(parts ...[]byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	for _, p := range parts {
		if _, err := cn.w.Write(p); err != nil {
			return err
		}
	}
	return cn.w.Flush()
}

// request is one transmission request.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	off    uint64
	length uint32
}

// transmit serves requests until the client disconnects: each one on a
// goroutine of its own, at most maxRequestsPerConn at once, and the read
// buffers of all connections within maxInFlight bytes.
func (cn *conn) transmit(ctx context.Context, e *Export) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxRequestsPerConn)
	var hdr [28]byte
	for {
		if _, err := io.ReadFull(cn.r, hdr[:]); err != nil {
			return err
		}
		if m := binary.BigEndian.Uint32(hdr[:]); m != requestMagic {
			return protoErr("bad request magic %#x", m)
		}
		rq := request{
			flags: binary.BigEndian.Uint16(hdr[4:]), typ: binary.BigEndian.Uint16(hdr[6:]),
			handle: binary.BigEndian.Uint64(hdr[8:]), off: binary.BigEndian.Uint64(hdr[16:]),
			length: binary.BigEndian.Uint32(hdr[24:]),
		}
		switch rq.typ {
		case cmdDisc:
			return nil
		case cmdWrite:
			// The payload follows; it is read and thrown away so that the
			// stream stays in step, then refused.
			if _, err := io.CopyN(io.Discard, cn.r, int64(rq.length)); err != nil {
				return err
			}
			if err := cn.fail(rq, errPerm, "read-only export"); err != nil {
				return err
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := cn.serve(ctx, e, rq); err != nil {
				cn.c.Close() // a reply could not be sent: the session is over
			}
		})
	}
}

// serve answers one request.
func (cn *conn) serve(ctx context.Context, e *Export, rq request) error {
	end := rq.off + uint64(rq.length)
	inside := rq.off <= uint64(e.Size) && end <= uint64(e.Size) && end >= rq.off
	switch rq.typ {
	case cmdRead:
		switch {
		case !inside:
			return cn.fail(rq, errInval, "read beyond the end of the export")
		case rq.length > MaxPayload:
			return cn.fail(rq, errOverflow, "read larger than the 32 MiB maximum payload")
		case rq.length == 0:
			return cn.ok(rq)
		}
		return cn.read(ctx, e, rq)
	case cmdFlush:
		return cn.ok(rq) // nothing is ever written
	case cmdCache:
		if !inside {
			return cn.fail(rq, errInval, "cache request beyond the end of the export")
		}
		return cn.ok(rq)
	case cmdTrim, cmdWriteZeroes:
		return cn.fail(rq, errPerm, "read-only export")
	case cmdBlockStatus:
		switch {
		case !cn.structured || !cn.metaOn:
			return cn.fail(rq, errInval, "no metadata context selected")
		case !inside || rq.length == 0:
			return cn.fail(rq, errInval, "block status beyond the end of the export")
		}
		return cn.blockStatus(e, rq)
	default:
		return cn.fail(rq, errInval, fmt.Sprintf("unknown command %d", rq.typ))
	}
}

// ok sends an empty successful reply.
func (cn *conn) ok(rq request) error {
	if cn.structured {
		return cn.chunk(rq.handle, replyFlagDone, replyTypeNone, nil)
	}
	return cn.simple(rq.handle, 0, nil)
}

// fail sends an error reply.
func (cn *conn) fail(rq request, code uint32, msg string) error {
	if cn.structured {
		b := binary.BigEndian.AppendUint32(nil, code)
		b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
		return cn.chunk(rq.handle, replyFlagDone, replyTypeError, append(b, msg...))
	}
	return cn.simple(rq.handle, code, nil)
}

func (cn *conn) simple(handle uint64, code uint32, data []byte) error {
	var h [16]byte
	binary.BigEndian.PutUint32(h[0:], simpleReplyMagic)
	binary.BigEndian.PutUint32(h[4:], code)
	binary.BigEndian.PutUint64(h[8:], handle)
	return cn.send(h[:], data)
}

func (cn *conn) chunk(handle uint64, flags, typ uint16, payload ...[]byte) error {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	var h [20]byte
	binary.BigEndian.PutUint32(h[0:], structReplyMagic)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], handle)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	return cn.send(append([][]byte{h[:]}, payload...)...)
}

// read answers NBD_CMD_READ: with structured replies, the ranges the map
// reports as zeros are sent as holes (unless the client said DF, or asked
// for no fragmentation), and only the rest is read.
func (cn *conn) read(ctx context.Context, e *Export, rq request) error {
	n := int64(rq.length)
	if err := cn.s.inFlight.Acquire(ctx, n); err != nil {
		return err
	}
	defer cn.s.inFlight.Release(n)
	off := int64(rq.off)
	if !cn.structured || rq.flags&cmdFlagDF != 0 || e.Map == nil {
		buf := make([]byte, n)
		if err := readFull(e, buf, off); err != nil {
			return cn.readFailed(rq, off, err)
		}
		if !cn.structured {
			return cn.simple(rq.handle, 0, buf)
		}
		return cn.chunk(rq.handle, replyFlagDone, replyTypeOffsetData, binary.BigEndian.AppendUint64(nil, uint64(off)), buf)
	}
	// Chunks of data and holes, written together, the last one done. Only
	// the data is read, into buffers of its own size: a hole costs no
	// memory.
	pieces, perr := runs(e, off, n, -1)
	data := make([][]byte, len(pieces))
	for i, p := range pieces {
		if !p.zero {
			data[i] = make([]byte, p.n)
			if err := readFull(e, data[i], p.off); err != nil {
				return cn.readFailed(rq, p.off, err)
			}
		}
	}
	if perr != nil {
		return cn.readFailed(rq, off, perr)
	}
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	for i, p := range pieces {
		flags := uint16(0)
		if i == len(pieces)-1 {
			flags = replyFlagDone
		}
		hdr := binary.BigEndian.AppendUint64(nil, uint64(p.off))
		if p.zero {
			cn.writeChunk(rq.handle, flags, replyTypeOffsetHole, binary.BigEndian.AppendUint32(hdr, uint32(p.n)))
		} else {
			cn.writeChunk(rq.handle, flags, replyTypeOffsetData, hdr, data[i])
		}
	}
	return cn.w.Flush()
}

// minHole is the smallest zero run sent as a hole or reported as one by
// block status: smaller ones go as data, so that a disk whose zero 4 KiB
// blocks alternate with data is not answered in thousands of tiny chunks
// (status 0, "data", is always right).
const minHole = 64 << 10

// piece is a run of a reply: data, or zeros.
type piece struct {
	off, n int64
	zero   bool
}

// runs maps off..off+n into data and zero runs, zero runs under minHole
// counted as data, at most max pieces (max < 0: no limit; the last piece
// then ends where the map was left). Holes are never merged past the end
// of what was asked.
func runs(e *Export, off, n int64, max int) ([]piece, error) {
	var out []piece
	add := func(p piece) {
		if k := len(out); k > 0 && out[k-1].zero == p.zero && out[k-1].off+out[k-1].n == p.off {
			out[k-1].n += p.n
			return
		}
		out = append(out, p)
	}
	for pos := off; pos < off+n; {
		if max > 0 && len(out) > max {
			break
		}
		x, err := e.Map.Extent(pos, off+n-pos)
		if err != nil {
			return nil, err
		}
		l := min(x.Length, off+n-pos)
		if l <= 0 {
			return nil, errors.New("empty extent")
		}
		add(piece{pos, l, x.Zero && l >= minHole})
		pos += l
	}
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out, nil
}

// writeChunk buffers one structured reply chunk; the caller holds wmu and
// flushes.
func (cn *conn) writeChunk(handle uint64, flags, typ uint16, payload ...[]byte) {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	var h [20]byte
	binary.BigEndian.PutUint32(h[0:], structReplyMagic)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], handle)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	cn.w.Write(h[:])
	for _, p := range payload {
		cn.w.Write(p)
	}
}

func readFull(e *Export, p []byte, off int64) error {
	n, err := e.Data.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readFailed reports a read error (an I/O error of the archive: EIO, with
// the message and offset for clients that show them).
func (cn *conn) readFailed(rq request, off int64, err error) error {
	msg := err.Error()
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	if !cn.structured {
		return cn.simple(rq.handle, errIO, nil)
	}
	b := binary.BigEndian.AppendUint32(nil, errIO)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = binary.BigEndian.AppendUint64(append(b, msg...), uint64(off))
	return cn.chunk(rq.handle, replyFlagDone, replyTypeErrorOffset, b)
}

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation: holes
// (zeros) as NBD_STATE_HOLE|NBD_STATE_ZERO, data as 0.
func (cn *conn) blockStatus(e *Export, rq request) error {
	off, n := int64(rq.off), int64(rq.length)
	b := binary.BigEndian.AppendUint32(nil, baseAllocationID)
	if e.Map == nil { // all data
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = binary.BigEndian.AppendUint32(b, 0)
		return cn.chunk(rq.handle, replyFlagDone, replyTypeBlockStatus, b)
	}
	max := maxDescriptors
	if rq.flags&cmdFlagReqOne != 0 {
		max = 1
	}
	pieces, err := runs(e, off, n, max)
	if err != nil {
		return cn.readFailed(rq, off, err)
	}
	for _, p := range pieces {
		var st uint32
		if p.zero {
			st = stateHole | stateZero
		}
		for l := p.n; l > 0; { // descriptors hold 32-bit lengths
			k := min(l, 1<<32-minHole)
			b = binary.BigEndian.AppendUint32(b, uint32(k))
			b = binary.BigEndian.AppendUint32(b, st)
			l -= k
		}
	}
	return cn.chunk(rq.handle, replyFlagDone, replyTypeBlockStatus, b)
}

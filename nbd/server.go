package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
	// Source is the disk: its Size is the export's, and its ReadAt is
	// called in parallel. If it is a format.ZeroMapper, its map of the
	// ranges that read as zeros is used: block status (base:allocation)
	// shows them as holes, and reads send them as holes without reading
	// them. The Server never closes it.
	Source format.Source
}

// Server serves Exports, read-only. Its zero value needs Exports only.
// Serve and ServeConn may be called from several goroutines at once; the
// fields must not change once one of them has been called.
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
	// WriteTimeout bounds the time one reply chunk (at most 256 KiB) may
	// wait for the client to take it (default 30 s). A client that
	// stops reading its replies loses its connection, and with it the
	// buffers it held; other connections never wait for it.
	WriteTimeout time.Duration
	// ShutdownGrace is how long, once Serve's context is done, the
	// requests in flight have to be answered before their connections
	// are closed (default 1 s).
	ShutdownGrace time.Duration
	// Log, if set, is told of connections refused and of connections
	// that end with an error: at most one line a second of each, the
	// events between two lines counted in the second.
	Log func(msg string)

	once     sync.Once
	maxConns int
	conns    *semaphore.Weighted
	refused  rateLog
	failed   rateLog
}

// Limits.
const (
	// MaxPayload is the largest read served at once (qemu's own limit);
	// clients learn it from NBD_INFO_BLOCK_SIZE.
	MaxPayload = 32 << 20
	// connBuffers bounds the bytes of buffers one connection holds at
	// once: reads stream their data through buffers of at most
	// chunkSize, and block status replies are counted too. It is each
	// connection's own share: a client that does not take its replies
	// holds this much and no more, and MaxConns connections hold at most
	// MaxConns × connBuffers (64 MiB at the default 64).
	connBuffers = 1 << 20
	// chunkSize is the most data read into one buffer: a structured read
	// is answered in chunks of at most this size, a simple one streamed
	// through a buffer of it.
	chunkSize = 256 << 10
	// maxOptionData bounds one option's data (names are at most 4096
	// bytes, a few queries beside).
	maxOptionData = 64 << 10
	// maxRequestsPerConn bounds the requests served at once on one
	// connection.
	maxRequestsPerConn = 32
	// maxDescriptors bounds the extents of one block status reply.
	maxDescriptors = 1 << 12
	// defaultMaxConns is MaxConns when it is not set.
	defaultMaxConns = 64
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
	errShutdown = 108

	baseAllocation   = "base:allocation"
	baseAllocationID = 1
)

func (s *Server) init() {
	s.once.Do(func() {
		s.maxConns = s.MaxConns
		if s.maxConns <= 0 {
			s.maxConns = defaultMaxConns
		}
		s.conns = semaphore.NewWeighted(int64(s.maxConns))
		if s.HandshakeTimeout <= 0 {
			s.HandshakeTimeout = 30 * time.Second
		}
		if s.WriteTimeout <= 0 {
			s.WriteTimeout = 30 * time.Second
		}
		if s.ShutdownGrace <= 0 {
			s.ShutdownGrace = time.Second
		}
		s.refused.log, s.failed.log = s.Log, s.Log
		s.refused.line = func(n int, _ string) string {
			what := "a connection"
			if n > 1 {
				what = fmt.Sprintf("%d connections", n)
			}
			return fmt.Sprintf("refused %s: already serving %d, the most at once", what, s.maxConns)
		}
		s.failed.line = func(n int, last string) string {
			if n > 1 {
				return fmt.Sprintf("%s (and %d more connections ended with errors)", last, n-1)
			}
			return last
		}
	})
}

// Serve accepts connections on l and serves them until ctx is done or
// Accept fails. When ctx is done it closes l, lets each connection's
// requests in flight be answered (new ones get ESHUTDOWN) for up to
// ShutdownGrace, closes the connections, and returns nil.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.init()
	defer s.flushLog()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // Accept failed: the connections end too
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
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
			s.refused.add("")
			continue
		}
		wg.Go(func() {
			defer s.conns.Release(1)
			if err := s.ServeConn(ctx, c); err != nil {
				s.failed.add(err.Error())
			}
		})
	}
}

// flushLog says what the rate limit held back.
func (s *Server) flushLog() {
	s.refused.flush()
	s.failed.flush()
}

// rateLog says an event at most once a second: the first at once, those
// that follow within the second counted and said in one line when it
// is over.
type rateLog struct {
	log  func(string)
	line func(n int, last string) string // the line for n events

	mu    sync.Mutex
	n     int       // events not yet said
	last  string    // the latest of them
	said  time.Time // when the last line was said
	timer *time.Timer
}

func (r *rateLog) add(msg string) {
	if r.log == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.last = msg
	wait := time.Second - time.Since(r.said)
	if wait <= 0 {
		r.flushLocked()
	} else if r.timer == nil {
		r.timer = time.AfterFunc(wait, r.flush)
	}
}

func (r *rateLog) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushLocked()
}

func (r *rateLog) flushLocked() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.n == 0 || r.log == nil {
		return
	}
	r.log(r.line(r.n, r.last))
	r.n, r.last, r.said = 0, "", time.Now()
}

// ServeConn serves one connection until the client disconnects or ctx
// is done, and closes it. When ctx is done the requests in flight are
// answered first, for up to ShutdownGrace. It returns the error that
// ended the connection, if any: a protocol error, a client that did not
// take its replies, a read that failed after its reply had begun (not a
// client's disconnect).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	s.init()
	cctx, cancel := context.WithCancel(context.Background())
	cn := &conn{s: s, c: c, ctx: cctx, cancel: cancel,
		r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10),
		bufs: semaphore.NewWeighted(connBuffers)}
	defer cn.close(nil)
	stop := context.AfterFunc(ctx, cn.drain)
	defer stop()
	c.SetDeadline(time.Now().Add(s.HandshakeTimeout))
	exp, err := cn.handshake()
	if err != nil || exp == nil {
		if errors.Is(err, io.EOF) || ctx.Err() != nil || cn.ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.SetDeadline(time.Time{})
	cn.writeTimeout = s.WriteTimeout
	err = cn.transmit(exp)
	if err := cn.dropReason(); err != nil {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || ctx.Err() != nil || cn.ctx.Err() != nil {
		return nil
	}
	return err
}

// conn is one client.
type conn struct {
	s      *Server
	c      net.Conn
	r      *bufio.Reader
	ctx    context.Context // done once the connection is closed
	cancel context.CancelFunc
	bufs   *semaphore.Weighted // bytes of buffers: this connection's share

	wmu          sync.Mutex // replies
	w            *bufio.Writer
	writeTimeout time.Duration // for each reply chunk; 0 in the handshake

	noZeroes   bool
	structured bool
	metaOn     bool   // base:allocation selected…
	metaExport string // …for this export

	mu       sync.Mutex
	active   int  // requests being answered
	draining bool // the server is shutting down
	grace    *time.Timer
	closed   bool
	closeErr error // what ended the connection, if a request did
}

// close ends the connection; err, if it is the first, says why.
func (cn *conn) close(err error) {
	cn.mu.Lock()
	if !cn.closed {
		cn.closed, cn.closeErr = true, err
	}
	if cn.grace != nil {
		cn.grace.Stop()
	}
	cn.mu.Unlock()
	cn.cancel()
	cn.c.Close()
}

// drain starts the shutdown of the connection: closed now if no request
// is in flight, else when the last is answered or the grace period is
// over.
func (cn *conn) drain() {
	cn.mu.Lock()
	cn.draining = true
	idle := cn.active == 0
	if !idle && !cn.closed {
		cn.grace = time.AfterFunc(cn.s.ShutdownGrace, func() { cn.close(nil) })
	}
	cn.mu.Unlock()
	if idle {
		cn.close(nil)
	}
}

// begin counts a request in flight; it reports whether the server is
// shutting down (the request is then refused).
func (cn *conn) begin() (draining bool) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	cn.active++
	return cn.draining
}

// end counts a request answered.
func (cn *conn) end() {
	cn.mu.Lock()
	cn.active--
	idle := cn.draining && cn.active == 0
	cn.mu.Unlock()
	if idle {
		cn.close(nil)
	}
}

// serverError is a failure of the server's own that ends a connection.
type serverError struct{ error }

// dropReason says why a request ended the connection, when that is worth
// telling: the client did not take a reply, or a read failed after its
// reply had begun. A client that went away is not.
func (cn *conn) dropReason() error {
	cn.mu.Lock()
	err := cn.closeErr
	cn.mu.Unlock()
	var se serverError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("nbd: dropped a client that did not take a reply for %v", cn.s.WriteTimeout)
	case errors.As(err, &se):
		return se.error
	}
	return nil
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
		binary.BigEndian.PutUint64(b[0:], uint64(e.Source.Size()))
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
	info = binary.BigEndian.AppendUint64(info, uint64(e.Source.Size()))
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
	return e, true, nil // a context selected for another export is not usable on it (see serve)
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
	cn.deadline()
	for _, p := range parts {
		if _, err := cn.w.Write(p); err != nil {
			return err
		}
	}
	return cn.w.Flush()
}

// deadline gives the next write (the caller holds wmu) WriteTimeout to
// be taken by the client.
func (cn *conn) deadline() {
	if cn.writeTimeout > 0 {
		cn.c.SetWriteDeadline(time.Now().Add(cn.writeTimeout))
	}
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
// goroutine of its own, at most maxRequestsPerConn at once, their
// buffers within the connection's share.
func (cn *conn) transmit(e *Export) error {
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
		if rq.typ == cmdDisc {
			return nil // the requests in flight are answered first
		}
		if rq.typ == cmdWrite {
			// The payload follows; it is read and thrown away so that the
			// stream stays in step, then the write is refused.
			if _, err := io.CopyN(io.Discard, cn.r, int64(rq.length)); err != nil {
				return err
			}
		}
		draining := cn.begin()
		select {
		case slots <- struct{}{}:
		case <-cn.ctx.Done():
			cn.end()
			return cn.ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-slots; cn.end() }()
			var err error
			if draining {
				err = cn.fail(rq, errShutdown, "the server is shutting down")
			} else {
				err = cn.serve(e, rq)
			}
			if err != nil {
				cn.close(err) // a reply could not be sent: the session is over
			}
		})
	}
}

// validFlags reports whether the request's flags are ones its command
// takes (FUA is taken by all, as qemu-nbd does: clients are known to set
// it on reads).
func (cn *conn) validFlags(rq request) bool {
	ok := uint16(cmdFlagFUA)
	switch rq.typ {
	case cmdRead:
		if cn.structured {
			ok |= cmdFlagDF
		}
	case cmdWriteZeroes:
		ok |= cmdFlagNoHole | cmdFlagFastZero
	case cmdBlockStatus:
		ok |= cmdFlagReqOne
	}
	return rq.flags&^ok == 0
}

// serve answers one request.
func (cn *conn) serve(e *Export, rq request) error {
	end, size := rq.off+uint64(rq.length), uint64(e.Source.Size())
	inside := rq.off <= size && end <= size && end >= rq.off
	known := rq.typ <= cmdBlockStatus && rq.typ != cmdDisc
	if known && !cn.validFlags(rq) {
		return cn.fail(rq, errInval, fmt.Sprintf("flags %#x are not valid for command %d", rq.flags, rq.typ))
	}
	switch rq.typ {
	case cmdRead:
		switch {
		case !inside:
			return cn.fail(rq, errInval, "read beyond the end of the export")
		case rq.length > MaxPayload:
			return cn.fail(rq, errOverflow, "read larger than the 32 MiB maximum payload")
		case rq.length == 0:
			return cn.ok(rq)
		case cn.structured && rq.flags&cmdFlagDF == 0:
			return cn.readChunks(e, rq)
		}
		return cn.readWhole(e, rq)
	case cmdFlush:
		return cn.ok(rq) // nothing is ever written
	case cmdCache:
		if !inside {
			return cn.fail(rq, errInval, "cache request beyond the end of the export")
		}
		return cn.ok(rq)
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		return cn.fail(rq, errPerm, "read-only export")
	case cmdBlockStatus:
		switch {
		case !cn.structured || !cn.metaOn || cn.metaExport != e.Name:
			return cn.fail(rq, errInval, "no metadata context selected for this export")
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
		return cn.chunk(rq.handle, replyFlagDone, replyTypeNone)
	}
	return cn.simple(rq.handle, 0)
}

// fail sends an error reply.
func (cn *conn) fail(rq request, code uint32, msg string) error {
	if cn.structured {
		b := binary.BigEndian.AppendUint32(nil, code)
		b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
		return cn.chunk(rq.handle, replyFlagDone, replyTypeError, append(b, msg...))
	}
	return cn.simple(rq.handle, code)
}

// simple sends a simple reply without data.
func (cn *conn) simple(handle uint64, code uint32) error {
	return cn.send(simpleHeader(handle, code))
}

func simpleHeader(handle uint64, code uint32) []byte {
	h := binary.BigEndian.AppendUint32(make([]byte, 0, 16), simpleReplyMagic)
	h = binary.BigEndian.AppendUint32(h, code)
	return binary.BigEndian.AppendUint64(h, handle)
}

// chunk sends one structured reply chunk.
func (cn *conn) chunk(handle uint64, flags, typ uint16, payload ...[]byte) error {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	return cn.send(append([][]byte{chunkHeader(handle, flags, typ, n)}, payload...)...)
}

func chunkHeader(handle uint64, flags, typ uint16, n int) []byte {
	h := binary.BigEndian.AppendUint32(make([]byte, 0, 20), structReplyMagic)
	h = binary.BigEndian.AppendUint16(h, flags)
	h = binary.BigEndian.AppendUint16(h, typ)
	h = binary.BigEndian.AppendUint64(h, handle)
	return binary.BigEndian.AppendUint32(h, uint32(n))
}

// buffers of chunkSize, shared by the connections; what each holds is
// counted against its share.
var bufPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// buffer takes n bytes (at most chunkSize) of the connection's share,
// waiting while its other requests hold them; release gives them back.
func (cn *conn) buffer(n int64) (buf []byte, release func(), err error) {
	if err := cn.bufs.Acquire(cn.ctx, n); err != nil {
		return nil, nil, err
	}
	p := bufPool.Get().(*[]byte)
	return (*p)[:n], func() { bufPool.Put(p); cn.bufs.Release(n) }, nil
}

// errReported is a read error already sent to the client as the
// request's final reply.
var errReported = errors.New("read error reported")

// readChunks answers NBD_CMD_READ with structured replies that may be
// fragmented: the ranges the map reports as zeros go as holes, unread;
// the data is read and sent in chunks of at most chunkSize, each through
// a buffer of the connection's share held only until it is sent.
func (cn *conn) readChunks(e *Export, rq request) error {
	off, n := int64(rq.off), int64(rq.length)
	err := runs(e, off, n, func(p piece, last bool) error {
		flags := uint16(0)
		if last {
			flags = replyFlagDone
		}
		if p.zero {
			hole := binary.BigEndian.AppendUint64(nil, uint64(p.off))
			return cn.chunk(rq.handle, flags, replyTypeOffsetHole, binary.BigEndian.AppendUint32(hole, uint32(p.n)))
		}
		for pos := p.off; pos < p.off+p.n; {
			k := min(p.off+p.n-pos, chunkSize)
			buf, release, err := cn.buffer(k)
			if err != nil {
				return err
			}
			if err := readFull(e, buf, pos); err != nil {
				release()
				if err := cn.readFailed(rq, pos, err); err != nil {
					return err
				}
				return errReported
			}
			f := uint16(0)
			if pos+k == p.off+p.n {
				f = flags
			}
			err = cn.chunk(rq.handle, f, replyTypeOffsetData, binary.BigEndian.AppendUint64(nil, uint64(pos)), buf)
			release()
			if err != nil {
				return err
			}
			pos += k
		}
		return nil
	})
	var me *mapError
	switch {
	case errors.Is(err, errReported):
		return nil
	case errors.As(err, &me):
		return cn.readFailed(rq, me.off, me.err)
	}
	return err
}

// readWhole answers NBD_CMD_READ in one piece: a simple reply, or a
// single data chunk (DF). The data is streamed through one buffer of the
// connection's share, under the reply lock. A read error before the
// first byte is sent is an error reply; after it, the reply cannot be
// taken back and the connection ends (the hard disconnect doc/proto.md
// asks for).
func (cn *conn) readWhole(e *Export, rq request) error {
	off, n := int64(rq.off), int64(rq.length)
	buf, release, err := cn.buffer(min(n, chunkSize))
	if err != nil {
		return err
	}
	defer release()
	if err := readFull(e, buf, off); err != nil {
		return cn.readFailed(rq, off, err)
	}
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	cn.deadline()
	if cn.structured {
		cn.w.Write(chunkHeader(rq.handle, replyFlagDone, replyTypeOffsetData, 8+int(n)))
		cn.w.Write(binary.BigEndian.AppendUint64(nil, uint64(off)))
	} else {
		cn.w.Write(simpleHeader(rq.handle, 0))
	}
	for pos := off; ; {
		if _, err := cn.w.Write(buf); err != nil {
			return err
		}
		if pos += int64(len(buf)); pos == off+n {
			break
		}
		buf = buf[:min(off+n-pos, chunkSize)]
		if err := readFull(e, buf, pos); err != nil {
			return serverError{fmt.Errorf("nbd: %s: reading %d bytes at %d: %w (a reply had begun: connection closed)", e.Name, len(buf), pos, err)}
		}
		cn.deadline()
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

// mapError is an export's map failing at an offset.
type mapError struct {
	off int64
	err error
}

func (e *mapError) Error() string { return fmt.Sprintf("map at %d: %v", e.off, e.err) }

// runs walks off..off+n as runs of data and of zeros, in order, zero
// extents under minHole counted as data and neighbours of a kind merged,
// and calls fn with each (last: it ends the range); an error of fn ends
// the walk and is returned. Without a map all is data. Memory does not
// grow with the runs.
func runs(e *Export, off, n int64, fn func(p piece, last bool) error) error {
	zmap, mapped := e.Source.(format.ZeroMapper)
	var pend piece // the run being extended
	for pos := off; pos < off+n; {
		p := piece{pos, off + n - pos, false}
		if mapped {
			x, err := zmap.Region(pos, off+n-pos)
			if err == nil && x.Length <= 0 {
				err = errors.New("empty extent")
			}
			if err != nil {
				if pend.n > 0 {
					if err := fn(pend, false); err != nil {
						return err
					}
				}
				return &mapError{pos, err}
			}
			p.n = min(x.Length, off+n-pos)
			p.zero = x.Zero && p.n >= minHole
		}
		if pend.n > 0 && pend.zero == p.zero {
			pend.n += p.n
		} else {
			if pend.n > 0 {
				if err := fn(pend, false); err != nil {
					return err
				}
			}
			pend = p
		}
		pos += p.n
	}
	return fn(pend, true)
}

func readFull(e *Export, p []byte, off int64) error {
	n, err := e.Source.ReadAt(p, off)
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
		return cn.simple(rq.handle, errIO)
	}
	b := binary.BigEndian.AppendUint32(nil, errIO)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = binary.BigEndian.AppendUint64(append(b, msg...), uint64(off))
	return cn.chunk(rq.handle, replyFlagDone, replyTypeErrorOffset, b)
}

// errFull ends a walk of the map when a block status reply is full.
var errFull = errors.New("descriptors full")

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation: holes
// (zeros) as NBD_STATE_HOLE|NBD_STATE_ZERO, data as 0. The descriptors
// start at the offset and cover at most the length asked: all of it
// unless there would be more than maxDescriptors, or REQ_ONE asks for
// one. The reply's buffer is counted in the connection's share.
func (cn *conn) blockStatus(e *Export, rq request) error {
	max := maxDescriptors
	if rq.flags&cmdFlagReqOne != 0 {
		max = 1
	}
	size := int64(4 + 8*max)
	if err := cn.bufs.Acquire(cn.ctx, size); err != nil {
		return err
	}
	defer cn.bufs.Release(size)
	b := binary.BigEndian.AppendUint32(make([]byte, 0, size), baseAllocationID)
	err := runs(e, int64(rq.off), int64(rq.length), func(p piece, _ bool) error {
		var st uint32
		if p.zero {
			st = stateHole | stateZero
		}
		b = binary.BigEndian.AppendUint32(b, uint32(p.n)) // p.n <= rq.length
		b = binary.BigEndian.AppendUint32(b, st)
		if len(b) == cap(b) {
			return errFull
		}
		return nil
	})
	var me *mapError
	if errors.As(err, &me) {
		if len(b) == 4 {
			return cn.readFailed(rq, me.off, me.err)
		}
		// What was mapped before the error is a good answer.
	} else if err != nil && err != errFull {
		return err
	}
	return cn.chunk(rq.handle, replyFlagDone, replyTypeBlockStatus, b)
}

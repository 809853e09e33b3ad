package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// disk is an export's content with a map of its zero 4 KiB blocks.
type disk struct{ b []byte }

func (d disk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.b)) {
		return 0, io.EOF
	}
	n := copy(p, d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d disk) Region(start, length int64) (format.Region, error) {
	end := min(start+length, int64(len(d.b)))
	zeroAt := func(o int64) bool {
		b := o &^ 4095
		return bytes.Count(d.b[b:min(b+4096, int64(len(d.b)))], []byte{0}) == int(min(4096, int64(len(d.b))-b))
	}
	z := zeroAt(start)
	pos := start
	for pos < end && zeroAt(pos) == z {
		pos = min((pos&^4095)+4096, end)
	}
	return format.Region{Start: start, Length: pos - start, Zero: z}, nil
}

// testDisk has every third 4 KiB block zero, and 256 KiB of zeros at
// 512 KiB.
func testDisk() []byte {
	b := make([]byte, 1<<20+512)
	for i := range b {
		if (i/4096)%3 != 1 && (i < 512<<10 || i >= 768<<10) {
			b[i] = byte(i*7 + 1)
		}
	}
	return b
}

// client is a minimal NBD client for tests: it speaks the protocol
// directly, so that it can also break it.
type client struct {
	t    *testing.T
	c    net.Conn
	done chan error // ServeConn's result, for dial's clients
}

// dial serves one session of s over a pipe and returns its client. The
// session must end once the test does (its client is closed then).
func dial(t *testing.T, s *Server) *client {
	t.Helper()
	a, b := net.Pipe()
	done, ended := make(chan error, 1), make(chan struct{})
	go func() {
		done <- s.ServeConn(context.Background(), b)
		close(ended)
	}()
	t.Cleanup(func() {
		a.Close()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Error("the session did not end after its client left")
		}
	})
	a.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: a, done: done}
}

// serveUnix runs s.Serve on a Unix socket until the test ends and
// returns the socket's path and a stop function: it cancels Serve and
// waits, at most 5 s, for it to return.
func serveUnix(t *testing.T, s *Server) (sock string, stop func() error) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(5 * time.Second):
				serr = errors.New("Serve did not return within 5 s of its context's end")
			}
		})
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return sock, stop
}

// dialUnix connects a client to a served socket, with a deadline of 10 s.
func dialUnix(t *testing.T, sock string) *client {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c}
}

func (c *client) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.c, b); err != nil {
		c.t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func (c *client) write(parts ...[]byte) {
	c.t.Helper()
	for _, p := range parts {
		if len(p) == 0 {
			continue // net.Pipe would wait for a read of nothing
		}
		if _, err := c.c.Write(p); err != nil {
			c.t.Fatalf("writing: %v", err)
		}
	}
}

// hello reads the greeting and sends the client flags.
func (c *client) hello(flags uint32) {
	c.t.Helper()
	g := c.read(18)
	if binary.BigEndian.Uint64(g) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic || binary.BigEndian.Uint16(g[16:]) != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("greeting %x", g)
	}
	c.write(binary.BigEndian.AppendUint32(nil, flags))
}

func (c *client) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(b, data)
}

// reply reads one option reply.
func (c *client) reply(opt uint32) (typ uint32, data []byte) {
	c.t.Helper()
	h := c.read(20)
	if binary.BigEndian.Uint64(h) != repMagic || binary.BigEndian.Uint32(h[8:]) != opt {
		c.t.Fatalf("option reply header %x for option %d", h, opt)
	}
	return binary.BigEndian.Uint32(h[12:]), c.read(int(binary.BigEndian.Uint32(h[16:])))
}

func nameData(name string, extra ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(extra)))
	for _, x := range extra {
		b = binary.BigEndian.AppendUint16(b, x)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// negotiate takes an export with GO, structured replies and
// base:allocation if asked; it returns the size and transmission flags.
func (c *client) negotiate(name string, structured bool) (int64, uint16) {
	c.t.Helper()
	c.hello(flagFixedNewstyle | flagNoZeroes)
	if structured {
		c.option(optStructured, nil)
		if typ, _ := c.reply(optStructured); typ != repAck {
			c.t.Fatalf("structured replies: reply %#x", typ)
		}
		c.option(optSetMeta, metaData(name, "base:allocation"))
		typ, data := c.reply(optSetMeta)
		if typ != repMetaContext || binary.BigEndian.Uint32(data) != baseAllocationID || string(data[4:]) != baseAllocation {
			c.t.Fatalf("set meta context: %#x %q", typ, data)
		}
		if typ, _ := c.reply(optSetMeta); typ != repAck {
			c.t.Fatalf("set meta context: final reply %#x", typ)
		}
	}
	c.option(optGo, nameData(name, infoBlockSize))
	var size int64
	var flags uint16
	for {
		typ, data := c.reply(optGo)
		switch typ {
		case repInfo:
			if binary.BigEndian.Uint16(data) == infoExport {
				size, flags = int64(binary.BigEndian.Uint64(data[2:])), binary.BigEndian.Uint16(data[10:])
			}
			continue
		case repAck:
			return size, flags
		default:
			c.t.Fatalf("NBD_OPT_GO: reply %#x %q", typ, data)
		}
	}
}

func (c *client) request(typ, flags uint16, handle, off uint64, length uint32) {
	c.write(requestBytes(typ, flags, handle, off, length))
}

func requestBytes(typ, flags uint16, handle, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// chunk is one structured reply chunk.
type chunk struct {
	flags, typ uint16
	handle     uint64
	payload    []byte
}

func (c *client) chunk() chunk {
	c.t.Helper()
	h := c.read(20)
	if m := binary.BigEndian.Uint32(h); m != structReplyMagic {
		c.t.Fatalf("structured reply magic %#x", m)
	}
	return chunk{binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:]), binary.BigEndian.Uint64(h[8:]),
		c.read(int(binary.BigEndian.Uint32(h[16:])))}
}

// simple reads a simple reply of n data bytes (none on error).
func (c *client) simple(n int) (errno uint32, handle uint64, data []byte) {
	c.t.Helper()
	h := c.read(16)
	if m := binary.BigEndian.Uint32(h); m != simpleReplyMagic {
		c.t.Fatalf("simple reply magic %#x", m)
	}
	errno, handle = binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
	if errno == 0 {
		data = c.read(n)
	}
	return errno, handle, data
}

// readStructured reads the chunks of one read reply into a buffer, and
// says how many bytes came as holes.
func (c *client) readStructured(off int64, n int) (buf []byte, holes int, errno uint32) {
	c.t.Helper()
	buf = make([]byte, n)
	for {
		ch := c.chunk()
		switch ch.typ {
		case replyTypeOffsetData:
			if n > 0 {
				o := int64(binary.BigEndian.Uint64(ch.payload)) - off
				copy(buf[o:], ch.payload[8:])
			}
		case replyTypeOffsetHole:
			holes += int(binary.BigEndian.Uint32(ch.payload[8:]))
		case replyTypeError, replyTypeErrorOffset:
			errno = binary.BigEndian.Uint32(ch.payload)
		}
		if ch.flags&replyFlagDone != 0 {
			return buf, holes, errno
		}
	}
}

func newServer(b []byte) *Server {
	return &Server{Exports: []Export{
		{Name: "drive-scsi0", Description: "test disk", Source: source(int64(len(b)), disk{b}, disk{b})},
		{Name: "plain", Source: source(int64(len(b)), disk{b}, nil)},
	}}
}

// TestReads: simple and structured reads at every alignment return the
// disk's bytes; structured ones send its zero blocks as holes, and DF
// turns holes off; block status maps the zero blocks.
func TestReads(t *testing.T) {
	b := testDisk()
	s := newServer(b)
	for _, structured := range []bool{false, true} {
		c := dial(t, s)
		size, flags := c.negotiate("drive-scsi0", structured)
		if size != int64(len(b)) || flags&tflagReadOnly == 0 || flags&tflagMultiConn == 0 {
			t.Fatalf("export size %d flags %#x", size, flags)
		}
		h := uint64(1)
		for _, r := range [][2]int64{{0, 4096}, {0, int64(len(b))}, {4000, 9000}, {int64(len(b)) - 100, 100}, {4096, 4096}, {500 << 10, 300 << 10}} {
			c.request(cmdRead, 0, h, uint64(r[0]), uint32(r[1]))
			var got []byte
			if structured {
				var holes int
				var errno uint32
				got, holes, errno = c.readStructured(r[0], int(r[1]))
				if errno != 0 {
					t.Fatalf("read %v: error %d", r, errno)
				}
				// Zero runs of 64 KiB or more come as holes; smaller
				// ones as data.
				if r == [2]int64{4096, 4096} && holes != 0 || r == [2]int64{500 << 10, 300 << 10} && holes < 256<<10 {
					t.Errorf("read %v: %d bytes as holes", r, holes)
				}
			} else {
				var errno uint32
				var hh uint64
				errno, hh, got = c.simple(int(r[1]))
				if errno != 0 || hh != h {
					t.Fatalf("read %v: error %d, handle %d", r, errno, hh)
				}
			}
			if !bytes.Equal(got, b[r[0]:r[0]+r[1]]) {
				t.Errorf("structured %v: read %v: wrong bytes", structured, r)
			}
			h++
		}
		if structured {
			c.request(cmdRead, cmdFlagDF, h, 0, 65536)
			ch := c.chunk()
			if ch.typ != replyTypeOffsetData || ch.flags&replyFlagDone == 0 || !bytes.Equal(ch.payload[8:], b[:65536]) {
				t.Errorf("DF read: chunk type %d flags %d", ch.typ, ch.flags)
			}
			c.request(cmdBlockStatus, 0, h, 0, uint32(len(b)))
			ch = c.chunk()
			if ch.typ != replyTypeBlockStatus || ch.flags&replyFlagDone == 0 {
				t.Fatalf("block status: chunk type %d", ch.typ)
			}
			pos := int64(0)
			for d := ch.payload[4:]; len(d) >= 8; d = d[8:] {
				l, st := int64(binary.BigEndian.Uint32(d)), binary.BigEndian.Uint32(d[4:])
				zero := bytes.Count(b[pos:pos+l], []byte{0}) == int(l)
				if st == stateHole|stateZero && !zero || l <= 0 || zero && l >= minHole && st == 0 {
					t.Fatalf("block status: %d bytes at %d status %d; zero: %v", l, pos, st, zero)
				}
				pos += l
			}
			if pos != int64(len(b)) {
				t.Errorf("block status covered %d of %d bytes", pos, len(b))
			}
			c.request(cmdBlockStatus, cmdFlagReqOne, h, 0, 100)
			if ch = c.chunk(); len(ch.payload) != 12 || binary.BigEndian.Uint32(ch.payload[4:]) != 100 {
				t.Errorf("REQ_ONE block status of 100 bytes: %x", ch.payload)
			}
		}
		c.request(cmdDisc, 0, 0, 0, 0)
	}
}

// TestHostileClients: protocol errors are answered or end the connection,
// never the server; nothing is written; bounds hold.
func TestHostileClients(t *testing.T) {
	b := testDisk()
	s := newServer(b)
	t.Run("handshake", func(t *testing.T) {
		c := dial(t, s)
		c.hello(0) // no fixed newstyle
		if _, err := c.c.Read(make([]byte, 1)); err == nil {
			t.Error("old-style client kept")
		}
		c = dial(t, s)
		c.hello(flagFixedNewstyle | 1<<7) // unknown flag
		if _, err := c.c.Read(make([]byte, 1)); err == nil {
			t.Error("unknown client flag accepted")
		}
		c = dial(t, s)
		c.hello(flagFixedNewstyle)
		c.write(bytes.Repeat([]byte{0x55}, 16)) // bad option magic
		if _, err := c.c.Read(make([]byte, 1)); err == nil {
			t.Error("bad option magic accepted")
		}
	})
	t.Run("options", func(t *testing.T) {
		c := dial(t, s)
		c.hello(flagFixedNewstyle | flagNoZeroes)
		for _, tc := range []struct {
			opt  uint32
			data []byte
			want uint32
		}{
			{999, nil, repErrUnsup},
			{optExtHeaders, nil, repErrUnsup},
			{optStartTLS, nil, repErrPolicy},
			{optList, []byte("x"), repErrInvalid},
			{optInfo, []byte{0, 0, 0}, repErrInvalid},
			{optInfo, nameData("nope"), repErrUnknown},
			{optInfo, append(binary.BigEndian.AppendUint32(nil, 1<<31), 0, 0), repErrInvalid},
			{optGo, nameData(""), repErrUnknown},                                 // two exports: no default
			{optSetMeta, metaData("drive-scsi0", baseAllocation), repErrInvalid}, // before structured replies
			{optStructured, []byte("x"), repErrInvalid},
		} {
			c.option(tc.opt, tc.data)
			if typ, msg := c.reply(tc.opt); typ != tc.want {
				t.Errorf("option %d %x: reply %#x %q, want %#x", tc.opt, tc.data, typ, msg, tc.want)
			}
		}
		// Oversized option data is skipped and refused.
		c.option(optInfo, make([]byte, maxOptionData+1))
		if typ, _ := c.reply(optInfo); typ != repErrTooBig {
			t.Errorf("oversized option: reply %#x", typ)
		}
		// NBD_OPT_LIST lists both, and the session goes on.
		c.option(optList, nil)
		var names []string
		for {
			typ, data := c.reply(optList)
			if typ == repAck {
				break
			}
			names = append(names, string(data[4:4+binary.BigEndian.Uint32(data)]))
		}
		if fmt.Sprint(names) != "[drive-scsi0 plain]" {
			t.Errorf("list: %v", names)
		}
		c.option(optAbort, nil)
		if typ, _ := c.reply(optAbort); typ != repAck {
			t.Errorf("abort: reply %#x", typ)
		}
	})
	t.Run("requests", func(t *testing.T) {
		c := dial(t, s)
		c.negotiate("drive-scsi0", true)
		size := uint64(len(b))
		for _, tc := range []struct {
			typ, flags uint16
			off        uint64
			n          uint32
			payload    int
			want       uint32
		}{
			{cmdRead, 0, size - 10, 11, 0, errInval},
			{cmdRead, 0, 1 << 63, 1, 0, errInval},
			{cmdRead, 0, ^uint64(0) - 5, 4096, 0, errInval}, // wraps around
			{cmdRead, 0, 0, MaxPayload + 1, 0, errInval},    // beyond the end first
			{cmdWrite, 0, 0, 512, 512, errPerm},
			{cmdTrim, 0, 0, 512, 0, errPerm},
			{cmdWriteZeroes, 0, 0, 512, 0, errPerm},
			{77, 0, 0, 512, 0, errInval},
			{cmdBlockStatus, 0, size, 512, 0, errInval},
		} {
			c.request(tc.typ, tc.flags, 9, tc.off, tc.n)
			c.write(make([]byte, tc.payload))
			ch := c.chunk()
			if ch.typ != replyTypeError || binary.BigEndian.Uint32(ch.payload) != tc.want || ch.handle != 9 {
				t.Errorf("command %d at %d+%d: chunk %d %x, want error %d", tc.typ, tc.off, tc.n, ch.typ, ch.payload, tc.want)
			}
		}
		// Still serving.
		c.request(cmdRead, 0, 10, 0, 512)
		if got, _, errno := c.readStructured(0, 512); errno != 0 || !bytes.Equal(got, b[:512]) {
			t.Error("read after errors failed")
		}
		c.request(cmdFlush, 0, 11, 0, 0)
		if ch := c.chunk(); ch.typ != replyTypeNone || ch.flags&replyFlagDone == 0 {
			t.Errorf("flush: chunk %d", ch.typ)
		}
		c.write([]byte("garbage, not a request magic......."))
		if _, err := io.ReadAll(c.c); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			t.Logf("after garbage: %v", err)
		}
	})
	t.Run("large reads within each connection's share", func(t *testing.T) {
		src := &slowZeros{}
		big := &Server{Exports: []Export{{Name: "big", Source: source(1<<40, src, nil)}}}
		// Two connections, one with simple replies (streamed through one
		// buffer each) and one with structured ones (in chunks), each
		// sending 16 reads of 4 MiB at once: at most each connection's
		// share of buffers is being read at once, the other requests
		// wait.
		const n, size = 16, 4 << 20
		var wg sync.WaitGroup
		for _, structured := range []bool{false, true} {
			c := dial(t, big)
			c.negotiate("big", structured)
			go func() {
				for i := range n {
					if _, err := c.c.Write(requestBytes(cmdRead, 0, uint64(i), uint64(i)*size, size)); err != nil {
						return
					}
				}
			}()
			wg.Go(func() {
				for range n {
					if structured {
						if _, _, errno := c.readStructured(-1, 0); errno != 0 {
							t.Errorf("read: error %d", errno)
							return
						}
					} else if errno, _, _ := c.simple(size); errno != 0 {
						t.Errorf("read: error %d", errno)
						return
					}
				}
			})
		}
		wg.Wait()
		if m := src.max.Load(); m > 2*connBuffers || m < chunkSize {
			t.Errorf("%d bytes of reads at once on two connections, want at most %d", m, 2*connBuffers)
		}
		if connBuffers*defaultMaxConns > 64<<20 {
			t.Errorf("%d connections may hold %d MiB of buffers, more than the 64 MiB documented", defaultMaxConns, connBuffers*defaultMaxConns>>20)
		}
	})
}

// slowZeros reads zeros slowly and records the most bytes being read at
// once.
type slowZeros struct {
	now, max atomic.Int64
}

func (z *slowZeros) ReadAt(p []byte, off int64) (int, error) {
	v := z.now.Add(int64(len(p)))
	for {
		m := z.max.Load()
		if v <= m || z.max.CompareAndSwap(m, v) {
			break
		}
	}
	time.Sleep(2 * time.Millisecond)
	clear(p)
	z.now.Add(-int64(len(p)))
	return len(p), nil
}

type zeros struct{}

func (zeros) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }

// TestConnectionLimits: connections beyond MaxConns are closed at once;
// a client that says nothing is dropped after the handshake timeout.
func TestConnectionLimits(t *testing.T) {
	s := newServer(testDisk())
	s.MaxConns = 3
	s.HandshakeTimeout = 300 * time.Millisecond
	sock, stop := serveUnix(t, s)
	var conns []net.Conn
	for range 10 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	// Three get a greeting; the others are closed.
	greeted := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, 18)); err == nil {
				mu.Lock()
				greeted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if greeted != 3 {
		t.Errorf("%d of 10 connections greeted with MaxConns 3", greeted)
	}
	// The silent ones are dropped after the handshake timeout, and their
	// places are free again.
	time.Sleep(500 * time.Millisecond)
	c := dialUnix(t, sock)
	if _, err := io.ReadFull(c.c, make([]byte, 18)); err != nil {
		t.Errorf("after the silent clients timed out: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// holes is a map of nothing but zeros.
type holes struct{}

func (holes) Region(start, length int64) (format.Region, error) {
	return format.Region{Start: start, Length: length, Zero: true}, nil
}

// TestHoleReadsCostNoMemory: a structured read of a hole is answered
// without a buffer for it (a 32 MiB read of one allocates far less).
func TestHoleReadsCostNoMemory(t *testing.T) {
	const size = 32 << 20
	s := &Server{Exports: []Export{{Name: "empty", Source: source(size, zeros{}, holes{})}}}
	c := dial(t, s)
	c.negotiate("empty", true)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c.request(cmdRead, 0, 1, 0, size)
	ch := c.chunk()
	runtime.ReadMemStats(&after)
	if ch.typ != replyTypeOffsetHole || ch.flags&replyFlagDone == 0 || binary.BigEndian.Uint32(ch.payload[8:]) != size {
		t.Fatalf("reply %+v, want one hole of %d bytes", ch, size)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 4<<20 {
		t.Errorf("a %d MiB hole read allocated %d MiB", size>>20, a>>20)
	}
}

// source is a format.Source of size bytes read from data; with a map m
// (not nil), also a format.ZeroMapper.
func source(size int64, data io.ReaderAt, m format.ZeroMapper) format.Source {
	s := plainSource{data, size}
	if m == nil {
		return s
	}
	return mappedSource{s, m}
}

type plainSource struct {
	io.ReaderAt
	size int64
}

func (s plainSource) Size() int64  { return s.size }
func (s plainSource) Close() error { return nil }

type mappedSource struct {
	plainSource
	format.ZeroMapper
}

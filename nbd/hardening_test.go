package nbd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logLines collects a Server's log lines with the time each was said.
type logLines struct {
	mu    sync.Mutex
	lines []string
	times []time.Time
}

func (l *logLines) add(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, msg)
	l.times = append(l.times, time.Now())
}

func (l *logLines) get() ([]string, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...), append([]time.Time(nil), l.times...)
}

// waitFor waits, at most 5 s, until a line matches re, and returns it.
func (l *logLines) waitFor(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lines, _ := l.get()
		for _, s := range lines {
			if rx.MatchString(s) {
				return s
			}
		}
	}
	lines, _ := l.get()
	t.Fatalf("no log line matching %q within 5 s: %q", re, lines)
	return ""
}

// stall sends n reads of 32 MiB with simple replies (all data) and
// reads none of the replies.
func (c *client) stall(n int) {
	c.t.Helper()
	for i := range n {
		c.request(cmdRead, 0, uint64(i), uint64(i)*MaxPayload, MaxPayload)
	}
}

// TestStalledClient: a client that sends the largest reads and does not
// take the replies holds its own share of buffers only: another client's
// reads are answered all the while, each within a deadline far shorter
// than the stall. Once a reply has waited WriteTimeout, the stalled
// client's connection is dropped (and said so), and the server goes on.
func TestStalledClient(t *testing.T) {
	exports := []Export{{Name: "p", Source: source(1<<30, pattern{}, nil)}}
	t.Run("others are served", func(t *testing.T) {
		s := &Server{Exports: exports, WriteTimeout: time.Minute}
		sock, _ := serveUnix(t, s)
		stalled := dialUnix(t, sock)
		stalled.negotiate("p", false)
		stalled.stall(4)
		for _, structured := range []bool{false, true} {
			c := dialUnix(t, sock)
			c.negotiate("p", structured)
			want := make([]byte, 4096)
			for i := range 20 {
				off := int64(i) * 12345 << 12
				c.c.SetDeadline(time.Now().Add(2 * time.Second))
				c.request(cmdRead, 0, uint64(i), uint64(off), 4096)
				errno, data := c.answer(structured, uint64(i), off, 4096)
				pattern{}.ReadAt(want, off)
				if errno != 0 || !bytes.Equal(data, want) {
					t.Fatalf("read %d while another client stalls: error %d", i, errno)
				}
			}
		}
	})
	t.Run("the stalled client is dropped", func(t *testing.T) {
		var log logLines
		s := &Server{Exports: exports, WriteTimeout: 200 * time.Millisecond, Log: log.add}
		sock, _ := serveUnix(t, s)
		stalled := dialUnix(t, sock)
		stalled.negotiate("p", false)
		start := time.Now()
		stalled.stall(4)
		log.waitFor(t, `^nbd: dropped a client that did not take a reply for 200ms$`)
		t.Logf("the stalled client was dropped after %v", time.Since(start).Round(time.Millisecond))
		// It finds its connection closed, most of its replies unsent.
		n, err := io.Copy(io.Discard, stalled.c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) || n >= 4*(16+MaxPayload) {
			t.Errorf("the stalled client read %d bytes, then %v; want its connection closed", n, err)
		}
		c := dialUnix(t, sock)
		c.negotiate("p", true)
		c.request(cmdRead, 0, 1, 0, 4096)
		if errno, _ := c.answer(true, 1, 0, 4096); errno != 0 {
			t.Errorf("a read after the drop: error %d", errno)
		}
	})
}

// TestShutdown: when Serve's context ends, no connection is accepted; a
// connection with nothing in flight is closed at once; a reply being
// sent is sent whole, and a request that arrives meanwhile gets
// ESHUTDOWN, then the connection closes; a client that takes nothing is
// closed when ShutdownGrace is over, and Serve returns.
func TestShutdown(t *testing.T) {
	s := &Server{Exports: []Export{{Name: "p", Source: source(1<<30, pattern{}, nil)}}, ShutdownGrace: 600 * time.Millisecond}
	sock, stop := serveUnix(t, s)
	const size = 4 << 20
	busy := dialUnix(t, sock)
	busy.negotiate("p", false)
	busy.request(cmdRead, 0, 1, 0, size)
	if errno, h, _ := busy.simple(0); errno != 0 || h != 1 {
		t.Fatalf("reply header: error %d, handle %d", errno, h)
	}
	got := busy.read(64 << 10) // the rest waits in the server
	idle := dialUnix(t, sock)
	idle.negotiate("p", false)
	stalled := dialUnix(t, sock)
	stalled.negotiate("p", false)
	stalled.stall(1)
	time.Sleep(50 * time.Millisecond) // the requests are being answered
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- stop() }()
	// The idle connection is closed at once.
	idle.c.SetDeadline(time.Now().Add(time.Second))
	if n, err := idle.c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("idle connection after the shutdown: read %d bytes, %v; want it closed", n, err)
	}
	// No new connection.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("connections still accepted after the shutdown")
		}
	}
	time.Sleep(50 * time.Millisecond) // the connections' shutdown has begun too
	// The busy one: a new request is refused, the reply in flight comes
	// whole, then the connection closes.
	busy.request(cmdRead, 0, 2, 0, 4096)
	got = append(got, busy.read(size-len(got))...)
	want := make([]byte, size)
	pattern{}.ReadAt(want, 0)
	if !bytes.Equal(got, want) {
		t.Error("the reply in flight at the shutdown is not the export's bytes")
	}
	if errno, h, _ := busy.simple(0); errno != errShutdown || h != 2 {
		t.Errorf("request during the shutdown: error %d (handle %d), want ESHUTDOWN", errno, h)
	}
	if n, err := busy.c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("busy connection after its last reply: read %d bytes, %v; want it closed", n, err)
	}
	// Serve returns once the stalled client's grace is over.
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < s.ShutdownGrace/2 || d > 3*s.ShutdownGrace {
		t.Errorf("Serve returned %v after its context ended, want about ShutdownGrace (%v)", d, s.ShutdownGrace)
	}
	if n, err := io.Copy(io.Discard, stalled.c); err != nil && !errors.Is(err, syscall.ECONNRESET) || n >= 16+MaxPayload {
		t.Errorf("stalled client: %d bytes, then %v; want the connection closed", n, err)
	}
}

// TestRefusalLog: connections beyond the bound are refused, and said in
// at most one line a second that counts them and names the true bound
// (64 when MaxConns is not set).
func TestRefusalLog(t *testing.T) {
	var log logLines
	s := &Server{Exports: []Export{{Name: "p", Source: source(1<<20, pattern{}, nil)}}, Log: log.add}
	sock, stop := serveUnix(t, s)
	var held []net.Conn
	for range defaultMaxConns {
		c := dialUnix(t, sock)
		c.read(18) // greeted: being served
		held = append(held, c.c)
	}
	const extra = 200
	for i := range extra {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 18)); n != 0 || err == nil {
			t.Fatalf("connection %d beyond the bound: read %d bytes, %v; want it closed", i, n, err)
		}
		c.Close()
	}
	rx := regexp.MustCompile(`^refused (a connection|(\d+) connections): already serving 64, the most at once$`)
	count := func() (n int, lines []string) {
		lines, _ = log.get()
		for _, l := range lines {
			m := rx.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("log line %q", l)
			}
			k := 1
			if m[2] != "" {
				k, _ = strconv.Atoi(m[2])
			}
			n += k
		}
		return n, lines
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n, _ := count(); n >= extra || time.Now().After(deadline) {
			break
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	n, lines := count()
	_, times := log.get()
	if n != extra {
		t.Errorf("the log counts %d refusals, want %d: %q", n, extra, lines)
	}
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d < 900*time.Millisecond {
			t.Errorf("log lines %d and %d %v apart: %q", i-1, i, d, lines)
		}
	}
	if len(lines) > 4 {
		t.Errorf("%d lines for %d refusals: %q", len(lines), extra, strings.Join(lines, "\n"))
	}
	for _, c := range held {
		c.Close()
	}
}

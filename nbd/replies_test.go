package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// pattern is a disk whose bytes are computed from their offsets: any
// size, no memory.
type pattern struct{}

func patternByte(o int64) byte { return byte(o*7+1) ^ byte(o>>12) }

// patternPeriod holds one period of the pattern (1 MiB).
var patternPeriod = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = patternByte(int64(i))
	}
	return b
}()

func (pattern) ReadAt(p []byte, off int64) (int, error) {
	for i := 0; i < len(p); {
		i += copy(p[i:], patternPeriod[(off+int64(i))%(1<<20):])
	}
	return len(p), nil
}

// failAt reads as pattern up to byte from, and fails from there on.
type failAt struct{ from int64 }

func (f failAt) ReadAt(p []byte, off int64) (int, error) {
	n := int(max(0, min(int64(len(p)), f.from-off)))
	pattern{}.ReadAt(p[:n], off)
	if n < len(p) {
		return n, errors.New("disk on fire")
	}
	return n, nil
}

// allData maps everything as one run of data.
type allData struct{}

func (allData) Region(start, length int64) (format.Region, error) {
	return format.Region{Start: start, Length: length}, nil
}

// stripes maps 64 KiB runs, zeros and data in turn, zeros first.
type stripes struct{}

func (stripes) Region(start, length int64) (format.Region, error) {
	end := min(start|0xffff+1, start+length)
	return format.Region{Start: start, Length: end - start, Zero: start>>16%2 == 0}, nil
}

// answer reads the reply to request h: its error, and for a read of n
// bytes at off the data, holes as zeros. Every chunk must carry h, lie
// within the request, and the structured reply end with one done chunk.
func (c *client) answer(structured bool, h uint64, off int64, n int) (errno uint32, data []byte) {
	c.t.Helper()
	if !structured {
		e, hh, d := c.simple(n)
		if hh != h {
			c.t.Fatalf("simple reply for handle %d, want %d", hh, h)
		}
		return e, d
	}
	data = make([]byte, n)
	for {
		ch := c.chunk()
		if ch.handle != h {
			c.t.Fatalf("chunk for handle %d, want %d", ch.handle, h)
		}
		switch ch.typ {
		case replyTypeOffsetData, replyTypeOffsetHole:
			if len(ch.payload) < 9 || ch.typ == replyTypeOffsetHole && len(ch.payload) != 12 {
				c.t.Fatalf("content chunk of %d bytes", len(ch.payload))
			}
			o := int64(binary.BigEndian.Uint64(ch.payload)) - off
			l := int64(len(ch.payload) - 8)
			if ch.typ == replyTypeOffsetHole {
				l = int64(binary.BigEndian.Uint32(ch.payload[8:]))
			}
			if o < 0 || l <= 0 || o+l > int64(n) {
				c.t.Fatalf("content chunk of %d bytes at %d outside the read of %d at %d", l, o+off, n, off)
			}
			if ch.typ == replyTypeOffsetData {
				copy(data[o:], ch.payload[8:])
			}
		case replyTypeError, replyTypeErrorOffset:
			if len(ch.payload) < 6 || 6+int(binary.BigEndian.Uint16(ch.payload[4:])) > len(ch.payload) {
				c.t.Fatalf("error chunk %x: bad message length", ch.payload)
			}
			errno = binary.BigEndian.Uint32(ch.payload)
		case replyTypeNone, replyTypeBlockStatus:
		default:
			c.t.Fatalf("chunk type %d", ch.typ)
		}
		if ch.flags&replyFlagDone != 0 {
			if errno != 0 {
				data = nil
			}
			return errno, data
		}
	}
}

// TestErrorReplies: every error the server replies with, in both reply
// modes, on the request that earns it (doc/proto.md, "Error values"),
// and the session goes on after each; the boundaries pass.
func TestErrorReplies(t *testing.T) {
	const size = 64 << 20
	s := &Server{Exports: []Export{{Name: "big", Source: source(size, zeros{}, holes{})}}}
	cases := []struct {
		what               string
		typ, flags         uint16
		off                uint64
		n                  uint32
		payload            int
		simple, structured uint32 // the error wanted in each mode; 0: success
	}{
		{"read past the end", cmdRead, 0, size - 10, 11, 0, errInval, errInval},
		{"read at 2^63", cmdRead, 0, 1 << 63, 1, 0, errInval, errInval},
		{"read wrapping around", cmdRead, 0, ^uint64(0) - 5, 4096, 0, errInval, errInval},
		{"read of the maximum payload", cmdRead, 0, 4096, MaxPayload, 0, 0, 0},
		{"read of the maximum payload + 1", cmdRead, 0, 0, MaxPayload + 1, 0, errOverflow, errOverflow},
		{"read of the maximum payload + 4 KiB", cmdRead, 0, 4096, MaxPayload + 4096, 0, errOverflow, errOverflow},
		{"read of twice the maximum payload", cmdRead, 0, 0, 2 * MaxPayload, 0, errOverflow, errOverflow},
		{"read past the end and too large", cmdRead, 0, 0, size + 1, 0, errInval, errInval},
		{"read of nothing", cmdRead, 0, 0, 0, 0, 0, 0},
		{"read with FUA", cmdRead, cmdFlagFUA, 0, 4096, 0, 0, 0},
		{"read with DF", cmdRead, cmdFlagDF, 0, 4096, 0, errInval, 0}, // DF needs structured replies
		{"read with REQ_ONE", cmdRead, cmdFlagReqOne, 0, 4096, 0, errInval, errInval},
		{"read with an unknown flag", cmdRead, 1 << 9, 0, 4096, 0, errInval, errInval},
		{"write", cmdWrite, 0, 0, 512, 512, errPerm, errPerm},
		{"write past the end", cmdWrite, 0, size, 512, 512, errPerm, errPerm},
		{"write with DF", cmdWrite, cmdFlagDF, 0, 512, 512, errInval, errInval},
		{"trim", cmdTrim, 0, 0, 512, 0, errPerm, errPerm},
		{"trim with FUA", cmdTrim, cmdFlagFUA, 0, 512, 0, errPerm, errPerm},
		{"trim with NO_HOLE", cmdTrim, cmdFlagNoHole, 0, 512, 0, errInval, errInval},
		{"write zeroes", cmdWriteZeroes, cmdFlagNoHole | cmdFlagFastZero, 0, 512, 0, errPerm, errPerm},
		{"flush", cmdFlush, 0, 0, 0, 0, 0, 0},
		{"flush with REQ_ONE", cmdFlush, cmdFlagReqOne, 0, 0, 0, errInval, errInval},
		{"cache", cmdCache, 0, 0, 4096, 0, 0, 0},
		{"cache past the end", cmdCache, 0, size - 1, 2, 0, errInval, errInval},
		{"block status", cmdBlockStatus, 0, 0, 4096, 0, errInval, 0}, // no context without structured replies
		{"block status, REQ_ONE", cmdBlockStatus, cmdFlagReqOne, 0, 4096, 0, errInval, 0},
		{"block status with DF", cmdBlockStatus, cmdFlagDF, 0, 4096, 0, errInval, errInval},
		{"block status past the end", cmdBlockStatus, 0, size - 4096, 8192, 0, errInval, errInval},
		{"block status of nothing", cmdBlockStatus, 0, 0, 0, 0, errInval, errInval},
		{"NBD_CMD_RESIZE", 8, 0, 0, 0, 0, errInval, errInval},
		{"an unknown command", 77, 0, 0, 512, 0, errInval, errInval},
		{"command 65535", 0xffff, 0, 0, 0, 0, errInval, errInval},
	}
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			c := dial(t, s)
			c.negotiate("big", structured)
			for i, tc := range cases {
				h := uint64(100 + i)
				c.request(tc.typ, tc.flags, h, tc.off, tc.n)
				c.write(make([]byte, tc.payload))
				n := 0
				if tc.typ == cmdRead {
					n = int(tc.n)
				}
				want := tc.simple
				if structured {
					want = tc.structured
				}
				errno, data := c.answer(structured, h, int64(tc.off), n)
				if errno != want {
					t.Errorf("%s: error %d, want %d", tc.what, errno, want)
				}
				if errno == 0 && tc.typ == cmdRead && bytes.Count(data, []byte{0}) != n {
					t.Errorf("%s: not the export's zeros", tc.what)
				}
			}
			c.request(cmdRead, 0, 1, 0, 4096)
			if errno, _ := c.answer(structured, 1, 0, 4096); errno != 0 {
				t.Errorf("a read after the errors: error %d", errno)
			}
		})
	}
}

// TestReadErrors: a read the export fails is EIO, with the offset in a
// structured reply after the chunks read before it; a simple reply that
// has begun cannot be taken back, and the connection ends (with the
// error said) instead of sending wrong bytes.
func TestReadErrors(t *testing.T) {
	const bad = 1<<20 + 100
	s := &Server{Exports: []Export{{Name: "bad", Source: source(8<<20, failAt{bad}, nil)}}}
	want := make([]byte, bad)
	pattern{}.ReadAt(want, 0)
	t.Run("structured", func(t *testing.T) {
		c := dial(t, s)
		c.negotiate("bad", true)
		c.request(cmdRead, 0, 1, 0, 2<<20)
		var got int64
		for {
			ch := c.chunk()
			if ch.handle != 1 {
				t.Fatalf("chunk for handle %d", ch.handle)
			}
			off := int64(binary.BigEndian.Uint64(ch.payload[len(ch.payload)-8:]))
			if ch.typ == replyTypeErrorOffset {
				if errno := binary.BigEndian.Uint32(ch.payload); errno != errIO || off > bad || off < got || ch.flags&replyFlagDone == 0 {
					t.Errorf("error chunk: error %d at %d, flags %d; want EIO at %d..%d, done", errno, off, ch.flags, got, bad)
				}
				break
			}
			off = int64(binary.BigEndian.Uint64(ch.payload))
			if ch.typ != replyTypeOffsetData || off != got || !bytes.Equal(ch.payload[8:], want[off:off+int64(len(ch.payload)-8)]) || ch.flags&replyFlagDone != 0 {
				t.Fatalf("chunk type %d at %d (flags %d), want data at %d", ch.typ, off, ch.flags, got)
			}
			got += int64(len(ch.payload) - 8)
		}
		if got == 0 {
			t.Error("nothing read before the error")
		}
		c.request(cmdRead, 0, 2, 4096, 4096)
		if errno, data := c.answer(true, 2, 4096, 4096); errno != 0 || !bytes.Equal(data, want[4096:8192]) {
			t.Errorf("a read after the error: error %d", errno)
		}
		// DF: one chunk, that has begun when the error comes.
		c.request(cmdRead, cmdFlagDF, 3, 0, 2<<20)
		h := c.read(20)
		if typ := binary.BigEndian.Uint16(h[6:]); typ != replyTypeOffsetData || binary.BigEndian.Uint32(h[16:]) != 8+2<<20 {
			t.Fatalf("DF reply header %x", h)
		}
		c.c.SetDeadline(time.Now().Add(3 * time.Second))
		if n, err := io.Copy(io.Discard, c.c); err != nil || n >= 8+2<<20 {
			t.Errorf("DF read past an error: %d bytes then %v, want the connection closed before the end", n, err)
		}
		if err := c.sessionErr(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("session ended with %v, want the read error", err)
		}
	})
	t.Run("simple", func(t *testing.T) {
		c := dial(t, s)
		c.negotiate("bad", false)
		c.request(cmdRead, 0, 1, bad-100, 4096) // fails in its first piece
		if errno, _ := c.answer(false, 1, bad-100, 4096); errno != errIO {
			t.Errorf("read across the error: error %d, want EIO", errno)
		}
		c.request(cmdRead, 0, 2, 0, 2<<20) // fails after the reply began
		if errno, hh, _ := c.simple(0); errno != 0 || hh != 2 {
			t.Fatalf("reply header: error %d, handle %d", errno, hh)
		}
		c.c.SetDeadline(time.Now().Add(3 * time.Second))
		got, err := io.ReadAll(c.c)
		if err != nil || len(got) >= 2<<20 || !bytes.Equal(got, want[:len(got)]) {
			t.Errorf("simple read past an error: %d bytes then %v, want fewer than %d right bytes, then the connection closed", len(got), err, 2<<20)
		}
		if err := c.sessionErr(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("session ended with %v, want the read error", err)
		}
	})
}

// sessionErr waits, at most 5 s, for the session of a dial client to
// end, and returns ServeConn's result.
func (c *client) sessionErr() error {
	c.t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(5 * time.Second):
		c.t.Fatal("the session did not end")
		return nil
	}
}

// descriptors splits a block status chunk into lengths and statuses.
func descriptors(t *testing.T, ch chunk) (lens []int64, sts []uint32) {
	t.Helper()
	if ch.typ != replyTypeBlockStatus || ch.flags&replyFlagDone == 0 || len(ch.payload) < 12 || (len(ch.payload)-4)%8 != 0 {
		t.Fatalf("block status reply: type %d flags %d, %d bytes", ch.typ, ch.flags, len(ch.payload))
	}
	if id := binary.BigEndian.Uint32(ch.payload); id != baseAllocationID {
		t.Fatalf("block status for context %d", id)
	}
	for d := ch.payload[4:]; len(d) > 0; d = d[8:] {
		lens = append(lens, int64(binary.BigEndian.Uint32(d)))
		sts = append(sts, binary.BigEndian.Uint32(d[4:]))
	}
	return lens, sts
}

// TestBlockStatus: descriptors start at the offset, are never empty,
// cover the range asked and no more, call holes only zeros, and merge
// neighbours of a kind; REQ_ONE gives exactly one, the first of the full
// answer, on a map of many extents; a range near 4 GiB is one
// descriptor; a reply holds at most maxDescriptors.
func TestBlockStatus(t *testing.T) {
	// 64 KiB stripes of zeros every 192 KiB, and in the data single
	// zero 4 KiB blocks (too small to be holes).
	b := make([]byte, 2<<20+512)
	for i := range b {
		if i>>16%3 != 1 && i>>12%5 != 2 {
			b[i] = byte(i*7 + 1)
		}
	}
	s := &Server{Exports: []Export{
		{Name: "disk", Source: source(int64(len(b)), disk{b}, disk{b})},
		{Name: "big", Source: source(5<<30, zeros{}, allData{})},
		{Name: "nomap", Source: source(5<<30, zeros{}, nil)},
		{Name: "striped", Source: source(1<<30, zeros{}, stripes{})},
	}}
	c := dial(t, s)
	c.negotiate("disk", true)
	h := uint64(0)
	status := func(flags uint16, off int64, n uint32) ([]int64, []uint32) {
		t.Helper()
		h++
		c.request(cmdBlockStatus, flags, h, uint64(off), n)
		ch := c.chunk()
		if ch.handle != h {
			t.Fatalf("reply for handle %d, want %d", ch.handle, h)
		}
		return descriptors(t, ch)
	}
	for off := int64(0); off < int64(len(b)); off += 12<<10 + 512 {
		for _, n := range []int64{512, 4096, 100 << 10, int64(len(b)) - off} {
			n = min(n, int64(len(b))-off)
			lens, sts := status(0, off, uint32(n))
			pos := off
			for i, l := range lens {
				zero := bytes.Count(b[pos:pos+l], []byte{0}) == int(l)
				if l <= 0 || sts[i] != 0 && (sts[i] != stateHole|stateZero || !zero) || i > 0 && sts[i] == sts[i-1] {
					t.Fatalf("block status %d+%d: descriptor %d: %d bytes at %d, status %d (zero %v)", off, n, i, l, pos, sts[i], zero)
				}
				pos += l
			}
			if pos != off+n {
				t.Fatalf("block status %d+%d: covers %d bytes", off, n, pos-off)
			}
			one, st1 := status(cmdFlagReqOne, off, uint32(n))
			if len(one) != 1 || one[0] != lens[0] || st1[0] != sts[0] {
				t.Fatalf("REQ_ONE block status %d+%d: %v %v, want [%d] [%d]", off, n, one, st1, lens[0], sts[0])
			}
		}
	}
	// Ranges near 4 GiB: one descriptor under REQ_ONE, the whole range
	// without it; with a map and without.
	for _, name := range []string{"big", "nomap"} {
		c := dial(t, s)
		c.negotiate(name, true)
		for _, flags := range []uint16{cmdFlagReqOne, 0} {
			c.request(cmdBlockStatus, flags, 1, 1<<30, 1<<32-1)
			lens, sts := descriptors(t, c.chunk())
			var sum int64
			for _, l := range lens {
				sum += l
			}
			if flags != 0 && len(lens) != 1 || sum != 1<<32-1 || sts[0] != 0 {
				t.Errorf("%s: block status (flags %d) of 4 GiB - 1: %v %v", name, flags, lens, sts)
			}
		}
	}
	// More runs than a reply holds: maxDescriptors of them, in order.
	c = dial(t, s)
	c.negotiate("striped", true)
	c.request(cmdBlockStatus, 0, 1, 0, 1<<30)
	lens, sts := descriptors(t, c.chunk())
	if len(lens) != maxDescriptors {
		t.Errorf("block status of 16384 runs: %d descriptors, want %d", len(lens), maxDescriptors)
	}
	for i := range lens {
		if lens[i] != 64<<10 || (sts[i] == 0) != (i%2 == 1) {
			t.Fatalf("striped descriptor %d: %d bytes, status %d", i, lens[i], sts[i])
		}
	}
	for _, tc := range []struct {
		off int64
		len int64
		st  uint32
	}{{0, 64 << 10, stateHole | stateZero}, {64<<10 + 100, 64<<10 - 100, 0}} {
		c.request(cmdBlockStatus, cmdFlagReqOne, 2, uint64(tc.off), uint32(1<<30-tc.off))
		if lens, sts := descriptors(t, c.chunk()); len(lens) != 1 || lens[0] != tc.len || sts[0] != tc.st {
			t.Errorf("REQ_ONE on stripes at %d: %v %v, want [%d] [%d]", tc.off, lens, sts, tc.len, tc.st)
		}
	}
}

// wholeExtents maps 1 MiB extents, zeros and data in turn, and reports
// each whole whatever length is asked: a map that does not clip.
type wholeExtents struct{}

func (wholeExtents) Region(start, length int64) (format.Region, error) {
	return format.Region{Start: start, Length: (start>>20+1)<<20 - start, Zero: start>>20%2 == 0}, nil
}

// TestUnclippedMap: a map whose regions run past the range asked still
// gets replies that cover that range and no more, for reads and block
// status alike.
func TestUnclippedMap(t *testing.T) {
	s := &Server{Exports: []Export{{Name: "d", Source: source(8<<20, zeros{}, wholeExtents{})}}}
	c := dial(t, s)
	c.negotiate("d", true)
	h := uint64(0)
	for _, r := range []struct{ off, n int64 }{{0, 512 << 10}, {1 << 20, 300 << 10}, {512 << 10, 1 << 20}, {3<<20 + 4096, 4096}} {
		h++
		c.request(cmdRead, 0, h, uint64(r.off), uint32(r.n))
		if errno, _ := c.answer(true, h, r.off, int(r.n)); errno != 0 {
			t.Fatalf("read %d+%d: error %d", r.off, r.n, errno)
		}
		for _, flags := range []uint16{0, cmdFlagReqOne} {
			h++
			c.request(cmdBlockStatus, flags, h, uint64(r.off), uint32(r.n))
			lens, _ := descriptors(t, c.chunk())
			var sum int64
			for _, l := range lens {
				sum += l
			}
			if sum > r.n || flags == 0 && sum != r.n {
				t.Errorf("block status %d+%d (flags %d): descriptors %v cover %d bytes", r.off, r.n, flags, lens, sum)
			}
		}
	}
}

// The steps of a negotiation, for tests that mix them.

// setMeta sends NBD_OPT_SET_META_CONTEXT and reports whether a context
// was selected, and the final reply.
func (c *client) setMeta(name string, queries ...string) (selected bool, final uint32) {
	c.t.Helper()
	c.option(optSetMeta, metaData(name, queries...))
	for {
		typ, data := c.reply(optSetMeta)
		if typ != repMetaContext {
			return selected, typ
		}
		if binary.BigEndian.Uint32(data) != baseAllocationID || string(data[4:]) != baseAllocation {
			c.t.Fatalf("set meta context: %q", data)
		}
		selected = true
	}
}

// listMeta sends NBD_OPT_LIST_META_CONTEXT and returns the contexts.
func (c *client) listMeta(name string, queries ...string) (ctxs []string, final uint32) {
	c.t.Helper()
	c.option(optListMeta, metaData(name, queries...))
	for {
		typ, data := c.reply(optListMeta)
		if typ != repMetaContext {
			return ctxs, typ
		}
		if binary.BigEndian.Uint32(data) != 0 {
			c.t.Errorf("list meta context: id %d, want 0 (reserved)", binary.BigEndian.Uint32(data))
		}
		ctxs = append(ctxs, string(data[4:]))
	}
}

// infoGo sends NBD_OPT_INFO or NBD_OPT_GO and returns the final reply.
func (c *client) infoGo(opt uint32, name string) uint32 {
	c.t.Helper()
	c.option(opt, nameData(name))
	for {
		if typ, _ := c.reply(opt); typ != repInfo {
			return typ
		}
	}
}

func (c *client) structuredReplies() {
	c.t.Helper()
	c.option(optStructured, nil)
	if typ, _ := c.reply(optStructured); typ != repAck {
		c.t.Fatalf("structured replies: %#x", typ)
	}
}

// TestMetaContexts: base:allocation is usable only on the export it was
// selected for, whichever way transmission is entered; the last
// NBD_OPT_SET_META_CONTEXT decides, even when it fails or selects
// nothing; NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT change nothing; a
// new connection starts with none.
func TestMetaContexts(t *testing.T) {
	s := newServer(testDisk())
	s.Default = "drive-scsi0"
	for _, tc := range []struct {
		what  string
		steps func(c *client)
		want  uint32 // block status error; 0: served
	}{
		{"set A, go A", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			c.infoGo(optGo, "drive-scsi0")
		}, 0},
		{"set A, go B", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			c.infoGo(optGo, "plain")
		}, errInval},
		{"set B, go A", func(c *client) {
			c.setMeta("plain", baseAllocation)
			c.infoGo(optGo, "drive-scsi0")
		}, errInval},
		{"set A, export name B", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			c.option(optExportName, []byte("plain"))
			c.read(10)
		}, errInval},
		{"set A, export name A", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			c.option(optExportName, []byte("drive-scsi0"))
			c.read(10)
		}, 0},
		{"set the default, go A", func(c *client) {
			c.setMeta("", baseAllocation)
			c.infoGo(optGo, "drive-scsi0")
		}, 0},
		{"set B, info A, go B", func(c *client) {
			c.setMeta("plain", baseAllocation)
			if typ := c.infoGo(optInfo, "drive-scsi0"); typ != repAck {
				t.Errorf("info: %#x", typ)
			}
			c.infoGo(optGo, "plain")
		}, 0},
		{"set A, info B, go A", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			c.infoGo(optInfo, "plain")
			c.infoGo(optGo, "drive-scsi0")
		}, 0},
		{"set A, lists, go A", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			for _, q := range [][]string{nil, {"base:"}, {baseAllocation}, {"x-nope:"}} {
				ctxs, typ := c.listMeta("plain", q...)
				if want := fmt.Sprint([]string{baseAllocation}); q != nil && q[0] == "x-nope:" {
					want = "[]"
					if fmt.Sprint(ctxs) != want || typ != repAck {
						t.Errorf("list %q: %v %#x", q, ctxs, typ)
					}
				} else if fmt.Sprint(ctxs) != want || typ != repAck {
					t.Errorf("list %q: %v %#x", q, ctxs, typ)
				}
			}
			c.infoGo(optGo, "drive-scsi0")
		}, 0},
		{"set A, set A with no query", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			if sel, typ := c.setMeta("drive-scsi0"); sel || typ != repAck {
				t.Errorf("set with no query: %v %#x", sel, typ)
			}
			c.infoGo(optGo, "drive-scsi0")
		}, errInval},
		{"set A, set A for another namespace", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			c.setMeta("drive-scsi0", "x-nope:thing", "base:")
			c.infoGo(optGo, "drive-scsi0")
		}, errInval},
		{"set A, set for an unknown export", func(c *client) {
			c.setMeta("drive-scsi0", baseAllocation)
			if _, typ := c.setMeta("nope", baseAllocation); typ != repErrUnknown {
				t.Errorf("set for an unknown export: %#x", typ)
			}
			c.infoGo(optGo, "drive-scsi0")
		}, errInval},
		{"no set", func(c *client) {
			c.infoGo(optGo, "drive-scsi0")
		}, errInval},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c := dial(t, s)
			c.hello(flagFixedNewstyle | flagNoZeroes)
			c.structuredReplies()
			tc.steps(c)
			c.request(cmdBlockStatus, 0, 1, 0, 64<<10)
			if errno, _ := c.answer(true, 1, 0, 0); errno != tc.want {
				t.Errorf("block status: error %d, want %d", errno, tc.want)
			}
		})
	}
	t.Run("set before structured replies", func(t *testing.T) {
		c := dial(t, s)
		c.hello(flagFixedNewstyle | flagNoZeroes)
		if sel, typ := c.setMeta("drive-scsi0", baseAllocation); sel || typ != repErrInvalid {
			t.Errorf("set meta context before structured replies: %v %#x", sel, typ)
		}
		if _, typ := c.listMeta("drive-scsi0"); typ != repErrInvalid {
			t.Errorf("list meta context before structured replies: %#x", typ)
		}
		c.structuredReplies()
		c.infoGo(optGo, "drive-scsi0")
		c.request(cmdBlockStatus, 0, 1, 0, 64<<10)
		if errno, _ := c.answer(true, 1, 0, 0); errno != errInval {
			t.Errorf("block status: error %d, want EINVAL", errno)
		}
	})
	t.Run("reconnect", func(t *testing.T) {
		sock, _ := serveUnix(t, s)
		c := dialUnix(t, sock)
		c.negotiate("drive-scsi0", true)
		c.request(cmdBlockStatus, 0, 1, 0, 64<<10)
		if errno, _ := c.answer(true, 1, 0, 0); errno != 0 {
			t.Fatalf("block status: error %d", errno)
		}
		c.request(cmdDisc, 0, 2, 0, 0)
		c = dialUnix(t, sock)
		c.hello(flagFixedNewstyle | flagNoZeroes)
		c.structuredReplies()
		c.infoGo(optGo, "drive-scsi0")
		c.request(cmdBlockStatus, 0, 1, 0, 64<<10)
		if errno, _ := c.answer(true, 1, 0, 0); errno != errInval {
			t.Errorf("block status on a new connection without a context: error %d, want EINVAL", errno)
		}
	})
}

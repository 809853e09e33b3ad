package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// zebra is a disk of 1 MiB stripes, every third one zeros, the others
// pattern; its map says so.
type zebra struct{}

func zebraZero(off int64) bool { return off>>20%3 == 1 }

func (zebra) ReadAt(p []byte, off int64) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), (off>>20+1)<<20-off)
		if zebraZero(off) {
			clear(p[:k])
		} else {
			pattern{}.ReadAt(p[:k], off)
		}
		p, off = p[k:], off+k
	}
	return n, nil
}

func (zebra) Region(start, length int64) (format.Region, error) {
	end := min((start>>20+1)<<20, start+length)
	return format.Region{Start: start, Length: end - start, Zero: zebraZero(start)}, nil
}

// fuzzExport is an export of the fuzzed server with what the client
// knows of it.
type fuzzExport struct {
	Export
	zero func(off, n int64) bool // whether the range reads as zeros
}

func fuzzServer() (*Server, []fuzzExport) {
	b := testDisk()
	zeroBytes := func(off, n int64) bool { return bytes.Count(b[off:off+n], []byte{0}) == int(n) }
	exports := []fuzzExport{
		{Export{Name: "drive-scsi0", Description: "test disk", Source: source(int64(len(b)), disk{b}, disk{b})}, zeroBytes},
		{Export{Name: "plain", Source: source(int64(len(b)), disk{b}, nil)}, zeroBytes},
		{Export{Name: "big", Source: source(40<<20, zebra{}, zebra{})}, func(off, n int64) bool {
			for o := off; o < off+n; o = (o>>20 + 1) << 20 {
				if !zebraZero(o) {
					return false
				}
			}
			return true
		}},
	}
	s := &Server{Default: "plain"}
	for _, e := range exports {
		s.Exports = append(s.Exports, e.Export)
	}
	return s, exports
}

// fuzzNames are the export names a fuzzed client asks for: the exports,
// the default, and names of none.
var fuzzNames = []string{"drive-scsi0", "plain", "big", "", "nope", "plain\x00"}

// program reads a fuzz input as a client's choices; past its end every
// choice is 0.
type program struct{ b []byte }

func (p *program) u8() byte {
	if len(p.b) == 0 {
		return 0
	}
	v := p.b[0]
	p.b = p.b[1:]
	return v
}

func (p *program) u16() uint16 { return uint16(p.u8())<<8 | uint16(p.u8()) }
func (p *program) u32() uint32 { return uint32(p.u16())<<16 | uint32(p.u16()) }
func (p *program) u64() uint64 { return uint64(p.u32())<<32 | uint64(p.u32()) }

func (p *program) bytes(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = p.u8()
	}
	return out
}

// The choices of a program, as the seeds spell them.
const (
	// options (after the client flags' choice and the option count)
	pStructured = iota
	pStructuredData
	pSetMeta
	pListMeta
	pInfo
	pList
	pStartTLS
	pRawOption
	pShortGo
	nOptions
)

const (
	// how the negotiation ends
	pGo = iota
	pExportName
	pAbort
	pGarbage
	nEnds
)

// fuzzClient is a client driven by a program, with a model of what the
// server must answer (doc/proto.md).
type fuzzClient struct {
	t          *testing.T
	c          net.Conn
	p          *program
	exports    []fuzzExport
	noZeroes   bool
	structured bool
	meta       string // the export base:allocation was selected for
	metaOn     bool
}

func (f *fuzzClient) read(n int) []byte {
	f.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(f.c, b); err != nil {
		f.t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func (f *fuzzClient) write(b []byte) {
	f.t.Helper()
	if len(b) == 0 {
		return
	}
	if _, err := f.c.Write(b); err != nil {
		f.t.Fatalf("writing: %v", err)
	}
}

// closed checks that the server ends the session.
func (f *fuzzClient) closed(why string) {
	f.t.Helper()
	if n, err := f.c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		f.t.Fatalf("%s: the server sent %d more bytes (%v), want the session ended", why, n, err)
	}
}

func (f *fuzzClient) find(name string) *fuzzExport {
	if name == "" {
		name = "plain" // the fuzzed server's default
	}
	for i := range f.exports {
		if f.exports[i].Name == name {
			return &f.exports[i]
		}
	}
	return nil
}

func (f *fuzzClient) option(opt uint32, data []byte) {
	f.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	f.write(append(b, data...))
}

// reply reads one option reply, which must answer opt.
func (f *fuzzClient) reply(opt uint32) (uint32, []byte) {
	f.t.Helper()
	h := f.read(20)
	if binary.BigEndian.Uint64(h) != repMagic || binary.BigEndian.Uint32(h[8:]) != opt {
		f.t.Fatalf("option reply %x to option %d", h, opt)
	}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		f.t.Fatalf("option reply of %d bytes", n)
	}
	return binary.BigEndian.Uint32(h[12:]), f.read(int(n))
}

// final reads replies to opt up to the final one and returns its type,
// and the others.
func (f *fuzzClient) final(opt uint32) (uint32, [][]byte, []uint32) {
	f.t.Helper()
	var datas [][]byte
	var types []uint32
	for {
		typ, data := f.reply(opt)
		switch typ {
		case repServer, repInfo, repMetaContext:
			datas, types = append(datas, data), append(types, typ)
			continue
		case repAck:
		default:
			if typ&(1<<31) == 0 {
				f.t.Fatalf("option %d: reply type %#x", opt, typ)
			}
		}
		return typ, datas, types
	}
}

func (f *fuzzClient) pickName() string { return fuzzNames[int(f.p.u8())%len(fuzzNames)] }

// queries are the metadata context queries a client sends.
func (f *fuzzClient) queries() []string {
	all := []string{baseAllocation, "base:", "x-nope:thing", "base:allocation2", ""}
	var q []string
	for range f.p.u8() % 4 {
		q = append(q, all[int(f.p.u8())%len(all)])
	}
	return q
}

// negotiate runs the program's options; it returns the export of the
// transmission, or nil when the session ended.
func (f *fuzzClient) negotiate() *fuzzExport {
	t := f.t
	g := f.read(18)
	if binary.BigEndian.Uint64(g) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic {
		t.Fatalf("greeting %x", g)
	}
	flags := uint32(flagFixedNewstyle | flagNoZeroes)
	switch f.p.u8() % 8 {
	case 6:
		flags = flagFixedNewstyle
	case 7:
		flags = f.p.u32()
	}
	f.write(binary.BigEndian.AppendUint32(nil, flags))
	if flags&flagFixedNewstyle == 0 || flags&^(flagFixedNewstyle|flagNoZeroes) != 0 {
		f.closed("bad client flags")
		return nil
	}
	f.noZeroes = flags&flagNoZeroes != 0
	for range f.p.u8() % 8 {
		switch f.p.u8() % nOptions {
		case pStructured:
			f.option(optStructured, nil)
			if typ, _, _ := f.final(optStructured); typ != repAck {
				t.Fatalf("structured replies: %#x", typ)
			}
			f.structured = true
		case pStructuredData:
			f.option(optStructured, []byte{1})
			if typ, _, _ := f.final(optStructured); typ != repErrInvalid {
				t.Fatalf("structured replies with data: %#x", typ)
			}
		case pSetMeta, pListMeta:
			opt := uint32(optSetMeta)
			if f.p.u8()%2 == 1 {
				opt = optListMeta
			}
			name, q := f.pickName(), f.queries()
			f.option(opt, metaData(name, q...))
			typ, ctxs, _ := f.final(opt)
			e := f.find(name)
			want, match := uint32(repAck), false
			switch {
			case !f.structured:
				want = repErrInvalid
			case e == nil:
				want = repErrUnknown
			default:
				match = opt == optListMeta && len(q) == 0 || slices.Contains(q, baseAllocation) || opt == optListMeta && slices.Contains(q, "base:")
			}
			if typ != want || (len(ctxs) > 0) != (match && want == repAck) || len(ctxs) > 1 {
				t.Fatalf("meta context option %d for %q %q (structured %v): %#x %q", opt, name, q, f.structured, typ, ctxs)
			}
			if len(ctxs) == 1 {
				id := binary.BigEndian.Uint32(ctxs[0])
				if string(ctxs[0][4:]) != baseAllocation || opt == optSetMeta && id != baseAllocationID || opt == optListMeta && id != 0 {
					t.Fatalf("meta context %q", ctxs[0])
				}
			}
			if opt == optSetMeta {
				f.metaOn = len(ctxs) == 1
				if e != nil {
					f.meta = e.Name
				}
			}
		case pInfo:
			name := f.pickName()
			f.option(optInfo, nameData(name, uint16(f.p.u8()%5)))
			typ, infos, _ := f.final(optInfo)
			f.checkInfo(name, typ, infos)
		case pList:
			f.option(optList, nil)
			typ, servers, _ := f.final(optList)
			if typ != repAck || len(servers) != len(f.exports) {
				t.Fatalf("list: %#x, %d exports", typ, len(servers))
			}
		case pStartTLS:
			f.option(optStartTLS, nil)
			if typ, _, _ := f.final(optStartTLS); typ != repErrPolicy {
				t.Fatalf("starttls: %#x", typ)
			}
		case pRawOption:
			// Options that do not change the session, with any data.
			opt := []uint32{optList, optStartTLS, optInfo, optListMeta, optExtHeaders, 0, 4, 12, 1000, 1 << 31}[int(f.p.u8())%10]
			f.option(opt, f.p.bytes(int(f.p.u8()%48)))
			f.final(opt)
		case pShortGo:
			f.option(optGo, []byte{0, 0, 0})
			if typ, _, _ := f.final(optGo); typ != repErrInvalid {
				t.Fatalf("short go: %#x", typ)
			}
		}
	}
	switch f.p.u8() % nEnds {
	case pGo:
		name := f.pickName()
		f.option(optGo, nameData(name, infoName))
		typ, infos, _ := f.final(optGo)
		if e := f.checkInfo(name, typ, infos); e != nil {
			return e
		}
		f.option(optAbort, nil)
		if typ, _ := f.reply(optAbort); typ != repAck {
			t.Fatalf("abort: %#x", typ)
		}
		f.closed("abort")
		return nil
	case pExportName:
		name := f.pickName()
		f.option(optExportName, []byte(name))
		e := f.find(name)
		if e == nil {
			f.closed("export name of no export")
			return nil
		}
		n := 10
		if !f.noZeroes {
			n += 124
		}
		b := f.read(n)
		if int64(binary.BigEndian.Uint64(b)) != e.Source.Size() || binary.BigEndian.Uint16(b[8:])&(tflagHasFlags|tflagReadOnly) != tflagHasFlags|tflagReadOnly {
			t.Fatalf("export name %q: %x", name, b)
		}
		return e
	case pAbort:
		f.option(optAbort, nil)
		if typ, _ := f.reply(optAbort); typ != repAck {
			t.Fatalf("abort: %#x", typ)
		}
		f.closed("abort")
		return nil
	default:
		f.write(bytes.Repeat([]byte{0x55}, 16))
		f.closed("bad option magic")
		return nil
	}
}

// checkInfo checks the replies to NBD_OPT_INFO or NBD_OPT_GO for name,
// and returns its export if it has one.
func (f *fuzzClient) checkInfo(name string, typ uint32, infos [][]byte) *fuzzExport {
	e := f.find(name)
	if e == nil {
		if typ != repErrUnknown {
			f.t.Fatalf("info/go %q: %#x, want NBD_REP_ERR_UNKNOWN", name, typ)
		}
		return nil
	}
	var size, bs bool
	for _, in := range infos {
		switch binary.BigEndian.Uint16(in) {
		case infoExport:
			size = int64(binary.BigEndian.Uint64(in[2:])) == e.Source.Size()
		case infoBlockSize:
			bs = binary.BigEndian.Uint32(in[10:]) == MaxPayload
		case infoName:
			if string(in[2:]) != e.Name {
				f.t.Fatalf("info name %q for %q", in[2:], e.Name)
			}
		}
	}
	if typ != repAck || !size || !bs {
		f.t.Fatalf("info/go %q: %#x, size %v, block size %v", name, typ, size, bs)
	}
	return e
}

// fuzzRequest is a request with what it must get.
type fuzzRequest struct {
	request
	want []uint32 // the errors allowed; 0 is success

	// what came
	done       bool
	errno      uint32
	got        []byte  // read data (holes as zeros)
	covered    []piece // read ranges answered, in order of arrival
	descs      [][2]uint32
	statusSeen bool
}

// model gives the errors the protocol allows for rq (doc/proto.md,
// "Request types" and "Error values") on export e.
func (f *fuzzClient) model(rq request, e *fuzzExport) []uint32 {
	end := rq.off + uint64(rq.length)
	inside := end >= rq.off && end <= uint64(e.Source.Size())
	valid := uint16(cmdFlagFUA)
	switch rq.typ {
	case cmdRead:
		if f.structured {
			valid |= cmdFlagDF
		}
	case cmdWriteZeroes:
		valid |= cmdFlagNoHole | cmdFlagFastZero
	case cmdBlockStatus:
		valid |= cmdFlagReqOne
	}
	switch {
	case rq.typ > cmdBlockStatus:
		return []uint32{errInval} // unknown command
	case rq.flags&^valid != 0:
		return []uint32{errInval} // a flag not for this command
	}
	switch rq.typ {
	case cmdRead:
		switch {
		case !inside && rq.length > MaxPayload:
			return []uint32{errInval, errOverflow}
		case !inside:
			return []uint32{errInval}
		case rq.length > MaxPayload:
			return []uint32{errOverflow}
		}
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		return []uint32{errPerm} // read-only
	case cmdCache:
		if !inside {
			return []uint32{errInval}
		}
	case cmdBlockStatus:
		if !f.structured || !f.metaOn || f.meta != e.Name || !inside || rq.length == 0 {
			return []uint32{errInval}
		}
	}
	return []uint32{0}
}

// requests builds the program's requests on export e.
func (f *fuzzClient) requests(e *fuzzExport) []*fuzzRequest {
	types := []uint16{cmdRead, cmdRead, cmdRead, cmdRead, cmdBlockStatus, cmdBlockStatus, cmdBlockStatus, cmdWrite, cmdFlush, cmdTrim, cmdCache, cmdWriteZeroes}
	var out []*fuzzRequest
	for i := range int(f.p.u8() % 12) {
		k := int(f.p.u8())
		typ := 9 + uint16(f.p.u8()) // unknown: 9 to 264, never NBD_CMD_DISC
		if k%16 < len(types) {
			typ = types[k%16]
		}
		var flags uint16
		switch fl := f.p.u8(); {
		case fl >= 224:
			flags = f.p.u16()
		case fl >= 160:
			flags = []uint16{cmdFlagFUA, cmdFlagNoHole, cmdFlagDF, cmdFlagReqOne, cmdFlagFastZero}[fl%5]
		}
		var off uint64
		switch f.p.u8() % 8 {
		case 0, 1, 2:
			off = uint64(f.p.u32()) % uint64(e.Source.Size())
		case 3:
			off = uint64(f.p.u32()) % uint64(e.Source.Size()) &^ 4095
		case 4:
			off = uint64(e.Source.Size()) - uint64(f.p.u8())
		case 5:
			off = uint64(e.Source.Size())
		case 6:
			off = f.p.u64()
		}
		var n uint32
		switch f.p.u8() % 8 {
		case 0, 1, 2:
			n = uint32(f.p.u16())
		case 3:
			n = f.p.u32() % (2 << 20)
		case 4:
			n = uint32(int64(MaxPayload) + int64(int8(f.p.u8())))
		case 5:
			n = f.p.u32()
		case 6:
			n = uint32(uint64(e.Source.Size()) - off)
		}
		if typ == cmdWrite {
			n %= 64 << 10 // its payload is sent
		}
		rq := request{flags: flags, typ: typ, handle: uint64(i) + 1, off: off, length: n}
		out = append(out, &fuzzRequest{request: rq, want: f.model(rq, e)})
	}
	return out
}

// transmit sends the requests (and then, maybe, garbage or NBD_CMD_DISC)
// and checks every reply.
func (f *fuzzClient) transmit(e *fuzzExport) {
	reqs := f.requests(e)
	var stream []byte
	for _, rq := range reqs {
		stream = append(stream, requestBytes(rq.typ, rq.flags, rq.handle, rq.off, rq.length)...)
		if rq.typ == cmdWrite {
			stream = append(stream, make([]byte, rq.length)...)
		}
	}
	end := f.p.u8() % 4
	switch end {
	case 1:
		stream = append(stream, requestBytes(cmdDisc, 0, 0, 0, 0)...)
	case 2:
		stream = append(stream, bytes.Repeat([]byte{0x55}, 28)...)
	}
	go f.c.Write(stream) // replies are read meanwhile
	byHandle := map[uint64]*fuzzRequest{}
	for _, rq := range reqs {
		byHandle[rq.handle] = rq
	}
	for left := len(reqs); left > 0; left-- {
		rq := f.next(byHandle)
		f.check(rq, e)
	}
	if end == 1 || end == 2 {
		f.closed("disconnect or garbage")
	}
}

// next reads replies up to one that completes a request, and returns
// that request.
func (f *fuzzClient) next(byHandle map[uint64]*fuzzRequest) *fuzzRequest {
	t := f.t
	for {
		h := f.read(4)
		magic := binary.BigEndian.Uint32(h)
		if f.structured && magic != structReplyMagic || !f.structured && magic != simpleReplyMagic {
			t.Fatalf("reply magic %#x (structured replies %v)", magic, f.structured)
		}
		if !f.structured {
			h = append(h, f.read(12)...)
			rq := byHandle[binary.BigEndian.Uint64(h[8:])]
			if rq == nil || rq.done {
				t.Fatalf("simple reply for handle %d, which is not in flight", binary.BigEndian.Uint64(h[8:]))
			}
			rq.done, rq.errno = true, binary.BigEndian.Uint32(h[4:])
			if rq.errno == 0 && rq.typ == cmdRead {
				rq.got = f.read(int(rq.length))
				rq.covered = append(rq.covered, piece{int64(rq.off), int64(rq.length), false})
			}
			return rq
		}
		h = append(h, f.read(16)...)
		flags, typ := binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:])
		rq := byHandle[binary.BigEndian.Uint64(h[8:])]
		if rq == nil || rq.done {
			t.Fatalf("chunk for handle %d, which is not in flight", binary.BigEndian.Uint64(h[8:]))
		}
		n := binary.BigEndian.Uint32(h[16:])
		if n > MaxPayload+8 {
			t.Fatalf("chunk of %d bytes", n)
		}
		p := f.read(int(n))
		switch {
		case typ == replyTypeError || typ == replyTypeErrorOffset:
			if n < 6 || int(binary.BigEndian.Uint16(p[4:]))+6 > int(n) || typ == replyTypeErrorOffset && int(binary.BigEndian.Uint16(p[4:]))+14 != int(n) {
				t.Fatalf("error chunk %x", p)
			}
			if rq.errno != 0 {
				t.Fatalf("handle %d: a second error chunk", rq.handle)
			}
			rq.errno = binary.BigEndian.Uint32(p)
			if rq.errno == 0 {
				t.Fatal("error chunk with error 0")
			}
			if typ == replyTypeErrorOffset {
				o := binary.BigEndian.Uint64(p[n-8:])
				if o < rq.off || o >= rq.off+uint64(rq.length) {
					t.Fatalf("error offset %d outside the request %d+%d", o, rq.off, rq.length)
				}
			}
		case rq.typ == cmdRead && (typ == replyTypeOffsetData || typ == replyTypeOffsetHole):
			if n < 9 || typ == replyTypeOffsetHole && n != 12 {
				t.Fatalf("content chunk of %d bytes", n)
			}
			if rq.got == nil {
				rq.got = make([]byte, rq.length)
			}
			o := int64(binary.BigEndian.Uint64(p)) - int64(rq.off)
			l := int64(n - 8)
			if typ == replyTypeOffsetHole {
				l = int64(binary.BigEndian.Uint32(p[8:]))
			}
			if o < 0 || l <= 0 || o+l > int64(rq.length) {
				t.Fatalf("content chunk %d+%d outside the read %d+%d", o+int64(rq.off), l, rq.off, rq.length)
			}
			for _, c := range rq.covered {
				if o+int64(rq.off) < c.off+c.n && c.off < o+int64(rq.off)+l {
					t.Fatalf("content chunks overlap")
				}
			}
			rq.covered = append(rq.covered, piece{o + int64(rq.off), l, typ == replyTypeOffsetHole})
			if typ == replyTypeOffsetData {
				copy(rq.got[o:], p[8:])
			}
		case rq.typ == cmdBlockStatus && typ == replyTypeBlockStatus:
			if rq.statusSeen || n < 12 || (n-4)%8 != 0 || binary.BigEndian.Uint32(p) != baseAllocationID {
				t.Fatalf("block status chunk %x", p)
			}
			rq.statusSeen = true
			for d := p[4:]; len(d) > 0; d = d[8:] {
				rq.descs = append(rq.descs, [2]uint32{binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])})
			}
		case typ == replyTypeNone:
			if n != 0 || flags&replyFlagDone == 0 {
				t.Fatalf("NBD_REPLY_TYPE_NONE of %d bytes, flags %d", n, flags)
			}
		default:
			t.Fatalf("chunk type %d for command %d", typ, rq.typ)
		}
		if flags&replyFlagDone != 0 {
			rq.done = true
			return rq
		}
	}
}

// check checks a completed request against the model and the export.
func (f *fuzzClient) check(rq *fuzzRequest, e *fuzzExport) {
	t := f.t
	what := fmt.Sprintf("command %d flags %#x at %d+%d on %s (structured %v)", rq.typ, rq.flags, rq.off, rq.length, e.Name, f.structured)
	if !slices.Contains(rq.want, rq.errno) {
		t.Fatalf("%s: error %d, want one of %v", what, rq.errno, rq.want)
	}
	if rq.errno != 0 {
		return
	}
	switch rq.typ {
	case cmdRead:
		var sum int64
		for _, c := range rq.covered {
			sum += c.n
			if c.zero && !e.zero(c.off, c.n) {
				t.Fatalf("%s: a hole at %d+%d where the export has data", what, c.off, c.n)
			}
		}
		if sum != int64(rq.length) {
			t.Fatalf("%s: %d bytes answered", what, sum)
		}
		if rq.flags&cmdFlagDF != 0 && len(rq.covered) > 1 {
			t.Fatalf("%s: DF read answered in %d chunks", what, len(rq.covered))
		}
		want := make([]byte, rq.length)
		e.Source.ReadAt(want, int64(rq.off))
		if rq.length > 0 && !bytes.Equal(rq.got, want) {
			t.Fatalf("%s: not the export's bytes", what)
		}
	case cmdBlockStatus:
		if !rq.statusSeen || len(rq.descs) == 0 {
			t.Fatalf("%s: no block status", what)
		}
		if rq.flags&cmdFlagReqOne != 0 && len(rq.descs) != 1 {
			t.Fatalf("%s: %d descriptors under REQ_ONE", what, len(rq.descs))
		}
		pos := int64(rq.off)
		for _, d := range rq.descs {
			if d[0] == 0 || d[1]&^(stateHole|stateZero) != 0 {
				t.Fatalf("%s: descriptor %v", what, d)
			}
			if pos+int64(d[0]) > int64(rq.off)+int64(rq.length) {
				t.Fatalf("%s: descriptors cover more than the range asked", what)
			}
			if d[1]&stateZero != 0 && !e.zero(pos, int64(d[0])) {
				t.Fatalf("%s: %d bytes at %d called zero", what, d[0], pos)
			}
			pos += int64(d[0])
		}
		if pos != int64(rq.off)+int64(rq.length) && len(rq.descs) < maxDescriptors && rq.flags&cmdFlagReqOne == 0 {
			t.Fatalf("%s: %d descriptors cover %d bytes", what, len(rq.descs), pos-int64(rq.off))
		}
	}
}

// seed spells a program: the client flags' choice (0: fixed newstyle, no
// zeroes), the options, the end of the negotiation, the requests, how
// the session ends.
type seed []byte

func (s seed) opt(kind byte, args ...byte) seed { return append(append(s, kind), args...) }

// name picks fuzzNames[i].
const (
	nScsi = iota
	nPlain
	nBig
	nDefault
	nNope
)

// req spells a request: its type (an index of fuzzClient.requests'
// table, 12 for an unknown one), flags choice, offset and length
// choices.
func (s seed) req(typ byte, flags, offKind byte, off uint32, lenKind byte, n ...byte) seed {
	s = append(s, typ, 0, flags, offKind)
	switch offKind {
	case 0, 1, 2, 3:
		s = binary.BigEndian.AppendUint32(s, off)
	case 4:
		s = append(s, byte(off))
	case 6:
		s = binary.BigEndian.AppendUint64(s, uint64(off))
	}
	return append(append(s, lenKind), n...)
}

// FuzzServer: a client made from the input negotiates (options in any
// order, some malformed) and sends requests (out of range, too large,
// of unknown types and flags), then maybe garbage or NBD_CMD_DISC. Every
// option reply is the one the protocol gives; every request is answered
// once, each chunk with its handle; errors are the ones doc/proto.md
// prescribes; reads return the export's bytes, holes only where it is
// zeros; block status starts at the offset, covers the range asked (at
// most; all of it below maxDescriptors) with non-empty descriptors, one
// under REQ_ONE. An input starting with 0xff is sent as it is: the
// server answers or hangs up, and the session ends.
//
//	go test -run '^$' -fuzz FuzzServer ./nbd/
func FuzzServer(f *testing.F) {
	s, exports := fuzzServer()
	// Negotiations.
	for _, x := range []seed{
		seed{0, 4}.opt(pStructured).opt(pSetMeta, 0, nScsi, 1, 0).opt(pInfo, nBig, 3).opt(pList).opt(pGo, nScsi),
		seed{0, 5}.opt(pSetMeta, 1, nPlain, 0).opt(pStructured).opt(pListMeta, 1, nPlain, 1, 1).opt(pStartTLS).opt(pShortGo).opt(pExportName, nNope),
		seed{6, 2}.opt(pRawOption, 2, 9, 0, 0, 0, 3, 'b', 'i', 'g', 0, 0).opt(pStructuredData).opt(pAbort),
		seed{7, 0, 0, 0, 5},
		seed{0, 1}.opt(pInfo, nDefault, 1).opt(pGarbage),
	} {
		f.Add([]byte(x))
	}
	// Transmissions. Requests: 0 read, 4 block status, 7 write, 8 flush,
	// 9 trim, 10 cache, 11 write zeroes; flags 160+k: the k-th known
	// flag; offsets 0: the number given, 4: size - n, 5: size, 7: 0;
	// lengths 0: 16 bits, 4: MaxPayload + int8, 6: to the end, 7: 0.
	structured := seed{0, 2}.opt(pStructured).opt(pSetMeta, 0, nScsi, 1, 0)
	f.Add([]byte(append(structured.opt(pGo, nScsi), 9).
		req(0, 0, 0, 4000, 0, 0x23, 0x28).
		req(4, 0, 7, 0, 6).
		req(4, 163, 0, 100, 6).     // REQ_ONE
		req(0, 162, 0, 500<<10, 6). // DF
		req(4, 163, 0, 512<<10, 0, 0x10, 0).
		req(7, 0, 0, 0, 0, 2, 0).    // write
		req(12, 0, 7, 0, 7).         // unknown
		req(0, 163, 7, 0, 0, 0, 10). // read with REQ_ONE
		req(10, 0, 5, 0, 0, 0, 1)))  // cache past the end
	// The meta context was selected for another export.
	f.Add([]byte(append(structured.opt(pGo, nPlain), 2).
		req(4, 0, 7, 0, 0, 0x10, 0).
		req(4, 163, 7, 0, 0, 0x10, 0)))
	// Reads too large, and large ones, with simple and structured replies.
	f.Add([]byte(append(seed{0, 0}.opt(pExportName, nBig), 3).
		req(0, 0, 7, 0, 3, 0, 0x10, 0, 0). // 1 MiB
		req(0, 0, 7, 0, 4, 1).             // MaxPayload + 1
		req(0, 0, 0, 4096, 4, 64).         // MaxPayload + 64
		req(9, 0, 7, 0, 7)))
	f.Add([]byte(append(seed{0, 2}.opt(pStructured).opt(pSetMeta, 0, nBig, 1, 0).opt(pGo, nBig), 4).
		req(0, 0, 0, 1<<20-5, 3, 0, 0x1f, 0xff, 0xff). // 2 MiB - 1, a hole among data
		req(0, 0, 7, 0, 4, 0x7f).                      // MaxPayload + 127
		req(4, 163, 0, 1<<20+7, 6).
		req(4, 0, 4, 0, 6, 0)))
	// Raw bytes.
	flags := binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)
	raw := append([]byte{0xff}, flags...)
	f.Add(append(raw, make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		done := make(chan struct{})
		go func() {
			s.ServeConn(context.Background(), b)
			close(done)
		}()
		a.SetDeadline(time.Now().Add(5 * time.Second))
		if len(in) > 0 && in[0] == 0xff {
			go io.Copy(io.Discard, a)
			a.Write(in[1:])
		} else {
			fc := &fuzzClient{t: t, c: a, p: &program{in}, exports: exports}
			if e := fc.negotiate(); e != nil {
				fc.transmit(e)
			}
		}
		a.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end after the client left")
		}
	})
}

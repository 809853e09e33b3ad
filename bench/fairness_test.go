package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/nbd"
)

// pattern is a disk of 1 GiB (a format.Source) whose every byte is data
// (no map: nothing is a hole), computed from its offset: reading it costs
// no memory but the reader's buffer.
type pattern struct{}

const patternSize = 1 << 30

func (pattern) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		p[i] = byte((off+int64(i))*7 + 1)
	}
	return len(p), nil
}

func (pattern) Size() int64  { return patternSize }
func (pattern) Close() error { return nil }

// BenchmarkNBDFairness: the round trip of one 4 KiB read through the
// server (median as median-ns; the goal is under 10 ms) while another
// client has sent reads of 32 MiB, the most allowed, and never takes
// their replies. Each read of the measured client must come back within
// 5 s, or the benchmark fails.
func BenchmarkNBDFairness(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &nbd.Server{Exports: []nbd.Export{{Name: "disk", Source: pattern{}}}}
	done := make(chan struct{})
	go func() { srv.Serve(ctx, l); close(done) }()
	b.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			b.Error("the server did not stop")
		}
	})
	stalled, err := stallClient(sock, "disk", 4)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stalled.Close() })
	time.Sleep(200 * time.Millisecond) // the stalled replies fill the socket
	c, err := dialNBD(sock, "disk")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.c.Close() })
	rng := rand.New(rand.NewPCG(7, 8))
	var lat []time.Duration
	b.SetBytes(4096)
	for b.Loop() {
		off := rng.Int64N(patternSize/4096) * 4096
		c.c.SetDeadline(time.Now().Add(5 * time.Second))
		t := time.Now()
		if err := c.readAll2(off, 4096); err != nil {
			b.Fatalf("a 4 KiB read while another client stalls: %v (after %v)", err, time.Since(t))
		}
		lat = append(lat, time.Since(t))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "median-ns")
}

// stallClient connects with simple replies (every byte of a read is
// data), sends n reads of 32 MiB and never reads a reply.
func stallClient(sock, name string, n int) (net.Conn, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	be := binary.BigEndian
	if _, err := io.ReadFull(c, make([]byte, 18)); err != nil {
		c.Close()
		return nil, err
	}
	b := be.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	b = be.AppendUint64(b, 0x49484156454f5054)
	b = be.AppendUint32(b, 7) // NBD_OPT_GO
	b = be.AppendUint32(b, uint32(4+len(name)+2))
	b = append(be.AppendUint32(b, uint32(len(name))), name...)
	b = append(b, 0, 0)
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	for {
		h := make([]byte, 20)
		if _, err := io.ReadFull(c, h); err != nil {
			c.Close()
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, c, int64(be.Uint32(h[16:]))); err != nil {
			c.Close()
			return nil, err
		}
		typ := be.Uint32(h[12:])
		if typ == 1 {
			break
		}
		if typ&(1<<31) != 0 {
			c.Close()
			return nil, errors.New("NBD_OPT_GO refused")
		}
	}
	for i := range n {
		r := be.AppendUint32(nil, 0x25609513)
		r = be.AppendUint32(r, 0) // flags, read
		r = be.AppendUint64(r, uint64(i))
		r = be.AppendUint64(r, uint64(i)<<25)
		r = be.AppendUint32(r, 32<<20)
		if _, err := c.Write(r); err != nil {
			c.Close()
			return nil, err
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/nbd"
)

// openDevice opens the benchmark archive's device through its index.
func openDevice(b *testing.B, path string) *vma.DeviceReader {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	ar, err := vma.Open(f, fi.Size())
	if err != nil {
		b.Fatal(err)
	}
	return ar.Devices()[0]
}

// BenchmarkRandomRead4K: 4 KiB reads at random offsets of an archive
// device (the index lookup and one pread), as a mounted or served backup
// is read by a file system (device bytes read per second); the median is
// reported as median-ns.
func BenchmarkRandomRead4K(b *testing.B) {
	_, arcPath, _ := e2eFiles(b)
	d := openDevice(b, arcPath)
	rng := rand.New(rand.NewPCG(3, 4))
	p := make([]byte, 4096)
	var lat []time.Duration
	b.SetBytes(4096)
	for b.Loop() {
		off := rng.Int64N(d.Size()/4096) * 4096
		t := time.Now()
		if _, err := d.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "median-ns")
}

// serve starts an NBD server for the device on a Unix socket and returns
// a connected client that has negotiated structured replies.
func serve(b *testing.B, e nbd.Export) *nbdClient {
	sock := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &nbd.Server{Exports: []nbd.Export{e}}
	done := make(chan struct{})
	go func() { srv.Serve(ctx, l); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	c, err := dialNBD(sock, e.Name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.c.Close() })
	return c
}

// BenchmarkNBDRead: a device read from start to end through the NBD
// server over a Unix socket, 2 MiB requests with 8 in flight as qemu
// sends them (device bytes per second; compare with
// BenchmarkConvert/restore).
func BenchmarkNBDRead(b *testing.B) {
	_, arcPath, _ := e2eFiles(b)
	d := openDevice(b, arcPath)
	c := serve(b, nbd.Export{Name: "drive-scsi0", Source: d})
	b.SetBytes(d.Size())
	for b.Loop() {
		if err := c.readAll(d.Size(), 2<<20, 8); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNBDRandomRead4K: the round trip of one 4 KiB read through the
// server (device bytes read per second), median as median-ns.
func BenchmarkNBDRandomRead4K(b *testing.B) {
	_, arcPath, _ := e2eFiles(b)
	d := openDevice(b, arcPath)
	c := serve(b, nbd.Export{Name: "drive-scsi0", Source: d})
	rng := rand.New(rand.NewPCG(5, 6))
	var lat []time.Duration
	b.SetBytes(4096)
	for b.Loop() {
		off := rng.Int64N(d.Size()/4096) * 4096
		t := time.Now()
		if err := c.readAll2(off, 4096); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "median-ns")
}

// BenchmarkSeekableOpen: opening a seekable .vma.zst of the 256 MiB disk
// for reading at random (seek table, then every extent header through
// the frames that hold them): device bytes per second, the 256 MiB disk
// it makes readable; archive-MB/s counts the uncompressed archive's bytes
// (the .vma inside the .vma.zst).
func BenchmarkSeekableOpen(b *testing.B) {
	rawPath, _, _ := e2eFiles(b)
	path := filepath.Join(b.TempDir(), "disk.vma.zst")
	seekable, err := format.ParseOptions(vma.Format, "seekable=on")
	if err != nil {
		b.Fatal(err)
	}
	if err := convert(rawPath, vma.Format, path, 0, format.CreateOptions{Options: seekable}); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var archive int64
	b.SetBytes(e2eDisk)
	for b.Loop() {
		s, err := compress.OpenSeekable(f, fi.Size())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := vma.Open(s, s.Size()); err != nil {
			b.Fatal(err)
		}
		archive = s.Size()
		s.Close()
	}
	reportArchiveRate(b, archive)
}

// nbdClient is the least of an NBD client: fixed newstyle, structured
// replies, reads.
type nbdClient struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dialNBD(sock, name string) (*nbdClient, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	cl := &nbdClient{c: c, r: bufio.NewReaderSize(c, 1<<20), w: bufio.NewWriter(c)}
	if _, err := io.ReadFull(cl.r, make([]byte, 18)); err != nil {
		return nil, err
	}
	be := binary.BigEndian
	cl.w.Write(be.AppendUint32(nil, 3))
	opt := func(o uint32, data []byte) {
		b := be.AppendUint64(nil, 0x49484156454f5054)
		b = be.AppendUint32(b, o)
		b = be.AppendUint32(b, uint32(len(data)))
		cl.w.Write(append(b, data...))
	}
	opt(8, nil) // structured replies
	data := append(be.AppendUint32(nil, uint32(len(name))), name...)
	opt(7, append(data, 0, 0)) // go
	if err := cl.w.Flush(); err != nil {
		return nil, err
	}
	for acks := 0; acks < 2; {
		h := make([]byte, 20)
		if _, err := io.ReadFull(cl.r, h); err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, cl.r, int64(be.Uint32(h[16:]))); err != nil {
			return nil, err
		}
		switch typ := be.Uint32(h[12:]); {
		case typ == 1:
			acks++
		case typ&(1<<31) != 0:
			return nil, errors.New("option refused")
		}
	}
	return cl, nil
}

func (c *nbdClient) request(off int64, n uint32) {
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0x25609513)
	b = be.AppendUint32(b, 0) // flags, read
	b = be.AppendUint64(b, uint64(off))
	b = be.AppendUint64(b, uint64(off))
	c.w.Write(be.AppendUint32(b, n))
}

// reply consumes one read's chunks.
func (c *nbdClient) reply() error {
	be := binary.BigEndian
	h := make([]byte, 20)
	for {
		if _, err := io.ReadFull(c.r, h); err != nil {
			return err
		}
		if be.Uint16(h[6:])&(1<<15) != 0 {
			return errors.New("read failed")
		}
		if _, err := io.CopyN(io.Discard, c.r, int64(be.Uint32(h[16:]))); err != nil {
			return err
		}
		if be.Uint16(h[4:])&1 != 0 {
			return nil
		}
	}
}

// readAll reads size bytes in requests of n with depth in flight.
func (c *nbdClient) readAll(size int64, n uint32, depth int) error {
	sent, got := int64(0), int64(0)
	for got < size {
		for sent < size && sent-got < int64(depth)*int64(n) {
			c.request(sent, uint32(min(int64(n), size-sent)))
			sent += int64(n)
		}
		if err := c.w.Flush(); err != nil {
			return err
		}
		if err := c.reply(); err != nil {
			return err
		}
		got += int64(n)
	}
	return nil
}

// readAll2 is one read, waited for.
func (c *nbdClient) readAll2(off int64, n uint32) error {
	c.request(off, n)
	if err := c.w.Flush(); err != nil {
		return err
	}
	return c.reply()
}

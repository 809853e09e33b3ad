// Command diskcheck prints a digest of disk contents, for bench/compare.sh
// to check every output against its input: of a raw image, or of every
// device of a VMA archive, which it checks on the way.
//
//	diskcheck raw [-size N] FILE|-   # one line: "disk DIGEST SIZE FILE"
//	diskcheck vma FILE|-             # per device: "disk DIGEST SIZE NAME";
//	                                 # per config: "config SHA256 SIZE NAME"
//
// The digest is the SHA-256 of the disk's size (8 bytes, big-endian)
// followed by, for each 1 MiB of the disk in order (the last piece may be
// shorter), the SHA-256 of those bytes, or 32 zero bytes where they are all
// zero: holes of a raw file and clusters a VMA archive does not store are
// never hashed, and the pieces are hashed in parallel. -size zero-extends
// a raw image to N bytes (K, M, G, T suffixes).
//
// The VMA reader is independent of vmaconv's format/vma: written from the
// format facts (shared/docs/vma-format-facts.md), so that a bug shared by
// vmaconv's writer and reader cannot pass. It reads the archive as a
// stream, as Proxmox's vma does, and fails, naming the byte offset, on
// anything Proxmox's reader refuses (magic, version, MD5 of the header
// and of every extent header, UUIDs, blob pointers, unknown devices,
// block counts, duplicate clusters, blocks past a device's end, trailing
// bytes) and on what it lets pass but restores refuse or Proxmox's writer
// never writes: a missing cluster, more than 58 clusters in an extent, a
// used blockinfo slot after an empty one, a non-zero reserved byte, a
// stored block's bytes past the device's end not zero.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	chunkSize   = 1 << 20 // the digest's piece
	blockSize   = 4096
	clusterSize = 65536
	headerSize  = 12288 // the fixed part of the VMA header
	extentHead  = 512
	slots       = 59
	maxOpen     = 1024 // chunks of a VMA device filled at once: 1 GiB
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "diskcheck:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: diskcheck raw [-size N] FILE|- | diskcheck vma FILE|-")
	}
	fs := flag.NewFlagSet("diskcheck "+args[0], flag.ContinueOnError)
	sizeFlag := fs.String("size", "", "zero-extend the raw image to this size")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("one FILE or - expected")
	}
	name := fs.Arg(0)
	in := os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	h := newHasher()
	switch args[0] {
	case "raw":
		var pad int64 = -1
		if *sizeFlag != "" {
			n, err := parseSize(*sizeFlag)
			if err != nil {
				return err
			}
			pad = n
		}
		d, size, err := rawDigest(h, in, pad)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(out, "disk %x %d %s\n", d, size, name)
	case "vma":
		a, err := readVMA(h, bufio.NewReaderSize(in, 4<<20))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, c := range a.configs {
			fmt.Fprintf(out, "config %x %d %s\n", sha256.Sum256(c.data), len(c.data), c.name)
		}
		for _, d := range a.devs {
			if d != nil {
				fmt.Fprintf(out, "disk %x %d %s\n", d.digest(), d.size, d.name)
			}
		}
	default:
		return fmt.Errorf("unknown mode %q: raw or vma", args[0])
	}
	return nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	if i := strings.IndexAny(s, "KMGT"); i == len(s)-1 && i > 0 {
		mult = int64(1) << (10 * (strings.IndexByte("KMGT", s[i]) + 1))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// hasher hashes 1 MiB pieces on every core. A piece's sum goes to *dst.
type hasher struct {
	jobs chan job
	wg   sync.WaitGroup
	once sync.Once
	free chan []byte
}

type job struct {
	buf []byte // nil: zeros
	n   int
	dst *[32]byte
}

var zeros = make([]byte, chunkSize)

func newHasher() *hasher {
	n := runtime.NumCPU()
	h := &hasher{jobs: make(chan job, 2*n), free: make(chan []byte, maxOpen+4*n)}
	for range n {
		h.wg.Go(func() {
			for j := range h.jobs {
				if j.buf != nil && !bytes.Equal(j.buf[:j.n], zeros[:j.n]) {
					*j.dst = sha256.Sum256(j.buf[:j.n])
				}
				if j.buf != nil {
					h.put(j.buf)
				}
			}
		})
	}
	return h
}

func (h *hasher) get() []byte {
	select {
	case b := <-h.free:
		return b
	default:
		return make([]byte, chunkSize)
	}
}

func (h *hasher) put(b []byte) {
	select {
	case h.free <- b:
	default:
	}
}

// wait waits for every piece handed over; the hasher takes no more.
func (h *hasher) wait() {
	h.once.Do(func() { close(h.jobs) })
	h.wg.Wait()
}

// digest is the disk digest of size bytes with these piece sums.
func digest(size int64, sums []*[32]byte) [32]byte {
	d := sha256.New()
	d.Write(binary.BigEndian.AppendUint64(nil, uint64(size)))
	for _, s := range sums {
		d.Write(s[:])
	}
	return [32]byte(d.Sum(nil))
}

// rawDigest digests f: a regular file by its data ranges (holes are not
// read), anything else as a stream. pad >= 0 zero-extends a regular file
// to pad bytes.
func rawDigest(h *hasher, f *os.File, pad int64) ([32]byte, int64, error) {
	defer h.wait()
	fi, err := f.Stat()
	if err != nil {
		return [32]byte{}, 0, err
	}
	var sums []*[32]byte
	if !fi.Mode().IsRegular() {
		if pad >= 0 {
			return [32]byte{}, 0, errors.New("-size needs a regular file")
		}
		var size int64
		for {
			buf := h.get()
			n, err := io.ReadFull(f, buf)
			if n > 0 {
				sums = append(sums, new([32]byte))
				size += int64(n)
				h.jobs <- job{buf, n, sums[len(sums)-1]}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return [32]byte{}, 0, err
			}
		}
		h.wait()
		return digest(size, sums), size, nil
	}
	size, total := fi.Size(), fi.Size()
	if pad >= 0 {
		if pad < size {
			return [32]byte{}, 0, fmt.Errorf("%d bytes, more than -size %d", size, pad)
		}
		total = pad
	}
	next := int64(-1) // where data starts at or after off; -1: not asked yet
	for off := int64(0); off < total; off += chunkSize {
		sums = append(sums, new([32]byte))
		n := min(chunkSize, total-off)
		avail := max(0, min(n, size-off))
		// A piece wholly in a hole or past the end is zeros: SEEK_DATA
		// says where the next data starts (ENXIO: nowhere after off),
		// asked again only once off has passed it.
		if next < off {
			switch d, err := f.Seek(off, seekData); {
			case err == nil:
				next = d
			case errors.Is(err, syscall.ENXIO):
				next = total
			default:
				next = off // no hole map: read everything
			}
		}
		if avail == 0 || next >= off+avail {
			continue
		}
		buf := h.get()
		if _, err := f.ReadAt(buf[:avail], off); err != nil {
			return [32]byte{}, 0, err
		}
		clear(buf[avail:n])
		h.jobs <- job{buf, int(n), sums[len(sums)-1]}
	}
	h.wait()
	return digest(total, sums), total, nil
}

// seekData is lseek's SEEK_DATA.
const seekData = 3

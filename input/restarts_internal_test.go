package input

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/compress"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestStreamAt: reads going forward are served from the stream as it is
// written, in bounded memory; a read behind the last fails; the writer
// waits for the reader, and writes after the reader stops are dropped.
func TestStreamAt(t *testing.T) {
	data := testutil.GenDisk(3, 40<<20, "data")
	s := newStreamAt()
	var wg sync.WaitGroup
	wg.Go(func() {
		for p := data; len(p) > 0; {
			n := min(len(p), 1+rand.IntN(3<<20))
			if k, err := s.Write(p[:n]); err != nil || k != n {
				t.Errorf("write: %d, %v", k, err)
				return
			}
			s.mu.Lock()
			held := len(s.buf)
			s.mu.Unlock()
			if held > 2*streamWindow {
				t.Errorf("%d bytes held", held)
			}
			p = p[n:]
		}
		s.end(nil)
	})
	buf := make([]byte, 1<<20)
	reads := make(chan error, 1)
	go func() {
		for off := int64(0); off < 30<<20; off += 3 << 20 {
			if n, err := s.ReadAt(buf, off); err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
				reads <- fmt.Errorf("read at %d: %d, %v", off, n, err)
				return
			}
		}
		if _, err := s.ReadAt(buf[:10], 1<<20); !errors.Is(err, errBackwards) {
			reads <- fmt.Errorf("a read behind: %v", err)
			return
		}
		n, err := s.ReadAt(buf, int64(len(data))-100)
		if n != 100 || err != io.EOF || !bytes.Equal(buf[:n], data[len(data)-100:]) {
			reads <- fmt.Errorf("the last bytes: %d, %v", n, err)
			return
		}
		reads <- nil
	}()
	select {
	case err := <-reads:
		if err != nil {
			s.stop()
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		s.stop() // lets the writer go
		t.Fatal("the reads and the writes wait for each other")
	}
	wg.Wait()

	s = newStreamAt()
	s.stop()
	if n, err := s.Write(data); n != len(data) || err != nil {
		t.Fatalf("a write after stop: %d, %v", n, err)
	}
	s = newStreamAt()
	s.end(errors.New("broken"))
	if _, err := s.ReadAt(buf, 0); err == nil || err.Error() != "broken" {
		t.Fatalf("a read of a failed stream: %v", err)
	}
}

// backwardsImage is a format whose OpenAt reads its first bytes twice, as
// an archive reader that went back would.
type backwardsImage struct{}

func (backwardsImage) Close() error             { return nil }
func (backwardsImage) Disks() []format.Disk     { return nil }
func (backwardsImage) Configs() []format.Config { return nil }

// TestBuildRestartsBackwards: a format that does not open front to back
// is opened again through the restart points, and its reads are kept.
func TestBuildRestartsBackwards(t *testing.T) {
	zstd := testutil.RequireTool(t, "zstd")
	data := testutil.GenDisk(4, 5<<20, "text")
	path := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	z, err := exec.Command(zstd, "-q", "-c", "-T2", "-B1MiB", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	fm := format.Format{Name: "backwards", Multi: true, OpenAt: func(r io.ReaderAt, size int64, o format.OpenOptions) (format.Image, error) {
		for _, off := range []int64{4 << 20, 100, 3 << 20} {
			b := make([]byte, 4096)
			if _, err := r.ReadAt(b, off); err != nil {
				return nil, err
			}
			if !bytes.Equal(b, data[off:off+4096]) {
				return nil, errors.New("wrong bytes")
			}
		}
		return backwardsImage{}, nil
	}}
	op := &opener{ctx: context.Background()}
	x, err := op.buildRestarts(context.Background(), fm, bytes.NewReader(z), int64(len(z)), "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if len(x.Preread) != 3 || x.Preread[1].Off != 100 || len(x.Restarts.Points) < 2 {
		t.Fatalf("prereads %+v, %d points", x.Preread, len(x.Restarts.Points))
	}
}

// TestStreamAtLargeWrite: a write larger than the room left, while the
// reader waits at the first byte kept for more than is held, goes in as
// far as it fits: neither waits for the other.
func TestStreamAtLargeWrite(t *testing.T) {
	data := testutil.GenDisk(5, 9<<20, "data")
	s := newStreamAt()
	if _, err := s.Write(data[:512<<10]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(data[512<<10 : 512<<10+streamWindow-400<<10]) // more than the room left
		done <- err
	}()
	got := make(chan error, 1)
	buf := make([]byte, 1<<20)
	go func() {
		_, err := s.ReadAt(buf, 0)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil || !bytes.Equal(buf, data[:1<<20]) {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the read and the write wait for each other")
	}
	s.stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReadIndexBlobBound: a blob whose length is out of proportion to the
// bytes it holds is refused before anything is allocated for it.
func TestReadIndexBlobBound(t *testing.T) {
	x := &Index{Size: 1000, Head: strings.Repeat("a", 64), Tail: strings.Repeat("b", 64),
		Restarts: &compress.Restarts{Size: 100, Points: []compress.Restart{{C: 10, U: 0, Last: 10, End: 20, WD: 0x58}}},
		dicts:    []blobRef{{off: 0, length: 1 << 30, raw: 0}}, area: 1 << 30}
	head, err := x.head()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ReadIndex(sparseAt(head), int64(len(head))+1<<30)
	if err == nil || !strings.Contains(err.Error(), "a blob of 1073741824 bytes") {
		t.Fatalf("a blob of 1 GiB holding nothing: %v", err)
	}
}

// sparseAt reads as b followed by zeros.
type sparseAt []byte

func (s sparseAt) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(s)) {
		copy(p, s[off:])
	}
	return len(p), nil
}

package compress

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedReader counts the reads of the file and holds them until open is
// closed.
type gatedReader struct {
	r     io.ReaderAt
	open  chan struct{}
	reads atomic.Int32
}

func (g *gatedReader) ReadAt(p []byte, off int64) (int, error) {
	g.reads.Add(1)
	<-g.open
	return g.r.ReadAt(p, off)
}

// TestSeekableSharedDecode: ReadAt calls that need a frame being decoded
// wait for that decode and copy their own part of it, and the decode's
// budget is given back once the last of them has copied.
func TestSeekableSharedDecode(t *testing.T) {
	text := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB, one frame
	z := seekableFile(t, text)
	g := &gatedReader{r: bytes.NewReader(z), open: make(chan struct{})}
	close(g.open) // the table is read freely
	s, err := OpenSeekable(g, int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g.open = make(chan struct{})
	g.reads.Store(0)
	const callers = 8
	var wg sync.WaitGroup
	got := make([][]byte, callers)
	errs := make([]error, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[c] = make([]byte, 1000)
			_, errs[c] = s.ReadAt(got[c], int64(c)*30000+7)
		}()
	}
	// Every caller is the decoder or waits for it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		users := 0
		if c := s.calls[0]; c != nil {
			users = c.users
		}
		s.mu.Unlock()
		if users == callers {
			break
		}
		if time.Now().After(deadline) {
			close(g.open)
			t.Fatalf("%d of %d callers share the frame's decode", users, callers)
		}
	}
	close(g.open)
	wg.Wait()
	for c := range callers {
		if off := c*30000 + 7; errs[c] != nil || !bytes.Equal(got[c], text[off:off+1000]) {
			t.Errorf("caller %d: %v, or bytes differ", c, errs[c])
		}
	}
	if n := g.reads.Load(); n != 1 {
		t.Errorf("the frame was read %d times, want once", n)
	}
	if !s.budget.TryAcquire(seekDecodeBytes) {
		t.Error("the decode's budget was not given back")
	}
}

package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/remote"
	"github.com/vmaconv/vmaconv/remote/remotetest"
)

// fast retries for tests: the bound is what is checked, not the wait.
var fast = remote.Retry{Attempts: 4, Base: time.Millisecond, Max: 5 * time.Millisecond}

func content(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// stores returns the object's URL on an S3 server and on an HTTP server,
// with the options to reach each.
type fixture struct {
	name string
	url  string
	opts remote.Options
	put  func(data []byte)
	cnt  *remotetest.Counts
	inj  func(func(*http.Request) *remotetest.Fault)
}

func stores(t *testing.T, data []byte) []fixture {
	s3 := remotetest.NewS3(t)
	s3.Bucket(t, "bkt")
	s3.Put(t, "bkt", "dir/obj.vma", data)
	h := remotetest.NewHTTP(t)
	h.Put("/dir/obj.vma", data)
	return []fixture{
		{"s3", "s3://bkt/dir/obj.vma", remote.Options{Env: s3.Getenv, Retry: fast, ChunkSize: 64 << 10},
			func(d []byte) { s3.Put(t, "bkt", "dir/obj.vma", d) }, &s3.Counts, s3.Inject},
		{"http", h.URL + "/dir/obj.vma", remote.Options{Retry: fast, ChunkSize: 64 << 10},
			func(d []byte) { h.Put("/dir/obj.vma", d) }, &h.Counts, h.Inject},
	}
}

// TestReadAt: reads at random and front to back give the object's bytes,
// at every size class (the head kept, small blocks, pieces in parallel),
// with EOF past the end.
func TestReadAt(t *testing.T) {
	data := content(300<<10+17, 1)
	for _, f := range stores(t, data) {
		t.Run(f.name, func(t *testing.T) {
			ob, err := remote.Open(context.Background(), f.url, f.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ob.Close()
			if ob.Size() != int64(len(data)) || !bytes.Equal(ob.Head(), data[:4096]) {
				t.Fatalf("size %d, head %d bytes", ob.Size(), len(ob.Head()))
			}
			for _, c := range []struct{ off, n int }{{0, 100}, {4000, 200}, {20000, 5000}, {16383, 2}, {1000, 200000}, {len(data) - 10, 10}, {len(data) - 10, 100}} {
				p := make([]byte, c.n)
				n, err := ob.ReadAt(p, int64(c.off))
				want := data[c.off:min(c.off+c.n, len(data))]
				if n != len(want) || !bytes.Equal(p[:n], want) {
					t.Fatalf("ReadAt(%d, %d) = %d, %v: wrong bytes", c.off, c.n, n, err)
				}
				if (n < c.n) != (err == io.EOF) {
					t.Fatalf("ReadAt(%d, %d) = %d, %v", c.off, c.n, n, err)
				}
			}
			r := ob.NewReader(0)
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Reader: %d bytes, %v", len(got), err)
			}
			// Seek back and forth.
			if _, err := r.Seek(100000, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 1000)
			if _, err := io.ReadFull(r, p); err != nil || !bytes.Equal(p, data[100000:101000]) {
				t.Fatalf("after Seek: %v", err)
			}
			if pos, _ := r.Seek(0, io.SeekCurrent); pos != 101000 {
				t.Fatalf("position %d", pos)
			}
		})
	}
}

// TestFaults: resets, bodies cut short, 503 SlowDown and slow answers are
// retried and the bytes come out right; past the bound, the read fails
// with one line.
func TestFaults(t *testing.T) {
	data := content(256<<10, 2)
	for _, f := range stores(t, data) {
		t.Run(f.name, func(t *testing.T) {
			var n atomic.Int64
			faults := []*remotetest.Fault{{Reset: true}, {Status: 503, Code: "SlowDown"}, {Cut: 1000}, {Delay: 20 * time.Millisecond}, {Status: 500, Code: "InternalError"}, {Status: 429, Code: "TooManyRequests"}}
			// Every other request fails, each fault once.
			f.inj(func(r *http.Request) *remotetest.Fault {
				k := n.Add(1)
				if k%2 == 1 && k/2 < int64(len(faults)) {
					return faults[k/2]
				}
				return nil
			})
			ob, err := remote.Open(context.Background(), f.url, f.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ob.Close()
			got, err := io.ReadAll(ob.NewReader(0))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("through faults: %d bytes, %v", len(got), err)
			}
			p := make([]byte, 70000)
			if _, err := ob.ReadAt(p, 123); err != nil || !bytes.Equal(p, data[123:123+70000]) {
				t.Fatalf("ReadAt through faults: %v", err)
			}
			if ob.Stats().Retries.Load() == 0 {
				t.Fatal("no retries counted")
			}
			// Every GET fails: the bound ends it.
			f.inj(func(r *http.Request) *remotetest.Fault { return &remotetest.Fault{Status: 503, Code: "SlowDown"} })
			before := f.cnt.Requests.Load()
			_, err = ob.ReadAt(p[:1000], 5000)
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "503") {
				t.Fatalf("past the bound: %v", err)
			}
			if k := f.cnt.Requests.Load() - before; k != int64(fast.Attempts) {
				t.Fatalf("%d requests, want %d attempts", k, fast.Attempts)
			}
			f.inj(nil)
		})
	}
}

// TestChanged: an object replaced after Open fails the next read with
// ErrChanged, one line, even for the same size.
func TestChanged(t *testing.T) {
	data := content(200<<10, 3)
	for _, f := range stores(t, data) {
		t.Run(f.name, func(t *testing.T) {
			ob, err := remote.Open(context.Background(), f.url, f.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer ob.Close()
			p := make([]byte, 50000)
			if _, err := ob.ReadAt(p, 60000); err != nil {
				t.Fatal(err)
			}
			f.put(content(len(data), 4))
			before := f.cnt.Requests.Load()
			_, err = ob.ReadAt(p, 60000)
			if !errors.Is(err, remote.ErrChanged) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("read after the object changed: %v", err)
			}
			if k := f.cnt.Requests.Load() - before; k != 1 {
				t.Fatalf("a change was retried: %d requests", k)
			}
			// Read front to back: the same.
			if _, err := io.ReadAll(ob.NewReader(0)); !errors.Is(err, remote.ErrChanged) {
				t.Fatalf("stream after the object changed: %v", err)
			}
		})
	}
}

// TestNotFound: a missing object is one line naming it.
func TestNotFound(t *testing.T) {
	for _, f := range stores(t, []byte("x")) {
		_, err := remote.Open(context.Background(), f.url+"nope", f.opts)
		if err == nil || !strings.Contains(err.Error(), "obj.vmanope") {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
}

// TestNoSecrets: neither a URL's password nor its query (a presigned
// URL's signature) nor the S3 secret shows in names or errors.
func TestNoSecrets(t *testing.T) {
	h := remotetest.NewHTTP(t)
	u := strings.Replace(h.URL, "http://", "http://user:hunter2@", 1) + "/x.vma?X-Amz-Signature=deadbeefsecret"
	_, err := remote.Open(context.Background(), u, remote.Options{Retry: fast})
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "deadbeef") {
		t.Fatalf("error %v", err)
	}
	s3 := remotetest.NewS3(t)
	s3.Inject(func(*http.Request) *remotetest.Fault { return &remotetest.Fault{Status: 403, Code: "AccessDenied"} })
	_, err = remote.Open(context.Background(), "s3://bkt/k", remote.Options{Env: s3.Getenv, Retry: fast})
	if err == nil || strings.Contains(err.Error(), remotetest.SecretKey) || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID from the environment") {
		t.Fatalf("error %v", err)
	}
}

// TestUpload: an upload of several parts is exact when read back, and
// invisible until Commit; Abort leaves no object and no upload.
func TestUpload(t *testing.T) {
	s3 := remotetest.NewS3(t)
	s3.Bucket(t, "bkt")
	o := remote.Options{Env: s3.Getenv, Retry: fast, PartSize: 64 << 10}
	data := content(5*64<<10+12345, 5)
	u, err := remote.Create(context.Background(), "s3://bkt/out.vma", false, o)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		k := min(len(p), 100000)
		if _, err := u.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if _, ok := s3.Get(t, "bkt", "out.vma"); ok {
		t.Fatal("visible before Commit")
	}
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	got, ok := s3.Get(t, "bkt", "out.vma")
	if !ok || !bytes.Equal(got, data) {
		t.Fatalf("round trip: %d bytes of %d, equal %v", len(got), len(data), bytes.Equal(got, data))
	}
	// Again without --overwrite: refused.
	if _, err := remote.Create(context.Background(), "s3://bkt/out.vma", false, o); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Fatalf("existing object: %v", err)
	}
	// Aborted after parts were sent.
	u, err = remote.Create(context.Background(), "s3://bkt/aborted.vma", false, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	u.Abort()
	if _, ok := s3.Get(t, "bkt", "aborted.vma"); ok {
		t.Fatal("an aborted upload is visible")
	}
	if n := remotetest.Uploads(t, s3, "bkt"); n != 0 {
		t.Fatalf("%d uploads left", n)
	}
	// Small: one PUT.
	u, _ = remote.Create(context.Background(), "s3://bkt/small", false, o)
	u.Write([]byte("hello"))
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s3.Get(t, "bkt", "small"); string(got) != "hello" {
		t.Fatalf("small: %q", got)
	}
}

// TestNoRanges: a server that ignores Range serves a stream (one GET,
// read front to back) and refuses reads at random; without ETags, an
// object is pinned by its modification time.
func TestNoRanges(t *testing.T) {
	data := content(100<<10, 6)
	h := remotetest.NewHTTP(t)
	h.Put("/x", data)
	h.NoRanges.Store(true)
	ob, err := remote.Open(context.Background(), h.URL+"/x", remote.Options{Retry: fast})
	if err != nil {
		t.Fatal(err)
	}
	if ob.RandomAccess() {
		t.Fatal("random access without ranges")
	}
	if _, err := ob.ReadAt(make([]byte, 10), 5000); !errors.Is(err, remote.ErrNoRanges) {
		t.Fatalf("ReadAt: %v", err)
	}
	got, err := io.ReadAll(ob.NewReader(0))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stream: %d bytes, %v", len(got), err)
	}
	h.NoRanges.Store(false)
	h.NoETag.Store(true)
	ob, err = remote.Open(context.Background(), h.URL+"/x", remote.Options{Retry: fast})
	if err != nil || ob.ETag() != "" {
		t.Fatalf("%v, ETag %q", err, ob.ETag())
	}
	h.Put("/x", content(len(data), 7))
	if _, err := ob.ReadAt(make([]byte, 10), 50000); !errors.Is(err, remote.ErrChanged) {
		t.Fatalf("changed without an ETag: %v", err)
	}
}

// TestList: the keys under a prefix, in order, over pages.
func TestList(t *testing.T) {
	s3 := remotetest.NewS3(t)
	s3.Bucket(t, "bkt")
	for _, k := range []string{"p/a.vma", "p/b/c.vma.zst", "p/d.txt", "q/e.vma"} {
		s3.Put(t, "bkt", k, []byte("x"))
	}
	urls, err := remote.List(context.Background(), "s3://bkt/p/", remote.Options{Env: s3.Getenv, Retry: fast},
		func(key string) bool { return !strings.HasSuffix(key, ".txt") })
	if err != nil || strings.Join(urls, " ") != "s3://bkt/p/a.vma s3://bkt/p/b/c.vma.zst" {
		t.Fatalf("%q, %v", urls, err)
	}
}

// Package remotetest runs object stores on loopback for tests: an S3
// server (gofakes3, in memory) and an HTTP server with range requests,
// both behind a handler that counts what they send and receive and injects
// faults (connection resets, 503 SlowDown answers, bodies cut short, slow
// answers).
//
// The S3 server is gofakes3 v1.2.0 with two of its gaps filled in front of
// it: the parts of a multipart upload that minio-go sends over plain HTTP
// with a streaming signature (Content-Encoding aws-chunked, chunk
// signatures between the data) are decoded before gofakes3 stores them
// (it stores them as they come, signatures and all, and PUT of a whole
// object only is decoded); and If-Match on GET and HEAD is answered (412)
// from the object's ETag, which gofakes3 ignores.
package remotetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Fault is what a request meets instead of a plain answer.
type Fault struct {
	// Reset closes the connection before any answer.
	Reset bool
	// Status answers this status (503, 429, 500) with Code (SlowDown) as
	// S3's XML error.
	Status int
	Code   string
	// Cut sends this many bytes of the body, then closes the connection.
	Cut int64
	// Delay waits this long before answering.
	Delay time.Duration
}

// Counts are what a server has seen.
type Counts struct {
	Requests atomic.Int64
	Gets     atomic.Int64
	Sent     atomic.Int64 // body bytes sent in answers to GETs
	Received atomic.Int64 // body bytes received (decoded)
	Faults   atomic.Int64 // faults injected
	// MaxGets is the most GETs that were answered at once.
	MaxGets atomic.Int64
	gets    atomic.Int64
}

// front is the handler in front of a server: counts and faults.
type front struct {
	next   http.Handler
	counts *Counts
	mu     sync.Mutex
	fault  func(r *http.Request) *Fault
}

// Inject makes f choose a fault for every request (nil: none); f may be
// nil to stop.
func (f *front) Inject(fn func(r *http.Request) *Fault) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.counts.Requests.Add(1)
	if r.Method == http.MethodGet {
		f.counts.Gets.Add(1)
		n := f.counts.gets.Add(1)
		defer f.counts.gets.Add(-1)
		for m := f.counts.MaxGets.Load(); n > m && !f.counts.MaxGets.CompareAndSwap(m, n); m = f.counts.MaxGets.Load() {
		}
	}
	f.mu.Lock()
	fn := f.fault
	f.mu.Unlock()
	var ft *Fault
	if fn != nil {
		ft = fn(r)
	}
	if ft != nil {
		f.counts.Faults.Add(1)
		if ft.Delay > 0 {
			select {
			case <-time.After(ft.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if ft.Reset {
			reset(w)
			return
		}
		if ft.Status != 0 {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(ft.Status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message></Error>`, ft.Code)
			return
		}
	}
	cw := &countingWriter{ResponseWriter: w, n: &f.counts.Sent, get: r.Method == http.MethodGet, cut: -1}
	if ft != nil && ft.Cut > 0 {
		cw.cut = ft.Cut
	}
	f.next.ServeHTTP(cw, r)
	if cw.cut == 0 {
		reset(w)
	}
}

// reset closes the connection under w without an answer.
func reset(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST, not FIN
			}
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// countingWriter counts the body bytes of GET answers, and cuts the body
// after cut bytes (cut < 0: never).
type countingWriter struct {
	http.ResponseWriter
	n   *atomic.Int64
	get bool
	cut int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.cut == 0 {
		return 0, io.ErrClosedPipe
	}
	if c.cut > 0 && int64(len(p)) > c.cut {
		p = p[:c.cut]
	}
	n, err := c.ResponseWriter.Write(p)
	if c.get {
		c.n.Add(int64(n))
	}
	if c.cut > 0 {
		c.cut -= int64(n)
		if c.cut == 0 {
			if f, ok := c.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
			return n, io.ErrClosedPipe
		}
	}
	return n, err
}

// ReadFrom writes the part of an object http.ServeContent sends (an
// io.LimitedReader of a memContent) with one Write of its bytes, as a
// server that sends files with sendfile copies them once: through the
// plain io.Copy the server would copy every byte twice, 32 KiB a write,
// which on loopback takes CPU from the client a benchmark measures (or
// from the server's own core). Any other reader is copied through Write.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if m, ok := lr.R.(*memContent); ok {
			pos, _ := m.Seek(0, io.SeekCurrent)
			end := min(pos+max(lr.N, 0), int64(len(m.data)))
			n, err := c.Write(m.data[pos:end])
			m.Seek(int64(n), io.SeekCurrent)
			lr.N -= int64(n)
			return int64(n), err
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{c}, r, *bp)
}

// copyBufs are ReadFrom's buffers for other readers (gofakes3's bodies):
// larger than io.Copy's 32 KiB, so that a ranged GET's answer is one or a
// few writes rather than one for every 32 KiB.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// memContent is a file's bytes as http.ServeContent reads them, which
// countingWriter.ReadFrom writes at once.
type memContent struct {
	*bytes.Reader
	data []byte
}

func (c *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return c.ResponseWriter.(http.Hijacker).Hijack()
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// S3 is an S3 server on loopback.
type S3 struct {
	front
	// URL is the endpoint: http://127.0.0.1:PORT.
	URL     string
	Counts  Counts
	Backend gofakes3.Backend
	srv     *httptest.Server
}

// Credentials the server is reached with (gofakes3 checks none).
const (
	AccessKey = "AKIAVMACONVTEST00001"
	SecretKey = "vmaconv/test/secret/key/do-not-print-0001"
	Region    = "us-east-1"
)

// NewS3 starts an S3 server for the test, stopped at its end.
func NewS3(t testing.TB) *S3 {
	s := StartS3()
	t.Cleanup(s.Close)
	return s
}

// StartS3 starts an S3 server; Close stops it.
func StartS3() *S3 {
	s := &S3{Backend: s3mem.New()}
	fake := gofakes3.New(s.Backend, gofakes3.WithTimeSkewLimit(0), gofakes3.WithLogger(gofakes3.DiscardLog()))
	s.front = front{next: s.fixes(fake.Server()), counts: &s.Counts}
	s.srv = httptest.NewServer(&s.front)
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *S3) Close() { s.srv.Close() }

// Env returns the environment that points vmaconv at the server, as
// KEY=VALUE lines' keys and values.
func (s *S3) Env() map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL":          s.URL,
		"AWS_ACCESS_KEY_ID":         AccessKey,
		"AWS_SECRET_ACCESS_KEY":     SecretKey,
		"AWS_REGION":                Region,
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

// Getenv reads Env (for remote.Options.Env).
func (s *S3) Getenv(key string) string { return s.Env()[key] }

// Fataler is what the helpers need of a test: testing.TB, or a
// testscript's TestScript.
type Fataler interface {
	Fatalf(format string, args ...any)
}

// Bucket creates a bucket.
func (s *S3) Bucket(t Fataler, name string) {
	if err := s.Backend.CreateBucket(name); err != nil {
		t.Fatalf("%v", err)
	}
}

// Put stores data under bucket/key, directly in the backend.
func (s *S3) Put(t Fataler, bucket, key string, data []byte) {
	meta := map[string]string{"Last-Modified": time.Now().UTC().Format(http.TimeFormat)}
	if _, err := s.Backend.PutObject(bucket, key, meta, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatalf("%v", err)
	}
}

// Get returns the object's content, or false if there is none.
func (s *S3) Get(t Fataler, bucket, key string) ([]byte, bool) {
	obj, err := s.Backend.GetObject(bucket, key, nil)
	if gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchKey) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer obj.Contents.Close()
	b, err := io.ReadAll(obj.Contents)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return b, true
}

// fixes fills gofakes3's gaps (see the package doc) in front of next.
func (s *S3) fixes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
			body, err := decodeChunked(r.Body)
			r.Body.Close()
			want, perr := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
			if err != nil || perr != nil || int64(len(body)) != want {
				http.Error(w, fmt.Sprintf("aws-chunked body: %v (decoded %d bytes, header says %d)", err, len(body), want), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Length", strconv.Itoa(len(body)))
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			r.Header.Del("X-Amz-Decoded-Content-Length")
			r.Header.Del("Content-Encoding")
			if sum := r.Header.Get("Content-Md5"); sum == "" {
				// Parts always carry one from vmaconv; check it is
				// what arrived.
				r.Header.Set("Content-Md5", md5b64(body))
			}
		}
		if r.ContentLength > 0 && (r.Method == http.MethodPut || r.Method == http.MethodPost) && r.URL.Query().Get("partNumber") != "" {
			s.Counts.Received.Add(r.ContentLength)
		} else if r.Method == http.MethodPut && r.ContentLength > 0 {
			s.Counts.Received.Add(r.ContentLength)
		}
		if m := r.Header.Get("If-Match"); m != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if obj, err := s.Backend.HeadObject(bucket, key); err == nil {
				if etag := `"` + hex.EncodeToString(obj.Hash) + `"`; strings.Trim(m, `"`) != strings.Trim(etag, `"`) && m != "*" {
					w.Header().Set("Content-Type", "application/xml")
					w.WriteHeader(http.StatusPreconditionFailed)
					fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func md5b64(b []byte) string {
	sum := md5.Sum(b)
	return base64Std(sum[:])
}

// decodeChunked decodes an aws-chunked body: chunks of
// "HEXSIZE;chunk-signature=…\r\nDATA\r\n", ending with a chunk of size 0
// (and, unsigned, trailer lines).
func decodeChunked(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(r)
	var out []byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("chunk header: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		hexSize, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(hexSize, 16, 64)
		if err != nil || n < 0 || n > 1<<30 {
			return nil, fmt.Errorf("chunk size %q", hexSize)
		}
		if n == 0 {
			return out, nil // trailers, if any, are not kept
		}
		start := len(out)
		out = append(out, make([]byte, n)...)
		if _, err := io.ReadFull(br, out[start:]); err != nil {
			return nil, fmt.Errorf("chunk data: %w", err)
		}
		var crlf [2]byte
		if _, err := io.ReadFull(br, crlf[:]); err != nil || crlf != [2]byte{'\r', '\n'} {
			return nil, fmt.Errorf("chunk end %q: %v", crlf, err)
		}
	}
}

// HTTP is an HTTP server on loopback that serves files with range
// requests, ETags and Last-Modified (http.ServeContent).
type HTTP struct {
	front
	// URL is http://127.0.0.1:PORT.
	URL    string
	Counts Counts
	mu     sync.Mutex
	files  map[string]httpFile
	srv    *httptest.Server
	// NoRanges makes the server ignore Range (answers 200, whole).
	NoRanges atomic.Bool
	// NoETag makes the server send no ETag.
	NoETag atomic.Bool
}

type httpFile struct {
	data    []byte
	modtime time.Time
	etag    string
}

// NewHTTP starts an HTTP server for the test, stopped at its end.
func NewHTTP(t testing.TB) *HTTP {
	h := StartHTTP()
	t.Cleanup(h.Close)
	return h
}

// StartHTTP starts an HTTP server; Close stops it.
func StartHTTP() *HTTP {
	h := &HTTP{files: map[string]httpFile{}}
	h.front = front{next: http.HandlerFunc(h.serve), counts: &h.Counts}
	h.srv = httptest.NewServer(&h.front)
	h.URL = h.srv.URL
	return h
}

// Close stops the server.
func (h *HTTP) Close() { h.srv.Close() }

// Put serves data at path (starting with /), with a new ETag and time.
func (h *HTTP) Put(path string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sum := md5.Sum(data)
	mod := time.Now().Truncate(time.Second)
	if old, ok := h.files[path]; ok && !mod.After(old.modtime) {
		mod = old.modtime.Add(time.Second)
	}
	h.files[path] = httpFile{data: data, modtime: mod, etag: `"` + hex.EncodeToString(sum[:]) + `"`}
}

func (h *HTTP) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	f, ok := h.files[r.URL.Path]
	h.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if h.NoRanges.Load() {
		r.Header.Del("Range")
		w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
		w.Write(f.data)
		return
	}
	if !h.NoETag.Load() {
		w.Header().Set("ETag", f.etag)
	}
	http.ServeContent(w, r, "", f.modtime, &memContent{bytes.NewReader(f.data), f.data})
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Uploads returns the number of multipart uploads under way in bucket.
func Uploads(t Fataler, s *S3, bucket string) int {
	c, err := minio.NewCore(strings.TrimPrefix(s.URL, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: Region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatalf("%v", err)
	}
	res, err := c.ListMultipartUploads(context.Background(), bucket, "", "", "", "", 1000)
	if minio.ToErrorResponse(err).Code == "NoSuchUpload" { // gofakes3, for a bucket without any
		return 0
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return len(res.Uploads)
}

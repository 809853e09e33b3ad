// Package remote reads and writes the objects backups are kept as, where
// they are kept: in S3-compatible object storage (s3://BUCKET/KEY) and on
// HTTP servers (https://HOST/PATH, http://…).
//
// An Object is opened once (Open) and pinned to the version seen then: its
// size and ETag (or, on an HTTP server without ETags, its modification
// time). Every later read asks for that version only (If-Match), and
// checks what comes back, so that an object replaced while it is read fails
// with ErrChanged rather than mixing two archives. Reads at random
// (ReadAt) are ranged GETs, split into parallel ones when large; a
// Reader reads front to back with parallel ranged GETs ahead of the reader,
// within a fixed memory bound. Connection resets, truncated bodies, 5xx
// answers and throttling (429, SlowDown) are retried with exponential
// backoff, a bounded number of times (Retry).
//
// S3 is reached through minio-go, configured the way AWS tools are: the
// endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (or the profile's
// endpoint_url; path-style requests for any endpoint but AWS's), the region
// from AWS_REGION or AWS_DEFAULT_REGION (or the profile's region), and the
// credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN, else the profile (AWS_PROFILE, default "default") in
// ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE), else a web identity or
// container role, or the instance's role. Credentials never appear in the
// package's errors or names: a URL's user information and query (a
// presigned URL's signature) are left out of Name.
//
// Upload writes an object as a stream, with a multipart upload in bounded
// memory: nothing is visible under the key until Commit completes it, and
// Abort (or a failed Commit) aborts it.
//
// Like every library package of vmaconv it never prints.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// ErrChanged matches (errors.Is) the error of a read of an object that was
// replaced or changed since it was opened.
var ErrChanged = errors.New("changed since it was opened")

// ErrNotFound matches the error of Open for an object that does not exist.
var ErrNotFound = errors.New("no such object")

// ErrNoRanges matches the error of ReadAt on an object whose server does
// not answer range requests: it can only be read front to back (Reader).
var ErrNoRanges = errors.New("the server does not answer range requests: it can only be read as a stream")

// Retry bounds the retries of a request that failed in a way that may pass:
// a connection reset or refused, a body cut short, a 5xx answer, or
// throttling (429, SlowDown). Attempt k (from 1) waits Base·2^(k-1), at most
// Max, with jitter, before it is made again; after Attempts attempts the
// last error is returned.
type Retry struct {
	Attempts  int
	Base, Max time.Duration
}

// DefaultRetry is the retry policy unless Options says otherwise: 7
// attempts over about 13 seconds.
var DefaultRetry = Retry{Attempts: 7, Base: 200 * time.Millisecond, Max: 5 * time.Second}

// Options configure Open and Create. The zero value is the defaults.
type Options struct {
	// Retry bounds the retries (default DefaultRetry).
	Retry Retry
	// Transport, if set, makes the HTTP requests (tests).
	Transport http.RoundTripper
	// Env, if set, is read instead of the process's environment (tests).
	Env func(key string) string
	// ChunkSize is the size of the ranged GETs a Reader makes, and the
	// piece a large ReadAt is split into (default 8 MiB).
	ChunkSize int64
	// ReadAhead is the most chunks a Reader fetches ahead of its reader
	// (default 4): its memory is ReadAhead·ChunkSize at most.
	ReadAhead int
	// PartSize is the largest part an Upload buffers (default
	// DefaultMaxPart, or VMACONV_S3_PART_SIZE bytes if set).
	PartSize int64
}

func (o Options) withDefaults() Options {
	if o.Retry.Attempts <= 0 {
		o.Retry = DefaultRetry
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 8 << 20
	}
	if o.ReadAhead <= 0 {
		o.ReadAhead = 4
	}
	if o.Env == nil {
		o.Env = getenv
	}
	if o.PartSize <= 0 {
		o.PartSize = DefaultMaxPart
		// VMACONV_S3_PART_SIZE (bytes) caps the parts: less memory, a
		// smaller largest object (10,000 parts).
		if n, err := strconv.ParseInt(o.Env("VMACONV_S3_PART_SIZE"), 10, 64); err == nil && n >= 64<<10 && n <= 5<<30 {
			o.PartSize = n
		}
	}
	return o
}

// version is what an object is pinned to.
type version struct {
	size     int64     // -1: not known (a server that sends no length)
	etag     string    // "" if the server sends none
	modified time.Time // zero if not known
	ranges   bool      // the server answers range requests
}

// store is where an object lives: an S3 bucket or an HTTP server.
type store interface {
	// stat returns the object's current version, and, if the store read
	// them on the way, its first bytes.
	stat(ctx context.Context) (version, []byte, error)
	// get returns the n bytes at off of version v (n < 0: to the end),
	// failing with ErrChanged if the object is no longer v.
	get(ctx context.Context, off, n int64, v version) (io.ReadCloser, error)
}

// Object is a remote object opened for reading, pinned to its version at
// Open. ReadAt may be called from several goroutines at once.
type Object struct {
	name  string
	st    store
	v     version
	o     Options
	ctx   context.Context
	stop  context.CancelFunc
	head  []byte // the first bytes, read at Open
	stats Stats

	mu     sync.Mutex
	blocks map[int64][]byte // small reads: blocks of smallBlock bytes
	order  []int64
}

// Stats count what an Object has asked of its server.
type Stats struct {
	Requests atomic.Int64 // GETs and HEADs made, retries included
	Bytes    atomic.Int64 // body bytes received
	Retries  atomic.Int64
}

// headSize is how much of an object Open keeps from its start (a format's
// magic and header).
const headSize = 4096

// smallBlock is the block a small ReadAt fetches (aligned), so that a
// parser's small reads next to each other cost one request; maxBlocks of
// them are kept.
const (
	smallBlock = 16 << 10
	maxBlocks  = 64
)

// Open opens the object at url (s3://, http://, https://) and pins it to
// its current version. The Object's reads stop when ctx is done or Close is
// called.
func Open(ctx context.Context, rawurl string, o Options) (*Object, error) {
	o = o.withDefaults()
	st, name, err := newStore(rawurl, o)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(ctx)
	ob := &Object{name: name, st: st, o: o, ctx: ctx, stop: stop, blocks: map[int64][]byte{}}
	var head []byte
	err = ob.retry(ctx, func() error {
		var err error
		ob.stats.Requests.Add(1)
		ob.v, head, err = st.stat(ctx)
		return err
	})
	if err != nil {
		stop()
		return nil, ob.wrap(err)
	}
	ob.head = head
	if ob.head == nil && ob.v.size != 0 && ob.v.ranges {
		n := int64(headSize)
		if ob.v.size >= 0 {
			n = min(n, ob.v.size)
		}
		b := make([]byte, n)
		if err := ob.fetch(b, 0); err != nil {
			stop()
			return nil, err
		}
		ob.head = b
	}
	return ob, nil
}

// Name returns the object's URL for messages: without user information,
// and without a query (a presigned URL's signature), which shows as "?…".
func (ob *Object) Name() string { return ob.name }

// Size returns the object's size, or -1 if the server does not say.
func (ob *Object) Size() int64 { return ob.v.size }

// ETag returns the object's ETag at Open, or "".
func (ob *Object) ETag() string { return ob.v.etag }

// Head returns the first bytes of the object (up to 4 KiB), read at Open.
func (ob *Object) Head() []byte { return ob.head }

// RandomAccess reports whether the object can be read at random (its
// server answers range requests and says its size).
func (ob *Object) RandomAccess() bool { return ob.v.ranges && ob.v.size >= 0 }

// Stats returns the counters of the requests made so far.
func (ob *Object) Stats() *Stats { return &ob.stats }

// Close stops the reads under way.
func (ob *Object) Close() error {
	ob.stop()
	return nil
}

// ReadAt implements io.ReaderAt.
func (ob *Object) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", ob.name, off)
	}
	if !ob.RandomAccess() {
		return 0, fmt.Errorf("%s: %w", ob.name, ErrNoRanges)
	}
	if off >= ob.v.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), ob.v.size-off))
	var err error
	switch {
	case off+int64(n) <= int64(len(ob.head)):
		copy(p[:n], ob.head[off:])
	case n < smallBlock:
		err = ob.readSmall(p[:n], off)
	default:
		err = ob.readLarge(p[:n], off)
	}
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readSmall reads p at off through the blocks kept.
func (ob *Object) readSmall(p []byte, off int64) error {
	for len(p) > 0 {
		bi := off / smallBlock
		b, err := ob.block(bi)
		if err != nil {
			return err
		}
		k := copy(p, b[off-bi*smallBlock:])
		if k == 0 {
			return fmt.Errorf("%s: no progress reading at byte offset %d", ob.name, off)
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}

// block returns block bi, fetched if it is not kept.
func (ob *Object) block(bi int64) ([]byte, error) {
	ob.mu.Lock()
	b, ok := ob.blocks[bi]
	ob.mu.Unlock()
	if ok {
		return b, nil
	}
	start := bi * smallBlock
	b = make([]byte, min(smallBlock, ob.v.size-start))
	if err := ob.fetch(b, start); err != nil {
		return nil, err
	}
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if _, ok := ob.blocks[bi]; !ok {
		ob.blocks[bi] = b
		ob.order = append(ob.order, bi)
		if len(ob.order) > maxBlocks {
			delete(ob.blocks, ob.order[0])
			ob.order = ob.order[1:]
		}
	}
	return b, nil
}

// readLarge reads p at off with GETs of at most ChunkSize bytes, in
// parallel.
func (ob *Object) readLarge(p []byte, off int64) error {
	cs := ob.o.ChunkSize
	if int64(len(p)) <= cs {
		return ob.fetch(p, off)
	}
	var g errgroup.Group
	g.SetLimit(ob.o.ReadAhead)
	for at := int64(0); at < int64(len(p)); at += cs {
		piece := p[at:min(at+cs, int64(len(p)))]
		g.Go(func() error { return ob.fetch(piece, off+at) })
	}
	return g.Wait()
}

// fetch fills p from off with ranged GETs, retrying (from where a cut
// body stopped) within the retry bound.
func (ob *Object) fetch(p []byte, off int64) error { return ob.fetchCtx(ob.ctx, p, off) }

// fetchCtx is fetch with requests stopped when ctx is done.
func (ob *Object) fetchCtx(ctx context.Context, p []byte, off int64) error {
	got := 0
	err := ob.retry(ctx, func() error {
		ob.stats.Requests.Add(1)
		rc, err := ob.st.get(ctx, off+int64(got), int64(len(p)-got), ob.v)
		if err != nil {
			return err
		}
		defer rc.Close()
		for got < len(p) {
			k, err := rc.Read(p[got:])
			got += k
			ob.stats.Bytes.Add(int64(k))
			if err == io.EOF && got < len(p) {
				return fmt.Errorf("body cut short: %w", io.ErrUnexpectedEOF)
			}
			if err != nil && err != io.EOF {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return ob.wrapAt(err, off+int64(got))
	}
	return nil
}

// retry runs f until it succeeds, fails in a way that will not pass, or
// the attempts run out.
func (ob *Object) retry(ctx context.Context, f func() error) error {
	return retry(ctx, ob.o.Retry, &ob.stats, f)
}

func retry(ctx context.Context, r Retry, st *Stats, f func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		if err = f(); err == nil || !retryable(err) || attempt >= r.Attempts || ctx.Err() != nil {
			if ctx.Err() != nil && err != nil {
				return ctx.Err()
			}
			return err
		}
		if st != nil {
			st.Retries.Add(1)
		}
		d := min(r.Base<<(attempt-1), r.Max)
		d = d/2 + rand.N(d/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// statusError is an answer that is an error: its HTTP status and, from S3,
// its code.
type statusError struct {
	status int
	code   string
	msg    string
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("%d %s", e.status, http.StatusText(e.status))
	if e.code != "" {
		s += " (" + e.code + ")"
	}
	if e.msg != "" && e.msg != e.code {
		s += ": " + e.msg
	}
	return s
}

func (e *statusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.status == http.StatusNotFound
	case ErrChanged:
		return e.status == http.StatusPreconditionFailed
	}
	return false
}

// throttled are the S3 error codes of answers to retry.
var throttled = map[string]bool{
	"SlowDown": true, "Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
	"RequestThrottled": true, "TooManyRequests": true, "RequestTimeout": true, "InternalError": true,
	"ServiceUnavailable": true, "BandwidthLimitExceeded": true,
}

// retryable reports whether err may pass if the request is made again.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.status >= 500 || se.status == http.StatusTooManyRequests || throttled[se.code]
	}
	if errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue)
}

// wrap returns err as an error about the object, without a URL of the
// HTTP library's (which may hold a presigned URL's signature).
func (ob *Object) wrap(err error) error {
	return wrapErr(ob.name, err)
}

func (ob *Object) wrapAt(err error, off int64) error {
	if errors.Is(err, ErrChanged) || errors.Is(err, context.Canceled) {
		return ob.wrap(err)
	}
	return fmt.Errorf("%s: reading at byte offset %d: %w", ob.name, off, clean(err))
}

func wrapErr(name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s: %w", name, clean(err))
}

// clean drops the URL an *url.Error carries from err.
func clean(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &cleaned{ue.Err}
	}
	return err
}

type cleaned struct{ err error }

func (c *cleaned) Error() string { return c.err.Error() }
func (c *cleaned) Unwrap() error { return c.err }

package remote

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"
)

// Part sizes of an Upload: its first parts are FirstPart bytes, doubling
// every partsPerSize parts up to the largest part (Options.PartSize,
// DefaultMaxPart by default), so that small outputs cost little memory and
// large ones still fit in S3's 10,000 parts: about 1 TiB with 128 MiB
// parts at most.
const (
	FirstPart      = 8 << 20
	DefaultMaxPart = 128 << 20
	partsPerSize   = 500
	maxParts       = 10000
	// partsInFlight is how many parts are sent at once; with the part
	// being filled, an Upload holds at most partsInFlight+1 parts.
	partsInFlight = 2
	// abortTimeout bounds the request that aborts an upload.
	abortTimeout = 30 * time.Second
)

// Upload writes an S3 object as a stream (io.Writer): a multipart upload,
// its parts sent as they fill, at most partsInFlight at a time, so that it
// holds at most 3 parts in memory (24 MiB for the first 4 GiB). Nothing is
// visible under the key until Commit completes the upload; Abort, or a
// failure, aborts it, and the parts sent are discarded. An output that
// fits in its first part is sent with one PUT by Commit.
//
// (A run killed outright cannot abort its upload: a bucket lifecycle rule,
// AbortIncompleteMultipartUpload, removes such parts.)
type Upload struct {
	name        string
	core        *minio.Core
	creds       string
	bucket, key string
	o           Options
	overwrite   bool

	ctx  context.Context
	stop context.CancelFunc
	g    *errgroup.Group
	buf  []byte
	n    int // parts started
	id   string

	mu     sync.Mutex
	parts  []minio.CompletePart
	failed error // of a part

	size int64
	done bool
	err  error
	st   Stats
}

// Create starts an upload of the object at url (s3://BUCKET/KEY). Unless
// overwrite is set, an object already there is refused, now, and again when
// the upload completes (If-None-Match, where the server takes it).
func Create(ctx context.Context, rawurl string, overwrite bool, o Options) (*Upload, error) {
	o = o.withDefaults()
	if !strings.HasPrefix(strings.ToLower(rawurl), "s3://") {
		return nil, fmt.Errorf("%s: vmaconv writes to s3:// only (an HTTP server takes no uploads)", redact(rawurl))
	}
	bucket, key, err := parseS3(rawurl)
	if err != nil {
		return nil, err
	}
	name := "s3://" + bucket + "/" + key
	if key == "" || strings.HasSuffix(key, "/") {
		return nil, fmt.Errorf("%s: names a prefix: name the object", name)
	}
	core, c, err := newCore(o)
	if err != nil {
		return nil, err
	}
	u := &Upload{name: name, core: core, creds: c.source, bucket: bucket, key: key, o: o, overwrite: overwrite}
	if !overwrite {
		err := retry(ctx, o.Retry, &u.st, func() error {
			_, err := core.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
			return s3Err(err, c.source)
		})
		switch {
		case err == nil:
			return nil, fmt.Errorf("%s exists; pass --overwrite to replace it", name)
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, context.Canceled):
			return nil, err
		default:
			var se *statusError
			if !errors.As(err, &se) || se.status != 403 { // a key that may write but not read
				return nil, wrapErr(name, err)
			}
		}
	}
	u.ctx, u.stop = context.WithCancel(ctx)
	u.g = &errgroup.Group{}
	u.g.SetLimit(partsInFlight)
	return u, nil
}

// Name returns the object's URL.
func (u *Upload) Name() string { return u.name }

// Stats returns the counters of the requests made so far.
func (u *Upload) Stats() *Stats { return &u.st }

// partSize returns the size of part n (from 1).
func (u *Upload) partSize(n int) int {
	return int(min(int64(FirstPart)<<((n-1)/partsPerSize), u.o.PartSize))
}

// Write implements io.Writer.
func (u *Upload) Write(p []byte) (int, error) {
	if u.done {
		return 0, errors.New(u.name + ": write after Commit or Abort")
	}
	if u.err != nil {
		return 0, u.err
	}
	u.mu.Lock()
	failed := u.failed
	u.mu.Unlock()
	if failed != nil {
		u.err = failed
		return 0, failed
	}
	written := 0
	for len(p) > 0 {
		if u.buf == nil {
			u.buf = make([]byte, 0, u.partSize(u.n+1))
		}
		k := min(len(p), cap(u.buf)-len(u.buf))
		u.buf = append(u.buf, p[:k]...)
		p, written = p[k:], written+k
		u.size += int64(k)
		if len(u.buf) == cap(u.buf) {
			if err := u.send(); err != nil {
				u.err = err
				return written, err
			}
		}
	}
	return written, nil
}

// send starts the upload of the part filled, after starting the multipart
// upload if it is the first.
func (u *Upload) send() error {
	if u.n >= maxParts {
		return fmt.Errorf("%s: more than %d parts of at most %d MiB: too large for a streamed upload", u.name, maxParts, u.o.PartSize>>20)
	}
	if u.id == "" {
		err := retry(u.ctx, u.o.Retry, &u.st, func() error {
			var err error
			u.st.Requests.Add(1)
			u.id, err = u.core.NewMultipartUpload(u.ctx, u.bucket, u.key, minio.PutObjectOptions{})
			return s3Err(err, u.creds)
		})
		if err != nil {
			return wrapErr(u.name, err)
		}
	}
	u.n++
	n, buf := u.n, u.buf
	u.buf = nil
	sum := md5.Sum(buf)
	md5b64 := base64.StdEncoding.EncodeToString(sum[:])
	// Go blocks while partsInFlight parts are being sent.
	u.g.Go(func() error {
		var part minio.ObjectPart
		err := retry(u.ctx, u.o.Retry, &u.st, func() error {
			var err error
			u.st.Requests.Add(1)
			part, err = u.core.PutObjectPart(u.ctx, u.bucket, u.key, u.id, n, bytes.NewReader(buf), int64(len(buf)),
				minio.PutObjectPartOptions{Md5Base64: md5b64})
			return s3Err(err, u.creds)
		})
		if err != nil {
			err = fmt.Errorf("%s: part %d: %w", u.name, n, clean(err))
			u.mu.Lock()
			u.failed = err
			u.mu.Unlock()
			return err
		}
		u.st.Bytes.Add(int64(len(buf)))
		u.mu.Lock()
		u.parts = append(u.parts, minio.CompletePart{PartNumber: n, ETag: part.ETag})
		u.mu.Unlock()
		return nil
	})
	return nil
}

// Commit sends what is left and completes the upload: the object appears
// whole under its key. A failure aborts the upload.
func (u *Upload) Commit() error {
	if u.done {
		return u.err
	}
	err := u.commit()
	if err != nil {
		u.abort()
		if u.ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = context.Canceled
		}
		u.err = err
	}
	u.done = true
	u.stop()
	return err
}

func (u *Upload) commit() error {
	if u.err != nil {
		return u.err
	}
	var opts minio.PutObjectOptions
	if !u.overwrite {
		opts.SetMatchETagExcept("*")
	}
	if u.id == "" { // one PUT
		buf := u.buf
		sum := md5.Sum(buf)
		err := retry(u.ctx, u.o.Retry, &u.st, func() error {
			u.st.Requests.Add(1)
			_, err := u.core.PutObject(u.ctx, u.bucket, u.key, bytes.NewReader(buf), int64(len(buf)),
				base64.StdEncoding.EncodeToString(sum[:]), "", opts)
			return u.refused(s3Err(err, u.creds))
		})
		if err != nil {
			return wrapErr(u.name, err)
		}
		u.st.Bytes.Add(int64(len(buf)))
		return nil
	}
	if len(u.buf) > 0 {
		if err := u.send(); err != nil {
			return err
		}
	}
	if err := u.g.Wait(); err != nil {
		return err
	}
	slices.SortFunc(u.parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	err := retry(u.ctx, u.o.Retry, &u.st, func() error {
		u.st.Requests.Add(1)
		_, err := u.core.CompleteMultipartUpload(u.ctx, u.bucket, u.key, u.id, u.parts, opts)
		return u.refused(s3Err(err, u.creds))
	})
	if err != nil {
		return wrapErr(u.name, err)
	}
	u.id = ""
	return nil
}

// refused turns the answer to If-None-Match into the message of an
// output that exists.
func (u *Upload) refused(err error) error {
	var se *statusError
	if errors.As(err, &se) && se.status == 412 {
		return fmt.Errorf("appeared while it was written (another run?); pass --overwrite to replace it")
	}
	return err
}

// Abort aborts the upload: the parts sent are discarded and nothing
// appears under the key. It does nothing after Commit.
func (u *Upload) Abort() error {
	if u.done {
		return nil
	}
	u.done = true
	u.abort()
	if u.err == nil {
		u.err = errors.New(u.name + ": aborted")
	}
	return nil
}

// abort stops the parts under way and aborts the multipart upload.
func (u *Upload) abort() {
	u.stop()
	u.g.Wait()
	u.buf = nil
	if u.id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	retry(ctx, u.o.Retry, &u.st, func() error {
		u.st.Requests.Add(1)
		return s3Err(u.core.AbortMultipartUpload(ctx, u.bucket, u.key, u.id), u.creds)
	})
	u.id = ""
}

// Size returns the bytes written so far.
func (u *Upload) Size() int64 { return u.size }

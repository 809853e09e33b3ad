package remote

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vmaconv/vmaconv/format"
)

// httpStore is an object on an HTTP server, read with range requests.
type httpStore struct {
	url    string
	client *http.Client
}

// newStore returns the store of rawurl and the object's name for
// messages.
func newStore(rawurl string, o Options) (store, string, error) {
	scheme, _, _ := strings.Cut(rawurl, "://")
	switch strings.ToLower(scheme) {
	case "s3":
		b, key, err := parseS3(rawurl)
		if err != nil {
			return nil, "", err
		}
		st, err := newS3(b, key, o)
		return st, "s3://" + b + "/" + key, err
	case "http", "https":
		u, err := url.Parse(rawurl)
		name := redact(rawurl)
		if err != nil || u.Host == "" {
			return nil, "", fmt.Errorf("%s: not a URL", name)
		}
		return &httpStore{url: rawurl, client: httpClient(o)}, name, nil
	}
	return nil, "", fmt.Errorf("%s: not a URL vmaconv reads (s3://, https://, http://)", redact(rawurl))
}

// Redact returns a URL as messages show it: without its user information
// and query (a presigned URL's signature shows as "?…"). Anything else is
// returned as it is.
func Redact(s string) string {
	if !format.IsURL(s) {
		return s
	}
	if strings.HasPrefix(strings.ToLower(s), "s3://") {
		return s
	}
	return redact(s)
}

// redact returns rawurl without its user information and query.
func redact(rawurl string) string {
	u, err := url.Parse(rawurl)
	if err != nil {
		// Keep the scheme and host only.
		scheme, rest, _ := strings.Cut(rawurl, "://")
		host, _, _ := strings.Cut(rest, "/")
		if i := strings.LastIndexByte(host, '@'); i >= 0 {
			host = host[i+1:]
		}
		return scheme + "://" + host + "/…"
	}
	u.User = nil
	q := u.RawQuery != "" || u.ForceQuery
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	s := u.String()
	if q {
		s += "?…"
	}
	return s
}

// httpClient returns the client of o's transport, or one made for many
// parallel requests to one host.
func httpClient(o Options) *http.Client {
	if o.Transport != nil {
		return &http.Client{Transport: o.Transport}
	}
	return &http.Client{Transport: defaultTransport}
}

var defaultTransport = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 60 * time.Second
	return t
}()

// stat asks for the first bytes with a range request: the answer says
// whether the server takes ranges, the size and the validators, and
// carries the head.
func (h *httpStore) stat(ctx context.Context) (version, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return version{}, nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", headSize-1))
	resp, err := h.client.Do(req)
	if err != nil {
		return version{}, nil, err
	}
	defer resp.Body.Close()
	v := version{size: -1, etag: resp.Header.Get("ETag")}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		v.modified = t
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, _, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != 0 || total < 0 {
			return version{}, nil, fmt.Errorf("bad Content-Range %q", resp.Header.Get("Content-Range"))
		}
		v.size, v.ranges = total, true
	case http.StatusRequestedRangeNotSatisfiable: // an empty object
		if _, _, total, ok := contentRange(resp.Header.Get("Content-Range")); ok && total == 0 {
			return version{size: 0, etag: v.etag, modified: v.modified, ranges: true}, []byte{}, nil
		}
		return version{}, nil, statusOf(resp)
	case http.StatusOK: // no ranges: the whole body follows
		v.size = resp.ContentLength
	default:
		return version{}, nil, statusOf(resp)
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, headSize))
	if err != nil {
		return version{}, nil, err
	}
	if v.size >= 0 && int64(len(head)) < min(v.size, headSize) {
		return version{}, nil, fmt.Errorf("first bytes: %w", io.ErrUnexpectedEOF)
	}
	return v, head, nil
}

// get asks for n bytes at off of version v, with the validator that pins
// it, and checks the answer is that range of that version.
func (h *httpStore) get(ctx context.Context, off, n int64, v version) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, err
	}
	whole := off == 0 && (n < 0 || n == v.size)
	if v.ranges && !whole {
		end := ""
		if n >= 0 {
			end = strconv.FormatInt(off+n-1, 10)
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%s", off, end))
	}
	switch {
	case strongETag(v.etag):
		req.Header.Set("If-Match", v.etag)
	case !v.modified.IsZero():
		req.Header.Set("If-Unmodified-Since", v.modified.UTC().Format(http.TimeFormat))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (io.ReadCloser, error) {
		resp.Body.Close()
		return nil, err
	}
	if resp.StatusCode == http.StatusPreconditionFailed {
		return fail(&changedError{was: v.pin(), now: resp.Header.Get("ETag")})
	}
	if err := checkVersion(v, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")); err != nil {
		return fail(err)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off || (n >= 0 && end != off+n-1) || total != v.size {
			if ok && total != v.size && total >= 0 {
				return fail(&changedError{was: fmt.Sprintf("%d bytes", v.size), now: fmt.Sprintf("%d bytes", total)})
			}
			return fail(fmt.Errorf("asked for bytes %d+%d, got Content-Range %q", off, n, resp.Header.Get("Content-Range")))
		}
	case http.StatusOK:
		if !whole && v.ranges {
			return fail(fmt.Errorf("asked for bytes %d+%d, got the whole object", off, n))
		}
		if v.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != v.size {
			return fail(&changedError{was: fmt.Sprintf("%d bytes", v.size), now: fmt.Sprintf("%d bytes", resp.ContentLength)})
		}
		if !v.ranges && off > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				return fail(err)
			}
		}
	default:
		return fail(statusOf(resp))
	}
	return resp.Body, nil
}

// checkVersion compares an answer's validators with the pinned ones (for
// servers that ignore If-Match).
func checkVersion(v version, etag, modified string) error {
	if v.etag != "" && etag != "" && etag != v.etag {
		return &changedError{was: v.pin(), now: "ETag " + etag}
	}
	if v.etag == "" && !v.modified.IsZero() {
		if t, err := http.ParseTime(modified); err == nil && !t.Equal(v.modified) {
			return &changedError{was: "modified " + v.modified.UTC().Format(time.RFC3339), now: t.UTC().Format(time.RFC3339)}
		}
	}
	return nil
}

// pin describes what the version is pinned to, for messages.
func (v version) pin() string {
	switch {
	case v.etag != "":
		return "ETag " + v.etag
	case !v.modified.IsZero():
		return "modified " + v.modified.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%d bytes", v.size)
}

// strongETag reports whether etag can be given to If-Match (a weak one,
// W/"…", never matches there).
func strongETag(etag string) bool { return etag != "" && !strings.HasPrefix(etag, "W/") }

// contentRange parses "bytes START-END/TOTAL" (TOTAL "*": -1).
func contentRange(s string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	r, t, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	total = -1
	if t != "*" {
		var err error
		if total, err = strconv.ParseInt(t, 10, 64); err != nil || total < 0 {
			return 0, 0, 0, false
		}
	}
	if r == "*" {
		return -1, -1, total, true
	}
	a, b, found := strings.Cut(r, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 = strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

// statusOf returns the error of an answer that is not a success.
func statusOf(resp *http.Response) error {
	return &statusError{status: resp.StatusCode}
}

// changedError is a read of an object that is no longer the version
// opened.
type changedError struct{ was, now string }

func (e *changedError) Error() string {
	if e.now == "" {
		return fmt.Sprintf("changed while it was read (was %s when opened): read it again", e.was)
	}
	return fmt.Sprintf("changed while it was read (%s when opened, %s now): read it again", e.was, e.now)
}

func (e *changedError) Is(target error) bool { return target == ErrChanged }

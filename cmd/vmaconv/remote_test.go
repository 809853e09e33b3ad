package main

import (
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/vmaconv/vmaconv/remote/remotetest"
)

// The object stores scripts start (s3serve, httpserve), by script.
var (
	storesMu sync.Mutex
	s3s      = map[*testscript.TestScript]*remotetest.S3{}
	https    = map[*testscript.TestScript]*remotetest.HTTP{}
)

// s3serve starts an S3 server on loopback for the script (gofakes3, see
// remotetest) and points vmaconv at it: AWS_ENDPOINT_URL, the test
// credentials and region.
func s3serveCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: s3serve")
	}
	s := remotetest.StartS3()
	storesMu.Lock()
	s3s[ts] = s
	storesMu.Unlock()
	ts.Defer(func() {
		s.Close()
		storesMu.Lock()
		delete(s3s, ts)
		storesMu.Unlock()
	})
	for k, v := range s.Env() {
		ts.Setenv(k, v)
	}
}

func s3Of(ts *testscript.TestScript) *remotetest.S3 {
	storesMu.Lock()
	defer storesMu.Unlock()
	s := s3s[ts]
	if s == nil {
		ts.Fatalf("no S3 server: run s3serve first")
	}
	return s
}

// s3put BUCKET/KEY FILE stores FILE (the bucket is made if it is missing).
func s3putCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: s3put BUCKET/KEY FILE")
	}
	s := s3Of(ts)
	bucket, key, _ := strings.Cut(args[0], "/")
	if ok, _ := s.Backend.BucketExists(bucket); !ok {
		s.Bucket(ts, bucket)
	}
	b, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	s.Put(ts, bucket, key, b)
}

// s3get BUCKET/KEY FILE writes the object to FILE; ! s3get BUCKET/KEY
// checks there is none.
func s3getCmd(ts *testscript.TestScript, neg bool, args []string) {
	s := s3Of(ts)
	if len(args) < 1 {
		ts.Fatalf("usage: s3get BUCKET/KEY [FILE]")
	}
	bucket, key, _ := strings.Cut(args[0], "/")
	b, ok := s.Get(ts, bucket, key)
	switch {
	case neg && ok:
		ts.Fatalf("s3://%s exists", args[0])
	case neg:
		return
	case !ok:
		ts.Fatalf("s3://%s does not exist", args[0])
	case len(args) != 2:
		ts.Fatalf("usage: s3get BUCKET/KEY FILE")
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), b, 0o644))
}

// s3uploads BUCKET N checks that N multipart uploads are under way in
// BUCKET.
func s3uploadsCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: s3uploads BUCKET N")
	}
	if n := remotetest.Uploads(ts, s3Of(ts), args[0]); strconv.Itoa(n) != args[1] {
		ts.Fatalf("%d uploads under way in %s, want %s", n, args[0], args[1])
	}
}

// httpserve starts an HTTP server (ranges, ETags) on loopback: $HTTPURL.
func httpserveCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: httpserve")
	}
	h := remotetest.StartHTTP()
	storesMu.Lock()
	https[ts] = h
	storesMu.Unlock()
	ts.Defer(func() {
		h.Close()
		storesMu.Lock()
		delete(https, ts)
		storesMu.Unlock()
	})
	ts.Setenv("HTTPURL", h.URL)
	ts.Setenv("HTTPHOST", strings.TrimPrefix(h.URL, "http://"))
}

// httpput /PATH FILE serves FILE at $HTTPURL/PATH.
func httpputCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 || !strings.HasPrefix(args[0], "/") {
		ts.Fatalf("usage: httpput /PATH FILE")
	}
	storesMu.Lock()
	h := https[ts]
	storesMu.Unlock()
	if h == nil {
		ts.Fatalf("no HTTP server: run httpserve first")
	}
	b, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	h.Put(args[0], b)
}

package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"gopkg.in/ini.v1"
)

func getenv(key string) string { return os.Getenv(key) }

// s3Store is an object in an S3 bucket.
type s3Store struct {
	core        *minio.Core
	bucket, key string
	creds       string // where the credentials come from, for messages
}

// parseS3 splits s3://BUCKET/KEY.
func parseS3(rawurl string) (bucket, key string, err error) {
	_, rest, _ := strings.Cut(rawurl, "://")
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%s: no bucket: want s3://BUCKET/KEY", rawurl)
	}
	return bucket, key, nil
}

// s3Config is where and as whom S3 is reached.
type s3Config struct {
	endpoint *url.URL // nil: AWS
	region   string
	creds    *credentials.Credentials
	source   string // of the credentials, for messages
}

// s3Setup reads the configuration as AWS tools do (see the package doc).
func s3Setup(env func(string) string) (s3Config, error) {
	var c s3Config
	home, _ := os.UserHomeDir()
	profile := firstOf(env("AWS_PROFILE"), env("AWS_DEFAULT_PROFILE"), "default")
	config := firstOf(env("AWS_CONFIG_FILE"), filepath.Join(home, ".aws", "config"))
	var prof *ini.Section
	if f, err := ini.Load(config); err == nil {
		name := "profile " + profile
		if profile == "default" && !f.HasSection(name) {
			name = "default"
		}
		if f.HasSection(name) {
			prof = f.Section(name)
		}
	}
	fromProfile := func(key string) string {
		if prof == nil {
			return ""
		}
		return prof.Key(key).String()
	}
	c.region = firstOf(env("AWS_REGION"), env("AWS_DEFAULT_REGION"), fromProfile("region"))
	if ep := firstOf(env("AWS_ENDPOINT_URL_S3"), env("AWS_ENDPOINT_URL"), fromProfile("endpoint_url")); ep != "" {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("endpoint %q (AWS_ENDPOINT_URL): want http://HOST[:PORT] or https://HOST[:PORT]", redact(ep))
		}
		c.endpoint = u
	}
	// The credentials, in the AWS tools' order.
	if id, secret := env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		c.creds = credentials.NewStaticV4(id, secret, env("AWS_SESSION_TOKEN"))
		c.source = "AWS_ACCESS_KEY_ID from the environment"
		return c, nil
	}
	file := firstOf(env("AWS_SHARED_CREDENTIALS_FILE"), filepath.Join(home, ".aws", "credentials"))
	if f, err := ini.Load(file); err == nil && f.HasSection(profile) {
		c.creds = credentials.NewFileAWSCredentials(file, profile)
		c.source = fmt.Sprintf("profile %s in %s", profile, file)
		return c, nil
	}
	if prof != nil && (prof.HasKey("credential_process") || prof.HasKey("sso_session") || prof.HasKey("sso_start_url")) {
		c.creds = credentials.NewFileAWSCredentials(config, profile)
		c.source = fmt.Sprintf("profile %s in %s", profile, config)
		return c, nil
	}
	switch {
	case env("AWS_WEB_IDENTITY_TOKEN_FILE") != "":
		c.source = "the web identity in AWS_WEB_IDENTITY_TOKEN_FILE"
	case env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") != "" || env("AWS_CONTAINER_CREDENTIALS_FULL_URI") != "":
		c.source = "the container's role"
	case env("AWS_EC2_METADATA_DISABLED") != "true" && c.endpoint == nil:
		// The instance's role: asked only of AWS, never for an
		// S3-compatible endpoint named by the user.
		c.source = "the instance's role"
	default:
		c.creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
		c.source = "none (anonymous requests)"
		return c, nil
	}
	c.creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.IAM{},
		&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}}})
	return c, nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// noMinioWait makes minio-go, which vmaconv never lets retry (its
// retries are Retry's), not wait after its one attempt: it sleeps up to
// DefaultRetryUnit after the last attempt of a request that failed in a
// way it would retry, before it returns. Set before the first client is
// made.
var noMinioWait sync.Once

// newCore returns a client of the S3 service o's environment names.
func newCore(o Options) (*minio.Core, s3Config, error) {
	noMinioWait.Do(func() { minio.DefaultRetryUnit = 0 })
	c, err := s3Setup(o.Env)
	if err != nil {
		return nil, c, err
	}
	mo := &minio.Options{Creds: c.creds, Region: c.region, Secure: true, MaxRetries: 1, Transport: o.Transport}
	if mo.Transport == nil {
		mo.Transport = defaultTransport
	}
	host := "s3.amazonaws.com"
	if c.endpoint != nil {
		host = c.endpoint.Host
		mo.Secure = c.endpoint.Scheme == "https"
		// Path-style: S3-compatible servers rarely resolve
		// BUCKET.HOST.
		mo.BucketLookup = minio.BucketLookupPath
	}
	core, err := minio.NewCore(host, mo)
	if err != nil {
		return nil, c, fmt.Errorf("S3 endpoint %s: %w", host, err)
	}
	return core, c, nil
}

func newS3(bucket, key string, o Options) (*s3Store, error) {
	name := "s3://" + bucket + "/" + key
	if key == "" || strings.HasSuffix(key, "/") {
		return nil, fmt.Errorf("%s: names a prefix, not an object", name)
	}
	core, c, err := newCore(o)
	if err != nil {
		return nil, err
	}
	return &s3Store{core: core, bucket: bucket, key: key, creds: c.source}, nil
}

func (s *s3Store) stat(ctx context.Context) (version, []byte, error) {
	info, err := s.core.StatObject(ctx, s.bucket, s.key, minio.StatObjectOptions{})
	if err != nil {
		return version{}, nil, s.err(err)
	}
	return version{size: info.Size, etag: info.ETag, modified: info.LastModified, ranges: true}, nil, nil
}

func (s *s3Store) get(ctx context.Context, off, n int64, v version) (io.ReadCloser, error) {
	var o minio.GetObjectOptions
	if n > 0 {
		if err := o.SetRange(off, off+n-1); err != nil {
			return nil, err
		}
	} else if off > 0 {
		if err := o.SetRange(off, 0); err != nil {
			return nil, err
		}
	}
	if v.etag != "" {
		if err := o.SetMatchETag(v.etag); err != nil {
			return nil, err
		}
	}
	body, _, h, err := s.core.GetObject(ctx, s.bucket, s.key, o)
	if err != nil {
		err = s.err(err)
		if errors.Is(err, ErrChanged) {
			return nil, &changedError{was: v.pin()}
		}
		return nil, err
	}
	// Checked here too, for servers that ignore If-Match.
	if etag := strings.Trim(h.Get("ETag"), `"`); v.etag != "" && etag != "" && etag != v.etag {
		body.Close()
		return nil, &changedError{was: v.pin(), now: "ETag " + etag}
	}
	if cr := h.Get("Content-Range"); cr != "" {
		start, end, total, ok := contentRange(cr)
		switch {
		case ok && total >= 0 && total != v.size:
			body.Close()
			return nil, &changedError{was: fmt.Sprintf("%d bytes", v.size), now: fmt.Sprintf("%d bytes", total)}
		case !ok || start != off || (n > 0 && end != off+n-1):
			body.Close()
			return nil, fmt.Errorf("asked for bytes %d+%d, got Content-Range %q", off, n, cr)
		}
	}
	return body, nil
}

// err turns minio's error into a statusError, saying where the
// credentials came from when access is denied.
func (s *s3Store) err(err error) error {
	return s3Err(err, s.creds)
}

func s3Err(err error, creds string) error {
	r := minio.ToErrorResponse(err)
	if r.StatusCode == 0 {
		return err
	}
	se := &statusError{status: r.StatusCode, code: r.Code, msg: r.Message}
	if r.StatusCode == http.StatusForbidden || r.Code == "AccessDenied" || r.Code == "InvalidAccessKeyId" || r.Code == "SignatureDoesNotMatch" {
		se.msg += " (credentials: " + creds + ")"
	}
	return se
}

// List returns the URLs of the objects under prefix (s3://BUCKET/PREFIX),
// in key order, for which keep (if set) is true.
func List(ctx context.Context, prefix string, o Options, keep func(key string) bool) ([]string, error) {
	o = o.withDefaults()
	if !strings.HasPrefix(strings.ToLower(prefix), "s3://") {
		return nil, fmt.Errorf("%s: only an s3:// prefix can be listed", redact(prefix))
	}
	bucket, key, err := parseS3(prefix)
	if err != nil {
		return nil, err
	}
	core, c, err := newCore(o)
	if err != nil {
		return nil, err
	}
	var urls []string
	token := ""
	for {
		var res minio.ListBucketV2Result
		err := retry(ctx, o.Retry, nil, func() error {
			var err error
			res, err = core.ListObjectsV2(bucket, key, "", token, "", 1000)
			return s3Err(err, c.source)
		})
		if err != nil {
			return nil, wrapErr(prefix, err)
		}
		for _, obj := range res.Contents {
			if keep == nil || keep(obj.Key) {
				urls = append(urls, "s3://"+bucket+"/"+obj.Key)
			}
		}
		if !res.IsTruncated || res.NextContinuationToken == "" {
			break
		}
		token = res.NextContinuationToken
	}
	return urls, nil
}

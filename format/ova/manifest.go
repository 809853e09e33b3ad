package ova

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// The manifest (.mf) of an OVF package: a line per file,
// "SHA256(vm-disk1.vmdk)= 9f86d0…", as ovftool and ova-compose write it
// (DSP0243: SHA-1 in OVF 1.x, SHA-256 and SHA-512 as well since).

// MaxManifestSize bounds the manifest read.
const MaxManifestSize = 1 << 20

// digests are the algorithms a manifest may name, by the name it writes.
var digests = map[string]struct {
	new  func() hash.Hash
	size int
}{
	"SHA1":   {sha1.New, sha1.Size},
	"SHA256": {sha256.New, sha256.Size},
	"SHA512": {sha512.New, sha512.Size},
}

// A digest is one line of a manifest.
type digest struct {
	Algorithm string // SHA1, SHA256 or SHA512
	File      string
	Sum       []byte
}

// manifestLine returns the line a manifest holds for file with digest
// sum, newline included.
func manifestLine(algorithm, file string, sum []byte) string {
	return fmt.Sprintf("%s(%s)= %s\n", algorithm, file, hex.EncodeToString(sum))
}

// parseManifest reads a manifest: each non-empty line
// "ALGORITHM(FILE)= HEX" (a space after "=" or not, CRLF or LF). A file
// named twice, an unknown algorithm or a digest of the wrong length is an
// error naming the line.
func parseManifest(data []byte) ([]digest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d a manifest may have", ErrCorrupt, len(data), MaxManifestSize)
	}
	var out []digest
	seen := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("%w: line %d: %s", ErrCorrupt, i+1, why)
		}
		alg, rest, ok := strings.Cut(line, "(")
		end := strings.LastIndex(rest, ")=")
		if !ok || end < 0 {
			return nil, bad("not ALGORITHM(FILE)= DIGEST")
		}
		d := digest{Algorithm: strings.ToUpper(strings.TrimSpace(alg)), File: rest[:end]}
		alg2, known := digests[d.Algorithm]
		if !known {
			return nil, bad(fmt.Sprintf("unknown digest algorithm %q (want SHA1, SHA256 or SHA512)", cleanName(alg)))
		}
		sum, err := hex.DecodeString(strings.TrimSpace(rest[end+2:]))
		if err != nil || len(sum) != alg2.size {
			return nil, bad(fmt.Sprintf("the %s digest of %s is not %d hex digits", d.Algorithm, cleanName(d.File), 2*alg2.size))
		}
		d.Sum = sum
		if seen[d.File] {
			return nil, bad(fmt.Sprintf("%s is named twice", cleanName(d.File)))
		}
		seen[d.File] = true
		out = append(out, d)
	}
	return out, nil
}

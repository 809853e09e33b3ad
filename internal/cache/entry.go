package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Identity identifies a version of an archive file. Any write to the file
// changes its change time, which no one can set back (touch -r sets only
// the access and modification times); the hashes catch a file replaced by
// another with the same metadata where those are not kept (some network
// file systems).
type Identity struct {
	Path  string `json:"path"` // absolute; recorded, not compared
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime-ns"`
	CTime int64  `json:"ctime-ns"`
	Head  string `json:"head-sha256"` // of the first MiB (the whole file if smaller)
	Tail  string `json:"tail-sha256"` // of the last MiB
}

// edge is how much of each end of an archive its identity hashes.
const edge = 1 << 20

// Identify returns the identity of the open file f (Path empty). It reads
// f's first and last MiB with ReadAt, leaving its offset alone.
func Identify(f *os.File) (Identity, error) {
	fi, err := f.Stat()
	if err != nil {
		return Identity{}, err
	}
	dev, ino, ctime, err := statID(f)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Dev: dev, Ino: ino, Size: fi.Size(), MTime: fi.ModTime().UnixNano(), CTime: ctime}
	buf := make([]byte, min(edge, id.Size))
	if _, err := f.ReadAt(buf, 0); err != nil {
		return Identity{}, err
	}
	h := sha256.Sum256(buf)
	id.Head = hex.EncodeToString(h[:])
	if _, err := f.ReadAt(buf, id.Size-int64(len(buf))); err != nil {
		return Identity{}, err
	}
	h = sha256.Sum256(buf)
	id.Tail = hex.EncodeToString(h[:])
	return id, nil
}

// Same reports whether id and o are the same version of a file (wherever
// each was found: the paths are not compared).
func (id Identity) Same(o Identity) bool {
	id.Path, o.Path = "", ""
	return id == o
}

// Key returns the name of id's entry: 32 hexadecimal digits of a hash of
// every field but the path (a file with two names has one entry).
func (id Identity) Key() string {
	h := sha256.Sum256(fmt.Appendf(nil, "vmaconv cache key 1\x00%d\x00%d\x00%d\x00%d\x00%d\x00%s\x00%s",
		id.Dev, id.Ino, id.Size, id.MTime, id.CTime, id.Head, id.Tail))
	return hex.EncodeToString(h[:16])
}

// isKey reports whether s has the form of a key.
func isKey(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// An entry file is the entry's data, then its record (JSON), then a footer:
// the magic, the data's size and the record's size (big-endian).
const (
	recordFormat  = "vmaconv cache entry"
	recordVersion = 1
	footerMagic   = "vmaconv-cache-1\n"
	footerSize    = len(footerMagic) + 16
	maxRecord     = 64 << 10
)

// record is what an entry records about itself.
type record struct {
	Format   string    `json:"format"`
	Version  int       `json:"version"`
	Archive  Identity  `json:"archive"`
	DataSize int64     `json:"data-size"`
	Built    time.Time `json:"built"`
}

// writeRecord appends the record and the footer at f's offset, which is
// the end of the data.
func writeRecord(f *os.File, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = append(b, footerMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(rec.DataSize))
	b = binary.BigEndian.AppendUint64(b, uint64(len(b)-len(footerMagic)-8))
	_, err = f.Write(b)
	return err
}

// errNotEntry is a file without a valid record.
var errNotEntry = errors.New("no valid record")

// readRecord reads and checks the record of an entry file of the given
// size.
func readRecord(r io.ReaderAt, size int64) (record, error) {
	var ft [footerSize]byte
	if size < int64(footerSize) {
		return record{}, errNotEntry
	}
	if _, err := r.ReadAt(ft[:], size-int64(footerSize)); err != nil {
		return record{}, err
	}
	if !bytes.Equal(ft[:len(footerMagic)], []byte(footerMagic)) {
		return record{}, errNotEntry
	}
	data := binary.BigEndian.Uint64(ft[len(footerMagic):])
	n := binary.BigEndian.Uint64(ft[len(footerMagic)+8:])
	if n > maxRecord || data > uint64(size) || data+n+uint64(footerSize) != uint64(size) {
		return record{}, errNotEntry
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, int64(data)); err != nil {
		return record{}, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Format != recordFormat || rec.Version != recordVersion || rec.DataSize != int64(data) {
		return record{}, errNotEntry
	}
	return rec, nil
}

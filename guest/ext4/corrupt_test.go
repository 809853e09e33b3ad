package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// TestCorrupt damages one structure of a small image at a time and checks
// the error each read returns: one line, naming the structure, wrapping
// guest.ErrCorrupt.
func TestCorrupt(t *testing.T) {
	t.Parallel()
	img := seeds(t)[0] // ext4, 1 KiB blocks, extents
	open := func(t *testing.T, b []byte) guest.FS {
		fsys, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		return fsys
	}
	// inodeOff returns the byte offset of the inode of path p in img.
	inodeOff := func(t *testing.T, p string) int64 {
		n := guesttest.Lookup(t, open(t, img), p).(*node)
		blk, off, err := n.fs.inodeLoc(n.in.ino)
		if err != nil {
			t.Fatal(err)
		}
		return int64(blk)*n.fs.bs + off
	}
	want := func(t *testing.T, err error, text string) {
		t.Helper()
		if err == nil || !errors.Is(err, guest.ErrCorrupt) || !strings.Contains(err.Error(), text) || strings.Contains(err.Error(), "\n") {
			t.Errorf("error %v, want one wrapping ErrCorrupt with %q", err, text)
		}
		t.Log(err)
	}
	readBig := func(t *testing.T, b []byte) error {
		f, err := guesttest.Lookup(t, open(t, b), "d/big").Open()
		if err != nil {
			return err
		}
		_, err = f.ReadAt(make([]byte, 100), 0)
		return err
	}
	le := binary.LittleEndian

	t.Run("extent depth", func(t *testing.T) {
		b := bytes.Clone(img)
		le.PutUint16(b[inodeOff(t, "d/big")+0x28+6:], 9)
		want(t, readBig(t, b), "extent tree depth 9 > 5")
	})
	t.Run("extent magic", func(t *testing.T) {
		b := bytes.Clone(img)
		le.PutUint16(b[inodeOff(t, "d/big")+0x28:], 0x1234)
		want(t, readBig(t, b), "bad magic 0x1234")
	})
	t.Run("extent past the end", func(t *testing.T) {
		b := bytes.Clone(img)
		le.PutUint32(b[inodeOff(t, "d/big")+0x28+12+8:], 1<<30)
		want(t, readBig(t, b), "past the end")
	})
	t.Run("extent entries", func(t *testing.T) {
		b := bytes.Clone(img)
		le.PutUint16(b[inodeOff(t, "d/big")+0x28+2:], 5)
		want(t, readBig(t, b), "entries")
	})
	t.Run("dirent rec_len", func(t *testing.T) {
		b := bytes.Clone(img)
		// The first block of directory "d".
		n := guesttest.Lookup(t, open(t, b), "d").(*node)
		r, err := newMapper(n.fs, n.in).lookup(0)
		if err != nil {
			t.Fatal(err)
		}
		le.PutUint16(b[int64(r.pblk)*n.fs.bs+4:], 0)
		_, err = guesttest.Lookup(t, open(t, img), "d").ReadDir()
		if err != nil {
			t.Fatalf("the good image: %v", err)
		}
		_, err = guesttest.Lookup(t, open(t, b), "d").ReadDir()
		want(t, err, "record length 0")
	})
	t.Run("inode size", func(t *testing.T) {
		b := bytes.Clone(img)
		le.PutUint32(b[inodeOff(t, "d/big")+0x6C:], 1<<20)
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		root, _ := open(t, b).Root()
		all, _ := root.ReadDir()
		for _, c := range all {
			if c.Info().Name == "d" {
				_, err = c.ReadDir()
			}
		}
		want(t, err, "past 2^32 blocks")
	})
	t.Run("block size", func(t *testing.T) {
		b := bytes.Clone(img)
		le.PutUint32(b[1024+0x18:], 7)
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		want(t, err, "block size")
		if Probe(bytes.NewReader(b), int64(len(b))) != "" {
			t.Error("Probe of a bad superblock is not empty")
		}
	})
	t.Run("compression", func(t *testing.T) {
		b := bytes.Clone(img)
		b[1024+0x60] |= incompatCompression
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		if err == nil || !strings.Contains(err.Error(), "unsupported incompatible feature compression") {
			t.Errorf("Open: %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		// Every read past the end of a truncated image is an error.
		b := img[:len(img)/2]
		fsys, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		root, err := fsys.Root()
		if err != nil {
			return
		}
		root.ReadDir()
	})
}

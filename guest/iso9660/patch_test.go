package iso9660

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmaconv/vmaconv/guest"
	"github.com/vmaconv/vmaconv/guest/guesttest"
)

// Tests on images patched by hand: multi-extent files and hostile
// structures xorriso does not write.

// plainImage returns a copy of the plain level-3 image.
func plainImage(t *testing.T) []byte {
	t.Helper()
	img := buildISO(t, "plain3", writeTree(t, "plain", plainTree()), "--norock", "-iso-level", "3")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rootBlock returns the primary root directory's block.
func rootBlock(img []byte) int {
	return int(binary.LittleEndian.Uint32(img[16*2048+156+2:]))
}

// record returns the byte offset of the record named id in the directory
// at block blk (first sector only).
func record(t *testing.T, img []byte, blk int, id string) int {
	t.Helper()
	sec := img[blk*2048 : blk*2048+2048]
	for i := 0; i < len(sec) && sec[i] != 0; i += int(sec[i]) {
		nl := int(sec[i+32])
		if string(sec[i+33:i+33+nl]) == id {
			return blk*2048 + i
		}
	}
	t.Fatalf("no record %q in the directory at block %d", id, blk)
	return 0
}

func put32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

// countReader counts ReadAt calls.
type countReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(1)
	return c.r.ReadAt(p, off)
}

func openBytes(t *testing.T, b []byte) *FS {
	t.Helper()
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMultiExtent(t *testing.T) {
	t.Parallel()
	orig := plainImage(t)
	want := make([]byte, 5000)
	guesttest.Content("DIR/FILE.TXT", 0, want)
	for _, v := range []struct {
		name  string
		order [2]int // blocks of the two extents, relative to the file's
		reads int64  // device reads for the whole file
	}{
		{"contiguous", [2]int{0, 1}, 1},
		{"reversed", [2]int{2, 0}, 2},
	} {
		t.Run(v.name, func(t *testing.T) {
			img := bytes.Clone(orig)
			dirBlk := int(binary.LittleEndian.Uint32(img[record(t, img, rootBlock(img), "DIR")+2:]))
			r := record(t, img, dirBlk, "FILE.TXT;1")
			l := int(img[r])
			loc := binary.LittleEndian.Uint32(img[r+2:])
			// The file's 5000 bytes become two extents: 2048 bytes and
			// 4096 (its second and third blocks, and what follows).
			// Make room for the second record.
			sec := (r / 2048) * 2048
			if !bytes.Equal(img[sec+2048-l:sec+2048], make([]byte, l)) {
				t.Fatal("no room for a second record")
			}
			copy(img[r+l:sec+2048], img[r:sec+2048-l])
			first, second := img[r:r+l], img[r+l:r+2*l]
			first[25] |= 0x80
			put32(first[2:], loc+uint32(v.order[0]))
			put32(first[10:], 2048)
			put32(second[2:], loc+uint32(v.order[1]))
			put32(second[10:], 4096)
			// Lay the content out as the extents say.
			content := make([]byte, 3*2048)
			copy(content, want)
			block := func(i int) []byte { return img[int(loc+uint32(i))*2048:][:2048] }
			copy(block(v.order[0]), content[:2048])
			copy(block(v.order[1]), content[2048:4096])
			copy(block(v.order[1]+1), content[4096:])
			cr := &countReader{r: bytes.NewReader(img)}
			f, err := Open(cr, int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			n := guesttest.Lookup(t, f, "DIR/FILE.TXT")
			if s := n.Info().Size; s != 6144 {
				t.Fatalf("size %d, want 6144", s)
			}
			file, err := n.Open()
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 6144)
			before := cr.n.Load()
			if m, err := file.ReadAt(got, 0); m != len(got) || err != nil && err != io.EOF {
				t.Fatalf("ReadAt = %d, %v", m, err)
			}
			if reads := cr.n.Load() - before; reads != v.reads {
				t.Errorf("%d device reads, want %d", reads, v.reads)
			}
			if !bytes.Equal(got, content) {
				t.Error("content differs")
			}
			// Across the extents' boundary.
			if m, err := file.ReadAt(got[:100], 2000); m != 100 || err != nil || !bytes.Equal(got[:100], content[2000:2100]) {
				t.Errorf("ReadAt across extents = %d, %v", m, err)
			}
		})
	}
	t.Run("unfinished", func(t *testing.T) {
		img := bytes.Clone(orig)
		r := record(t, img, rootBlock(img), "SMALL.TXT;1")
		img[r+25] |= 0x80
		_, err := guesttest.LookupErr(openBytes(t, img), "SMALL.TXT")
		if !errors.Is(err, guest.ErrCorrupt) || !strings.Contains(err.Error(), "multi-extent") {
			t.Errorf("ReadDir with an unfinished multi-extent file: %v", err)
		}
	})
}

func TestOneReadPerExtent(t *testing.T) {
	t.Parallel()
	img := buildISO(t, "plain3", writeTree(t, "plain", plainTree()), "--norock", "-iso-level", "3")
	var cr *countReader
	f := guesttest.OpenFile(t, img, func(r io.ReaderAt, size int64) (*FS, error) {
		cr = &countReader{r: r}
		return Open(cr, size)
	})
	file, err := guesttest.Lookup(t, f, "LARGE.BIN").Open()
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, file.Size())
	before := cr.n.Load()
	if m, err := file.ReadAt(p, 0); m != len(p) || err != nil && err != io.EOF {
		t.Fatalf("ReadAt = %d, %v", m, err)
	}
	if n := cr.n.Load() - before; n != 1 {
		t.Errorf("ReadAt of %d bytes: %d device reads, want 1", len(p), n)
	}
}

func TestHostile(t *testing.T) {
	t.Parallel()
	orig := plainImage(t)
	root := rootBlock(orig)
	dirRec := record(t, orig, root, "DIR")
	dirBlk := binary.LittleEndian.Uint32(orig[dirRec+2:])
	for _, v := range []struct {
		name  string
		patch func(img []byte)
		path  string // read this path's directory; "" the root's
		want  string
	}{
		{"dir loop to root", func(img []byte) {
			r := record(t, img, int(dirBlk), "FILE.TXT;1")
			img[r+25] |= 0x02
			put32(img[r+2:], uint32(root))
		}, "DIR/FILE.TXT", "loop"},
		{"dir loop to itself", func(img []byte) {
			r := record(t, img, int(dirBlk), "FILE.TXT;1")
			img[r+25] |= 0x02
			put32(img[r+2:], dirBlk)
		}, "DIR/FILE.TXT", "loop"},
		{"huge dir", func(img []byte) {
			put32(img[dirRec+10:], 0xfffff000)
		}, "DIR", "past the end"},
		{"short record", func(img []byte) {
			img[dirRec] = 20
		}, "", "record at byte"},
		{"record past sector", func(img []byte) {
			img[dirRec+32] = 200
		}, "", "record at byte"},
	} {
		t.Run(v.name, func(t *testing.T) {
			img := bytes.Clone(orig)
			v.patch(img)
			f := openBytes(t, img)
			var n guest.Node
			var err error
			if v.path == "" {
				n, err = f.Root()
			} else {
				n, err = guesttest.LookupErr(f, v.path)
			}
			if err == nil {
				_, err = n.ReadDir()
			}
			if !errors.Is(err, guest.ErrCorrupt) || !strings.Contains(err.Error(), v.want) {
				t.Errorf("got %v, want an error wrapping ErrCorrupt with %q", err, v.want)
			}
		})
	}
	t.Run("file past the end", func(t *testing.T) {
		img := bytes.Clone(orig)
		r := record(t, img, root, "SMALL.TXT;1")
		put32(img[r+2:], 0x7fffffff)
		n, err := guesttest.LookupErr(openBytes(t, img), "SMALL.TXT")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Open(); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("Open of a file past the end: %v", err)
		}
	})
	t.Run("no terminator", func(t *testing.T) {
		img := bytes.Clone(orig)
		for s := 17; s < 17+maxVDs+1; s++ {
			copy(img[s*2048:], img[16*2048:16*2048+2048])
		}
		if _, err := Open(bytes.NewReader(img), int64(len(img))); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("Open without a terminator: %v", err)
		}
	})
	t.Run("not iso", func(t *testing.T) {
		img := make([]byte, 40000)
		if p := Probe(bytes.NewReader(img), int64(len(img))); p != "" {
			t.Errorf("Probe of zeros = %q", p)
		}
		if _, err := Open(bytes.NewReader(img), int64(len(img))); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("Open of zeros: %v", err)
		}
		if _, err := Open(bytes.NewReader(img[:100]), 100); !errors.Is(err, guest.ErrCorrupt) {
			t.Errorf("Open of 100 bytes: %v", err)
		}
	})
}

func TestContinuationLoop(t *testing.T) {
	t.Parallel()
	img0 := buildISO(t, "reloc-small", writeTree(t, "deep", deepTree()), "-R")
	orig, err := os.ReadFile(img0)
	if err != nil {
		t.Fatal(err)
	}
	img := bytes.Clone(orig)
	// A CE entry in block 1 (the unused system area) pointing at itself.
	ce := func(b []byte) {
		copy(b, "CE\x1c\x01")
		put32(b[4:], 1)
		put32(b[12:], 0)
		put32(b[20:], 28)
	}
	ce(img[2048:])
	// The record of "small" starts its system use area with a CE to it.
	r := record(t, img, rootBlock(img), "SMALL.;1")
	nl := int(img[r+32])
	su := r + 33 + nl + (1 - nl%2)
	ce(img[su:])
	_, err = openBytes(t, img).Root()
	if err == nil {
		var root guest.Node
		root, _ = openBytes(t, img).Root()
		_, err = root.ReadDir()
	}
	if !errors.Is(err, guest.ErrCorrupt) || !strings.Contains(err.Error(), "continuation") {
		t.Errorf("a CE loop: %v", err)
	}
}

package vma_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// readAll reads a whole archive, reconstructing every device in memory, and
// returns the devices' contents and the clusters in archive order.
func readAll(t *testing.T, r io.Reader) (*vma.Reader, map[string][]byte, []clusterRec) {
	t.Helper()
	rd, err := vma.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	disks := map[string][]byte{}
	for _, d := range rd.Header().Devices {
		disks[d.Name] = make([]byte, d.Size)
	}
	var order []clusterRec
	buf := make([]byte, vma.ClusterSize)
	for {
		c, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c.Expand(buf)
		copy(disks[c.Device.Name][min(c.Index*vma.ClusterSize, c.Device.Size):], buf)
		order = append(order, clusterRec{c.Device.ID, c.Index, c.Mask, bytes.Clone(buf)})
	}
	return rd, disks, order
}

type clusterRec struct {
	dev  int
	idx  int64
	mask uint16
	data []byte
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestGoldenArchives(t *testing.T) {
	dir, manifest := testutil.LoadManifest(t)
	for name, want := range manifest {
		// format/vma reads plain VMA; format/compress and cmd/vmaconv
		// (TestExtractGolden) test the compressed ones.
		if filepath.Ext(name) != ".vma" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := sha(raw); got != want.ArchiveSHA256 {
				t.Fatalf("archive sha256 %s, manifest says %s", got, want.ArchiveSHA256)
			}
			rd, disks, order := readAll(t, bytes.NewReader(raw))
			h := rd.Header()
			if len(h.Configs) != len(want.Configs) {
				t.Fatalf("%d configs, want %d", len(h.Configs), len(want.Configs))
			}
			for i, c := range want.Configs {
				got := h.Configs[i]
				if got.Name != c.Name || len(got.Data) != c.Size || sha(got.Data) != c.SHA256 {
					t.Errorf("config %d: got %s (%d bytes, %s), want %s (%d bytes, %s)", i, got.Name, len(got.Data), sha(got.Data), c.Name, c.Size, c.SHA256)
				}
			}
			if len(h.Devices) != len(want.Devices) {
				t.Fatalf("%d devices, want %d", len(h.Devices), len(want.Devices))
			}
			for i, d := range want.Devices {
				got := h.Devices[i]
				if got.ID != d.ID || got.Name != d.Name || got.Size != d.Size {
					t.Errorf("device %d: got %+v, want %+v", i, got, d)
				}
				if s := sha(disks[d.Name]); s != d.SHA256 {
					t.Errorf("device %s: sha256 %s, want %s", d.Name, s, d.SHA256)
				}
			}
			if rd.Offset() != int64(len(raw)) {
				t.Errorf("reader consumed %d of %d bytes", rd.Offset(), len(raw))
			}

			// Proxmox's writer, given the same clusters in the same order,
			// must produce the very same bytes as ours.
			var out bytes.Buffer
			w := vma.NewWriter(&out, vma.WithUUID(h.UUID), vma.WithCTime(h.CTime))
			for _, c := range h.Configs {
				if err := w.AddConfig(c.Name, c.Data); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range h.Devices {
				if id, err := w.AddDevice(d.Name, d.Size); err != nil || id != d.ID {
					t.Fatalf("AddDevice(%s) = %d, %v", d.Name, id, err)
				}
			}
			for _, c := range order {
				if err := w.WriteCluster(c.dev, c.idx, c.data); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), raw) {
				t.Errorf("rewritten archive differs from Proxmox's: %d vs %d bytes, first difference at %d", out.Len(), len(raw), firstDiff(out.Bytes(), raw))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestGoldenLayout checks the facts observed of Proxmox's writer against the
// golden archives: at most 58 clusters an extent, unused slots last, every
// cluster present, sizes adding up.
func TestGoldenLayout(t *testing.T) {
	dir, _ := testutil.LoadManifest(t)
	for _, name := range []string{"case1.vma", "case2.vma", "case6-config-only.vma"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			rd, err := vma.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			stored := int64(0)
			perExtent := map[int64]int{}
			for {
				c, err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				perExtent[rd.Extents()]++
				stored += int64(len(c.Data))
			}
			for e, n := range perExtent {
				if n > vma.WriterClustersPerExtent {
					t.Errorf("extent %d holds %d clusters", e, n)
				}
			}
			want := int64(rd.Header().Size) + vma.ExtentHeaderSize*rd.Extents() + stored
			if want != int64(len(raw)) {
				t.Errorf("header %d + 512×%d extents + %d stored = %d, file is %d", rd.Header().Size, rd.Extents(), stored, want, len(raw))
			}
			if strings.Contains(name, "config-only") && rd.Extents() != 1 {
				t.Errorf("config-only archive has %d extents, want 1 empty one", rd.Extents())
			}
		})
	}
}

func TestGoldenTruncatedAtExtentBoundary(t *testing.T) {
	dir, _ := testutil.LoadManifest(t)
	raw, err := os.ReadFile(filepath.Join(dir, "case1.vma"))
	if err != nil {
		t.Fatal(err)
	}
	// Cut after the first extent: Proxmox's verify accepts this; we must not.
	rd, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	cut := rd.Offset()
	rd, err = vma.NewReader(bytes.NewReader(raw[:cut]))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = rd.Next()
	}
	if !errors.Is(err, vma.ErrIncomplete) {
		t.Fatalf("truncated at %d: got %v, want ErrIncomplete", cut, err)
	}
	t.Log(err)
}

package vma_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/formattest"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestOpenConformance: every device of archives in every cluster order
// reads through vma.Open exactly as its data, at any offset, in parallel,
// with an extent map that never calls stored data zero.
func TestOpenConformance(t *testing.T) {
	disks := []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 3158528, "mixed")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 540672, "data")},
		{Name: "drive-virtio1", Data: testutil.GenDisk(3, 1<<20, "zero")},
		{Name: "drive-sata0", Data: testutil.GenDisk(4, 5*vma.ClusterSize+4096+1000, "mixed")},
		{Name: vma.VMStateName, Data: testutil.GenDisk(5, 200000, "mixed")},
	}
	// Several seeds of "runs", so that some runs start with an all-zero
	// cluster right after another device's (as in Proxmox's case2).
	for _, order := range []string{"seq", "interleave", "runs/1", "runs/2", "runs/3", "runs/4", "shuffle"} {
		t.Run(order, func(t *testing.T) {
			disks := disks
			if order == "shuffle" {
				disks = disks[:len(disks)-1] // a vmstate stream is always in order
			}
			order, seed, _ := strings.Cut(order, "/")
			n, _ := strconv.Atoi(seed)
			raw := testutil.WriteArchive(t, disks, nil, order, uint64(n))
			a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Devices()) != len(disks) {
				t.Fatalf("%d devices, want %d", len(a.Devices()), len(disks))
			}
			for i, d := range a.Devices() {
				t.Run(d.Device().Name, func(t *testing.T) {
					formattest.TestSource(t, d, disks[i].Data)
				})
			}
		})
	}
}

// TestOpenGolden: Proxmox's archives read through vma.Open give every
// device's MANIFEST digest.
func TestOpenGolden(t *testing.T) {
	dir, m := testutil.LoadManifest(t)
	for name, want := range m {
		if filepath.Ext(name) != ".vma" {
			continue // compressed: read as a stream only
		}
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, wd := range want.Devices {
			d, ok := a.Device(wd.Name)
			if !ok {
				t.Fatalf("%s: no device %s", name, wd.Name)
			}
			b := make([]byte, d.Size())
			if n, err := d.ReadAt(b, 0); n != len(b) {
				t.Fatalf("%s %s: read %d: %v", name, wd.Name, n, err)
			}
			if got := sha(b); got != wd.SHA256 {
				t.Errorf("%s %s: sha256 %s, want %s", name, wd.Name, got, wd.SHA256)
			}
		}
	}
}

// TestOpenSameErrors: damaged archives fail through vma.Open with the
// error the stream reader gives, word for word.
func TestOpenSameErrors(t *testing.T) {
	good := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 4<<20, "mixed")},
		{Name: "drive-scsi1", Data: testutil.GenDisk(2, 1<<20, "data")},
	}, nil, "interleave", 0)
	hdr := 12800
	cases := map[string][]byte{
		"truncated mid-extent":   good[:len(good)-5000],
		"truncated at an extent": good[:hdr+512+0],
		"cut header":             good[:5000],
		"bad extent md5":         flip(good, hdr+100),
		"bad header md5":         flip(good, 200),
		"trailing garbage":       append(bytes.Clone(good), make([]byte, 600)...),
		"short trailing garbage": append(bytes.Clone(good), make([]byte, 100)...),
		"not vma":                []byte("QFI\xfbnot an archive at all, really"),
		"duplicate extent":       dupFirstExtent(t, good, hdr),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			_, oerr := vma.Open(bytes.NewReader(raw), int64(len(raw)))
			serr := streamErr(raw)
			if oerr == nil || serr == nil {
				t.Fatalf("Open: %v; stream: %v", oerr, serr)
			}
			if oerr.Error() != serr.Error() {
				t.Errorf("Open: %v\nstream: %v", oerr, serr)
			}
			var fe *vma.FormatError
			if !errors.As(oerr, &fe) {
				t.Errorf("Open's error is %T, not a *vma.FormatError", oerr)
			}
		})
	}
}

// streamErr reads raw to the end with the stream reader.
func streamErr(raw []byte) error {
	r, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	for {
		if _, err := r.NextExtent(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x40
	return c
}

// dupFirstExtent repeats the first extent at the end.
func dupFirstExtent(t *testing.T, raw []byte, hdr int) []byte {
	t.Helper()
	n := 512 + int(raw[hdr+6])<<8*4096 + int(raw[hdr+7])*4096
	return append(bytes.Clone(raw), raw[hdr:hdr+n]...)
}

// TestOpenIndexLimit: an archive whose clusters are scattered beyond the
// index limit fails with ErrIndexLimit, which says to read it as a stream.
func TestOpenIndexLimit(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(7, 8<<20, "data")}}, nil, "shuffle", 1)
	a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	limit := a.IndexBytes() / 2
	_, err = vma.Open(bytes.NewReader(raw), int64(len(raw)), vma.WithIndexLimit(limit))
	if !errors.Is(err, vma.ErrIndexLimit) || !errors.Is(err, format.ErrStreamOnly) {
		t.Fatalf("limit %d of %d: got %v", limit, a.IndexBytes(), err)
	}
}

// TestOpenIndexSize: the index of a disk in Proxmox's order costs one run
// per extent; masks only where clusters are partly stored.
func TestOpenIndexSize(t *testing.T) {
	for _, style := range []string{"data", "mixed", "zero"} {
		raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(8, 64<<20, style)}}, nil, "seq", 0)
		a, err := vma.Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		clusters := int64(64<<20) / vma.ClusterSize
		perCluster := float64(a.IndexBytes()) / float64(clusters)
		t.Logf("%s: %d bytes of index for %d clusters (%.2f a cluster)", style, a.IndexBytes(), clusters, perCluster)
		if perCluster > 2.6 {
			t.Errorf("%s: %.2f bytes of index a cluster; a 1 TiB disk would need %.0f MiB", style, perCluster, perCluster*(1<<24)/(1<<20))
		}
	}
}

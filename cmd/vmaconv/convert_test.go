package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// vmaconv runs the CLI in-process and fails the test unless it exits 0.
func vmaconv(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if st := run(context.Background(), args, nil, &stdout, &stderr); st != 0 {
		t.Fatalf("vmaconv %s: status %d: %s", strings.Join(args, " "), st, stderr.String())
	}
	return stdout.String()
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestOracleQemuImg: for qcow2 images of every kind, vmaconv IMG x.vma then
// vmaconv x.vma out.raw, and vmaconv IMG out.raw, must equal
// qemu-img convert -O raw IMG byte for byte.
func TestOracleQemuImg(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	at := func(name string) string { return filepath.Join(dir, name) }
	qimg := func(args ...string) { t.Helper(); testutil.Run(t, "qemu-img", args...) }
	write := func(name string, data []byte) string {
		t.Helper()
		if err := os.WriteFile(at(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return at(name)
	}
	mixed := write("mixed.raw", testutil.GenDisk(1, 6<<20, "mixed"))
	odd := write("odd.raw", testutil.GenDisk(2, 3<<20+7*512+100, "mixed")) // qemu-img pads it to 512
	qimg("convert", "-f", "raw", "-O", "qcow2", mixed, at("plain.qcow2"))
	qimg("convert", "-f", "raw", "-O", "qcow2", "-c", mixed, at("zlib.qcow2"))
	qimg("convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", mixed, at("zstd.qcow2"))
	qimg("convert", "-f", "raw", "-O", "qcow2", odd, at("odd.qcow2"))
	// Sparse: 16 MiB virtual in 4 KiB clusters, so 8 L2 tables, three
	// never allocated; a few MiB written, one block alone in its cluster.
	qimg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", at("sparse.qcow2"), "16M")
	testutil.Run(t, "qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x21 9M 64k", "-c", "write -P 0x33 12595200 4k",
		"-c", "write -P 0x7f 15M 1M", at("sparse.qcow2"))
	// Backing: top holds only what differs from base.
	changed := testutil.GenDisk(1, 6<<20, "mixed")
	copy(changed[2<<20:], testutil.GenDisk(3, 500000, "data"))
	clear(changed[4<<20 : 5<<20])
	write("changed.raw", changed)
	qimg("convert", "-f", "raw", "-O", "qcow2", "-B", "plain.qcow2", "-F", "qcow2", at("changed.raw"), at("top.qcow2"))

	for _, name := range []string{"plain", "zlib", "zstd", "odd", "sparse", "top"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each reads the images and writes its own files
			img := at(name + ".qcow2")
			ref := at(name + ".oracle.raw")
			qimg("convert", "-O", "raw", img, ref)
			want := fileSHA(t, ref)
			extra := []string{}
			if name == "top" {
				extra = append(extra, "--allow-backing")
			}
			arc := at(name + ".vma")
			vmaconv(t, append([]string{img, arc}, extra...)...)
			vmaconv(t, "verify", arc)
			out := at(name + ".restored.raw")
			vmaconv(t, arc, out)
			if got := fileSHA(t, out); got != want {
				t.Errorf("qcow2 -> vma -> raw: sha256 %s, qemu-img gives %s", got, want)
			}
			direct := at(name + ".direct.raw")
			vmaconv(t, append([]string{img, direct}, extra...)...)
			if got := fileSHA(t, direct); got != want {
				t.Errorf("qcow2 -> raw: sha256 %s, qemu-img gives %s", got, want)
			}
			for _, src := range [][]string{append([]string{"checksum", img}, extra...), {"checksum", arc}} {
				if got := vmaconv(t, src...); !strings.HasPrefix(got, want+"  ") {
					t.Errorf("vmaconv %s = %q, want %s", strings.Join(src, " "), got, want)
				}
			}
		})
	}

	// A raw source: in an archive its size is rounded up to 512 bytes as
	// QEMU does; converted to raw directly it keeps its size.
	t.Run("raw", func(t *testing.T) {
		t.Parallel()
		vmaconv(t, "-f", "raw", odd, at("odd-raw.vma"))
		info := vmaconv(t, "info", at("odd-raw.vma"))
		if !strings.Contains(info, "(3149824 bytes)") { // 3 MiB + 7·512 + 100, rounded up
			t.Errorf("info: %s", info)
		}
		vmaconv(t, at("odd-raw.vma"), at("odd-raw.out"))
		got, _ := os.ReadFile(at("odd-raw.out"))
		src, _ := os.ReadFile(odd)
		if len(got) != 3149824 || !bytes.Equal(got[:len(src)], src) || !testutil.AllZero(got[len(src):]) {
			t.Errorf("restored %d bytes; want the source padded with zeros to 3149824", len(got))
		}
		vmaconv(t, "-f", "raw", odd, at("odd-copy.raw"))
		if fileSHA(t, at("odd-copy.raw")) != fileSHA(t, odd) {
			t.Error("raw -> raw changed the content")
		}
	})
}

// TestWorkersIdentical: with a fixed UUID and ctime, -m 1 and -m 8 write
// the same archive, and create of several disks is deterministic too.
func TestWorkersIdentical(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := filepath.Join(dir, "d.raw")
	os.WriteFile(disk, testutil.GenDisk(9, 20<<20+4096, "mixed"), 0o644)
	efi := filepath.Join(dir, "efi.raw")
	os.WriteFile(efi, testutil.GenDisk(10, 540672, "mixed"), 0o644)
	fixed := []string{"--uuid", "6f1c2b9e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "--ctime", "1718000000", "-f", "raw"}
	var sums []string
	for _, m := range []string{"1", "2", "8"} {
		out := filepath.Join(dir, "m"+m+".vma")
		vmaconv(t, append([]string{"create", out, "drive-efidisk0=" + efi, "drive-scsi0=" + disk, "-m", m}, fixed...)...)
		sums = append(sums, fileSHA(t, out))
	}
	if sums[0] != sums[1] || sums[0] != sums[2] {
		t.Errorf("archives differ by worker count: %v", sums)
	}
}

// TestRestoreWorkers: restores give the same bytes with -m 1 and -m 4 (raw,
// qcow2, extract), and a sparse raw output takes on disk about what the
// archive stores, not the disk size (st_blocks).
func TestRestoreWorkers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	// 12 MiB, four VMA extents: -m 4 has them in flight at once.
	data := testutil.GenDisk(12, 12<<20, "mixed")
	clear(data[2<<20 : 10<<20]) // 8 MiB of zeros
	os.WriteFile(at("d.raw"), data, 0o644)
	arc := at("d.vma")
	vmaconv(t, "-f", "raw", at("d.raw"), arc)
	stored := int64(0)
	for off := 0; off < len(data); off += 4096 {
		if !testutil.AllZero(data[off : off+4096]) {
			stored += 4096
		}
	}
	for _, out := range []string{"raw", "qcow2"} {
		var sums []string
		for _, m := range []string{"1", "4"} {
			p := at("m" + m + "." + out)
			vmaconv(t, arc+":drive-scsi0", p, "-m", m)
			sums = append(sums, fileSHA(t, p))
			if out == "raw" {
				if b := blocks(t, p); b > stored+1<<20 {
					t.Errorf("-m %s: the sparse restore takes %d bytes on disk; the archive stores %d", m, b, stored)
				}
				if fileSHA(t, p) != fileSHA(t, at("d.raw")) {
					t.Errorf("-m %s: the restore differs from the disk", m)
				}
			}
		}
		if sums[0] != sums[1] {
			t.Errorf("%s restores differ between -m 1 and -m 4", out)
		}
	}
	for _, m := range []string{"1", "4"} {
		vmaconv(t, "extract", arc, at("x"+m), "-m", m)
	}
	if fileSHA(t, at("x1/disk-drive-scsi0.raw")) != fileSHA(t, at("x4/disk-drive-scsi0.raw")) {
		t.Error("extract differs between -m 1 and -m 4")
	}
}

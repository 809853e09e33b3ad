package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestServeImages: serve takes any input. An image's one disk is the
// export "disk" (also the default export, for a client that asks for no
// name), in whole 512-byte sectors as QEMU presents a raw file; qemu-img
// reads a served qcow2 image and a served raw file as the files
// themselves. -d names it; another name is refused.
func TestServeImages(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	disk := testutil.GenDisk(21, 1<<20+1000, "mixed")
	os.WriteFile(at("d.raw"), disk, 0o644)
	vmaconv(t, "-q", "-f", "raw", at("d.raw"), at("d.qcow2"), "--compress", "zlib")
	for i, img := range []string{at("d.qcow2"), at("d.raw")} {
		sock := at("s" + string(rune('0'+i)))
		uris := serving(t, img, "--socket", sock, "-d", "disk")
		uri := uris["disk"]
		if len(uris) != 1 || uri == "" {
			t.Fatalf("serve %s: %v", img, uris)
		}
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
		}
		if out := qemuImg(t, "info", "--output=json", uri); json.Unmarshal(out, &info) != nil || info.VirtualSize != (int64(len(disk))+511)&^511 {
			t.Errorf("qemu-img info of %s served: %s", filepath.Base(img), out)
		}
		qemuImg(t, "compare", img, uri)
		// The default export, as qemu-nbd gives its one export.
		qemuImg(t, "compare", img, strings.Replace(uri, "/disk?", "/?", 1))
	}
	var stderr bytes.Buffer
	if st := run(refusing(t), []string{"serve", at("d.qcow2"), "-d", "drive-scsi0", "--socket", at("x")}, nil, &bytes.Buffer{}, &stderr); st != 1 ||
		stderr.String() != "vmaconv: "+at("d.qcow2")+": no device \"drive-scsi0\" in the archive (devices: disk)\n" {
		t.Errorf("-d drive-scsi0 of an image: status %d, %q", st, stderr.String())
	}
}

// TestMountImage: mount takes any input: an image's one disk is
// DIR/disk.raw, a raw file's bytes in whole sectors, with the file's
// time.
func TestMountImage(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	disk := testutil.GenDisk(22, 1<<20+1000, "mixed")
	os.WriteFile(at("d.raw"), disk, 0o644)
	mnt := at("mnt")
	os.Mkdir(mnt, 0o755)
	stop := mounted(t, at("d.raw"), mnt)
	defer stop()
	es, err := os.ReadDir(mnt)
	if err != nil || len(es) != 1 || es[0].Name() != "disk.raw" {
		t.Fatalf("mounted: %v, %v", es, err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "disk.raw"))
	want := append(bytes.Clone(disk), make([]byte, 512-len(disk)%512)...)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("disk.raw: %d bytes, %v; want the disk's %d in whole sectors", len(got), err, len(want))
	}
	fi, err := os.Stat(filepath.Join(mnt, "disk.raw"))
	src, _ := os.Stat(at("d.raw"))
	if err != nil || !fi.ModTime().Equal(src.ModTime().Truncate(1e9)) && !fi.ModTime().Equal(src.ModTime()) {
		t.Errorf("disk.raw's time %v, want the image's %v", fi.ModTime(), src.ModTime())
	}
}

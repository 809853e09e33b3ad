package extract_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/extract"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/outfile"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// open writes an archive of the disks and configs and opens it as
// vmaconv's commands do.
func open(t *testing.T, disks []testutil.Disk, configs []format.Config, stream bool) *input.Input {
	t.Helper()
	path := filepath.Join(t.TempDir(), "a.vma")
	if err := os.WriteFile(path, testutil.WriteArchive(t, disks, configs, "seq", 0), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := input.Open(context.Background(), all.Registry(), format.Ref{Path: path}, input.Options{Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// TestExtract: files named by the archive's rules (a name sanitised, and
// said; the vmstate stream raw bytes in vmstate.bin whatever the disks'
// format), written in full before they are moved into place, and the
// disks' report; read at random and as a stream.
func TestExtract(t *testing.T) {
	disk := testutil.GenDisk(1, 3*vma.ClusterSize+4096, "mixed")
	state := testutil.GenDisk(2, 2*vma.ClusterSize, "data")
	disks := []testutil.Disk{{Name: "drive-scsi0", Data: disk}, {Name: vma.VMStateName, Data: state}}
	configs := []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}, {Name: "a b.conf", Data: []byte("x\n")}}
	qcow2, err := all.Registry().Lookup("qcow2")
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []bool{false, true} {
		in := open(t, disks, configs, stream)
		dir := filepath.Join(t.TempDir(), "out")
		var notes []string
		written := false
		res, err := extract.Extract(context.Background(), in, dir, extract.Options{Format: qcow2, Workers: 2,
			Note: func(msg string) { notes = append(notes, msg) },
			Written: func() {
				written = true
				if es, _ := os.ReadDir(dir); len(es) != 1 || !outfile.IsTempName(es[0].Name()) {
					t.Errorf("stream=%v: before the move, %s holds %v", stream, dir, es)
				}
			}})
		if err != nil {
			t.Fatalf("stream=%v: %v", stream, err)
		}
		var names []string
		for _, f := range res.Files {
			names = append(names, f.Name)
		}
		want := []string{"qemu-server.conf", "a_b.conf", "disk-drive-scsi0.qcow2", "vmstate.bin"}
		if !slices.Equal(names, want) || !written {
			t.Errorf("stream=%v: files %q (written called: %v), want %q", stream, names, written, want)
		}
		if !slices.Equal(notes, []string{`config "a b.conf" written as a_b.conf`}) {
			t.Errorf("stream=%v: notes %q", stream, notes)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "vmstate.bin")); !bytes.Equal(got, state) {
			t.Errorf("stream=%v: vmstate.bin is not the stream's raw bytes (%d bytes)", stream, len(got))
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "disk-drive-scsi0.qcow2")); !bytes.HasPrefix(got, []byte("QFI\xfb")) {
			t.Errorf("stream=%v: the disk is not a qcow2 image", stream)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "a_b.conf")); string(got) != "x\n" {
			t.Errorf("stream=%v: a_b.conf holds %q", stream, got)
		}
		if r := res.Report; r == nil || len(r.Disks) != 2 || r.Disks[0].Name != "drive-scsi0" || r.Disks[0].Size != int64(len(disk)) || r.Disks[0].Stored+r.Disks[0].Zero != int64(len(disk)) {
			t.Errorf("stream=%v: report %+v", stream, r)
		}
	}
}

// TestExtractRefuses: two files of one name, or a device the archive does
// not hold, are refused before anything is written, the target directory
// included.
func TestExtractRefuses(t *testing.T) {
	disks := []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(3, 8192, "data")}}
	in := open(t, disks, []format.Config{{Name: "disk-drive-scsi0.raw", Data: []byte("x\n")}}, false)
	dir := filepath.Join(t.TempDir(), "out")
	for _, tc := range []struct {
		name string
		o    extract.Options
		want string
	}{
		{"clash", extract.Options{}, "config disk-drive-scsi0.raw and device drive-scsi0 would both be written as disk-drive-scsi0.raw"},
		{"no such device", extract.Options{Disks: []string{"drive-scsi1"}}, `no device "drive-scsi1" in the archive (devices: drive-scsi0)`},
	} {
		_, err := extract.Extract(context.Background(), in, dir, tc.o)
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s: %s made", tc.name, dir)
		}
	}
}

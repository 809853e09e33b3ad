package vhdx

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// TestCreateOptions: -o takes qemu-img's vhdx options and rounds their
// values as qemu-img does (block and log sizes up to whole MiB, block
// sizes above 256 MiB down to it), refuses what qemu-img refuses, and the
// image written has the subformat, block size, log size and zero block
// state asked for, as qemu-img info and the BAT say.
func TestCreateOptions(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	data := testutil.GenDisk(4, 3<<20, "mixed")
	clear(data[2<<20:])
	for _, tc := range []struct {
		opts       string
		block, log int64
		fixed      bool
		empty      uint64 // the state of block 2 (zero in data)
		file       int64  // the file's size
	}{
		{"", 8 << 20, 1 << 20, false, blockZero, 16 << 20},
		{"block_size=1500K,log_size=1500K", 2 << 20, 2 << 20, false, blockZero, 0},
		{"block_size=300M", 256 << 20, 1 << 20, false, blockZero, 0},
		{"block_size=1M,block_state_zero=off", 1 << 20, 1 << 20, false, blockNotPresent, 0},
		{"subformat=fixed,block_size=1M", 1 << 20, 1 << 20, true, blockFullyPresent, 8<<20 + 3<<20},
		{"subformat=fixed,block_size=1M,block_state_zero=on", 1 << 20, 1 << 20, true, blockZero, 8<<20 + 3<<20},
	} {
		v, err := format.ParseOptions(Format, tc.opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.opts, err)
		}
		path := filepath.Join(dir, "o.vhdx")
		os.Remove(path)
		sink, err := Format.Create(format.Dest{Path: path, NoSync: true}, []format.Device{{Size: int64(len(data))}}, format.CreateOptions{Options: v})
		if err != nil {
			t.Fatalf("%s: %v", tc.opts, err)
		}
		w := sink.Disk(0)
		for off := int64(0); off < int64(len(data)); off += 1 << 20 {
			if _, err := w.WriteAt(data[off:off+1<<20], off); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Commit(); err != nil {
			t.Fatalf("%s: %v", tc.opts, err)
		}
		var qi struct {
			Cluster int64 `json:"cluster-size"`
		}
		qi.Cluster = tc.block
		if firstRun("options/" + tc.opts) {
			out, err := exec.Command("qemu-img", "info", "--output", "json", path).Output()
			if err != nil {
				t.Fatal(err)
			}
			json.Unmarshal(out, &qi)
		}
		l, read, fsize := fileLayout(t, path)
		e := binary.LittleEndian.Uint64(read(l.bat.off+16, 8)) // block 2 of 1 MiB: zeros only
		if qi.Cluster != tc.block || int64(l.head.logLength) != tc.log || l.fixed != tc.fixed || tc.block == 1<<20 && e&stateMask != tc.empty ||
			tc.file != 0 && fsize != tc.file {
			t.Errorf("%s: cluster size %d, log %d, fixed %v, block 2 %#x, file %d", tc.opts, qi.Cluster, l.head.logLength, l.fixed, e, fsize)
		}
	}
	for _, opts := range []string{"block_size=3M", "log_size=0", "log_size=4G", "subformat=static", "preallocation=full"} {
		if _, err := format.ParseOptions(Format, opts); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("-o %s: %v", opts, err)
		}
	}
	if h := format.OptionsHelp(Format); !strings.Contains(h, "block_size=<size>") || !strings.Contains(h, "subformat=<dynamic|fixed>") {
		t.Errorf("-o help:\n%s", h)
	}
}

// TestCreateRefusals: what a VHDX sink cannot do is a usage error, and
// leaves no file; Abort removes what was written.
func TestCreateRefusals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.vhdx")
	one := []format.Device{{Size: 1 << 20}}
	for name, tc := range map[string]struct {
		d     format.Dest
		disks []format.Device
		o     format.CreateOptions
	}{
		"stream":   {format.Dest{Path: path, Stream: &bytes.Buffer{}}, one, format.CreateOptions{}},
		"in place": {format.Dest{Path: path, InPlace: true}, one, format.CreateOptions{}},
		"two":      {format.Dest{Path: path}, []format.Device{{Size: 1}, {Size: 1}}, format.CreateOptions{}},
		"configs":  {format.Dest{Path: path}, one, format.CreateOptions{Configs: []format.Config{{Name: "a"}}}},
		"65 TiB":   {format.Dest{Path: path}, []format.Device{{Size: 65 << 40}}, format.CreateOptions{}},
	} {
		if _, err := Format.Create(tc.d, tc.disks, tc.o); !errors.Is(err, format.ErrUnsupportedOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	sink, err := Format.Create(format.Dest{Path: path}, one, format.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sink.Disk(0).WriteAt([]byte{1}, 0)
	if err := sink.Abort(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Abort left %v", ents)
	}
}

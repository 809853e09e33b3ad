package vma_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// create writes an archive of one zero disk per name with vma.Create, as
// o says, and returns its header and the notes.
func create(t *testing.T, d format.Dest, names []string, o format.CreateOptions) (*vma.Header, []string, error) {
	t.Helper()
	var notes []string
	o.Note = func(msg string) { notes = append(notes, msg) }
	var devs []format.Device
	for _, n := range names {
		devs = append(devs, format.Device{Name: n, Size: vma.ClusterSize})
	}
	var out bytes.Buffer
	if d.Path == "" {
		d = format.Dest{Path: "-", Stream: &out}
	}
	s, err := vma.Create(d, devs, o)
	if err != nil {
		return nil, notes, err
	}
	for i := range devs {
		if err := s.Disk(i).ZeroAt(0, vma.ClusterSize); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	raw := out.Bytes()
	if d.Stream == nil { // a directory: the archive is its one file
		es, err := os.ReadDir(d.Path)
		if err != nil || len(es) != 1 {
			t.Fatalf("%s holds %v (%v)", d.Path, es, err)
		}
		if raw, err = os.ReadFile(filepath.Join(d.Path, es[0].Name())); err != nil {
			t.Fatal(err)
		}
	}
	r, err := vma.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return r.Header(), notes, nil
}

// TestCreateRules: Create applies Proxmox's rules only when told where the
// disks come from (format.Origin): a minimal qemu-server.conf with map
// lines; a whole archive repacked into a file keeps its configs, noting
// what Proxmox would refuse; a backup into a directory is named after its
// source and dated by its ctime; names extract could not tell apart are a
// usage error.
func TestCreateRules(t *testing.T) {
	h, notes, err := create(t, format.Dest{}, []string{"drive-scsi0"}, format.CreateOptions{})
	if err != nil || len(h.Configs) != 0 || len(notes) != 0 {
		t.Errorf("without an origin: configs %v, notes %q (%v)", h.Configs, notes, err)
	}

	h, notes, err = create(t, format.Dest{}, []string{"drive-scsi0"}, format.CreateOptions{From: &format.Origin{}})
	conf, ok := h.Config(vma.ConfigName)
	if err != nil || !ok || !bytes.Contains(conf.Data, []byte("#qmdump#map:scsi0:drive-scsi0:::\n")) || !bytes.Contains(conf.Data, []byte("vm-100-disk-0")) ||
		len(notes) == 0 || !strings.HasPrefix(notes[0], "no qemu-server.conf given: wrote a minimal one for VM 100 (scsi0)") {
		t.Errorf("from images: config %q, notes %q (%v)", conf.Data, notes, err)
	}

	// An archive repacked whole into a file: its configs as they are.
	plain := []format.Config{{Name: vma.ConfigName, Data: []byte("memory: 512\n")}}
	whole := &format.Origin{Path: "src.vma", Archive: true, OwnConfigs: true, Whole: true}
	h, notes, err = create(t, format.Dest{}, []string{"drive-scsi0"}, format.CreateOptions{Configs: plain, From: whole})
	if conf, _ := h.Config(vma.ConfigName); err != nil || string(conf.Data) != "memory: 512\n" || len(notes) != 1 || !strings.Contains(notes[0], "the configs are kept as the source has them") {
		t.Errorf("repacked whole: config %q, notes %q (%v)", conf.Data, notes, err)
	}

	// Into a directory: named after the source, dated by its ctime, which
	// the header says too; the configs made restorable.
	dir := t.TempDir()
	src := &format.Origin{Path: "/x/vzdump-qemu-101-2020_01_01-00_00_00.vma", Archive: true, CTime: testutil.TestCTime, OwnConfigs: true, Whole: true}
	h, notes, err = create(t, format.Dest{Path: dir}, []string{"drive-scsi0"}, format.CreateOptions{Configs: plain, From: src})
	name := vma.ArchiveName(101, testutil.TestCTime.Local(), "")
	if es, _ := os.ReadDir(dir); err != nil || len(es) != 1 || es[0].Name() != name || !h.CTime.Equal(testutil.TestCTime) {
		t.Fatalf("into a directory: %v, want %s dated %v (%v)", es, name, testutil.TestCTime, err)
	}
	if conf, _ := h.Config(vma.ConfigName); !bytes.Contains(conf.Data, []byte("#qmdump#map:scsi0:drive-scsi0:::\n")) ||
		!slices.Contains(notes, name+": VMID 101 from the source's name, time from its ctime (in local time, as vzdump names backups), uncompressed as the source") {
		t.Errorf("into a directory: config %q, notes %q", conf.Data, notes)
	}

	clash := []format.Config{{Name: "drive-scsi0.raw", Data: []byte("x\n")}}
	if _, _, err := create(t, format.Dest{}, []string{"drive-scsi0"}, format.CreateOptions{Configs: clash, From: &format.Origin{}}); !errors.Is(err, format.ErrUnsupportedOption) ||
		!strings.Contains(err.Error(), "config drive-scsi0.raw and device drive-scsi0 would both be mounted as drive-scsi0.raw") {
		t.Errorf("names that clash: %v", err)
	}
}

// TestStreamReports: a stream verifies with its disks, digests, Proxmox's
// restore problems and name clashes; a failure says where; a salvaged
// stream says what it lost.
func TestStreamReports(t *testing.T) {
	data := testutil.GenDisk(5, 2*vma.ClusterSize, "data")
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: data}},
		[]format.Config{{Name: "disk-drive-scsi0.raw", Data: []byte("x\n")}}, "seq", 0)
	open := func(raw []byte) format.Stream {
		t.Helper()
		st, err := vma.OpenStream(bytes.NewReader(raw), format.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open(raw)
	if c, ok := st.(format.Created); !ok || !c.Created().Equal(testutil.TestCTime) {
		t.Errorf("Created: %v", ok)
	}
	rep, err := st.(format.Verifier).Verify(context.Background(), format.VerifyOptions{Path: "a.vma", Digest: true})
	sum := sha256.Sum256(data)
	if err != nil || len(rep.Disks) != 1 || !bytes.Equal(rep.Disks[0].SHA256, sum[:]) || rep.Disks[0].Stored != int64(len(data)) || rep.Bytes != int64(len(raw)) || rep.Records != 1 {
		t.Fatalf("Verify: %+v (%v)", rep, err)
	}
	if rep.Restorer != "Proxmox" || len(rep.Unrestorable) != 2 || !strings.HasPrefix(rep.Unrestorable[0], "no qemu-server.conf") || !strings.HasPrefix(rep.Unrestorable[1], "its name:") ||
		!slices.Equal(rep.NameClashes, []string{"config disk-drive-scsi0.raw and device drive-scsi0 would both be extracted as disk-drive-scsi0.raw"}) {
		t.Errorf("Verify: restore problems %q, clashes %q", rep.Unrestorable, rep.NameClashes)
	}
	if r := st.(format.Reporter).Report(); r == nil || len(r.Disks) != 1 || r.Disks[0].Stored != rep.Disks[0].Stored || r.Records != rep.Records {
		t.Errorf("Report after Verify: %+v", r)
	}

	cut := raw[:len(raw)-vma.ClusterSize]
	_, err = open(cut).(format.Verifier).Verify(context.Background(), format.VerifyOptions{Path: "-"})
	var l format.Located
	if !errors.As(err, &l) || l.Location().Offset <= 0 {
		t.Errorf("a cut archive: %v", err)
	}
	st = open(cut)
	st.(format.Salvager).Salvage()
	if err := st.Read(context.Background(), format.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if s := st.(format.Salvager).Salvaged(); s.DamagedRanges != 1 || !slices.Equal(s.Lost, []string{"drive-scsi0: 1 of 2 clusters, written as zeros: 1-1 (bytes 65536-131071)"}) {
		t.Errorf("salvaged: %+v", s)
	}
}

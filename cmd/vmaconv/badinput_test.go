package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// badArchives builds hostile and damaged archives from a valid one with
// three extents: device 1 "drive-scsi0" (130 clusters of data), device 2
// "drive-efidisk0" (2 clusters).
type badArchive struct {
	raw  []byte
	want string   // substring of the one error line
	cmds []string // commands to try (default: verify, extract, convert)
}

func badArchives(t *testing.T) map[string]badArchive {
	good := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 130*vma.ClusterSize, "data")},
		{Name: "drive-efidisk0", Data: testutil.GenDisk(2, 2*vma.ClusterSize, "mixed")},
	}, []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 1\n")}}, "seq", 0)
	hs := int(binary.BigEndian.Uint32(good[56:]))
	// Extent boundaries.
	var ext []int
	for off := hs; off < len(good); {
		ext = append(ext, off)
		off += 512 + int(binary.BigEndian.Uint16(good[off+6:]))*4096
	}
	hdr := func(f func(h []byte)) []byte {
		b := bytes.Clone(good)
		f(b[:hs])
		testutil.FixHeaderMD5(b[:hs])
		return b
	}
	extHdr := func(i int, f func(e []byte)) []byte {
		b := bytes.Clone(good)
		f(b[ext[i] : ext[i]+512])
		testutil.FixExtentMD5(b[ext[i] : ext[i]+512])
		return b
	}
	flip := func(off int) []byte { b := bytes.Clone(good); b[off] ^= 0x04; return b }
	be := binary.BigEndian
	id := testutil.TestUUID
	onlyHeader := good[:hs]
	blob := func(h []byte, s string) uint32 { return uint32(bytes.Index(h[12288:], []byte(s)) - 2) }
	var missing []uint64 // every cluster but drive-efidisk0's second, no data
	for c := range uint32(130) {
		missing = append(missing, testutil.Slot(0, 1, c))
	}
	missing = append(missing, testutil.Slot(0, 2, 0))
	var missingRaw []byte
	missingRaw = append(missingRaw, onlyHeader...)
	for i := 0; i < len(missing); i += 58 {
		missingRaw = append(missingRaw, testutil.Extent(id, missing[i:min(i+58, len(missing))]...)...)
	}
	cases := map[string]badArchive{
		"truncated in the header":           {good[:5000], "truncated header: got 5000 of 12288 bytes (byte offset 5000)", nil},
		"truncated after the header":        {onlyHeader, "clusters missing", nil},
		"truncated in an extent header":     {good[:ext[1]+100], fmt.Sprintf("truncated extent header: 100 of 512 bytes after the last extent (byte offset %d)", ext[1]), nil},
		"truncated between extents":         {good[:ext[2]], "drive-scsi0: 14 of 130 clusters missing (116-129)", nil},
		"truncated in extent data":          {good[:ext[1]+4096], "extent 1: truncated: 3584 of", nil},
		"bit flip in the header":            {flip(4200), "header MD5 mismatch", nil},
		"bit flip in an extent header":      {flip(ext[1] + 7), "extent 1: header MD5 mismatch", nil},
		"bit flip in blockinfo":             {flip(ext[0] + 40 + 8*3 + 3), "extent 0: header MD5 mismatch", nil},
		"block count changed":               {extHdr(0, func(e []byte) { be.PutUint16(e[6:], be.Uint16(e[6:])-1) }), "extent 0: block count", nil},
		"wrong extent UUID":                 {extHdr(1, func(e []byte) { e[9] ^= 1 }), "extent 1: UUID", nil},
		"header_size huge":                  {hdr(func(h []byte) { be.PutUint32(h[56:], 0xfffffe00) }), "header size 4294966784 exceeds the limit", nil},
		"header_size too small":             {hdr(func(h []byte) { be.PutUint32(h[56:], 12288) }), "header size 12288 is not larger than 12288", nil},
		"blob pointer out of range":         {hdr(func(h []byte) { be.PutUint32(h[4096+32:], 0x7fffffff) }), "device 1: name pointer 2147483647 is not a NUL-terminated blob", nil},
		"blob pointer mid-blob":             {hdr(func(h []byte) { be.PutUint32(h[4096+32:], blob(h, "drive-scsi0")+4) }), "device 1: name pointer", nil},
		"device name without NUL":           {hdr(func(h []byte) { h[12288+int(blob(h, "drive-scsi0"))+2+11] = 'x' }), "not a NUL-terminated blob", nil},
		"device 255":                        {hdr(func(h []byte) { copy(h[4096+255*32:], h[4096+32:4096+64]) }), "device id 255 is reserved", nil},
		"unknown device id in a slot":       {extHdr(0, func(e []byte) { e[40+3] = 9 }), "unknown device id 9", nil},
		"device id 255 in a slot":           {extHdr(0, func(e []byte) { e[40+3] = 255 }), "unknown device id 255", nil},
		"cluster beyond the device":         {extHdr(0, func(e []byte) { be.PutUint32(e[40+4:], 130) }), "cluster beyond the end of the device (130 clusters) (device drive-scsi0, cluster 130", nil},
		"duplicate cluster":                 {append(bytes.Clone(good), testutil.Extent(id, testutil.Slot(0, 2, 1))...), "duplicate cluster (device drive-efidisk0, cluster 1", nil},
		"missing cluster":                   {missingRaw, "drive-efidisk0: 1 of 2 clusters missing (1)", nil},
		"trailing garbage":                  {append(bytes.Clone(good), []byte("garbage")...), "truncated extent header: 7 of 512 bytes", nil},
		"trailing zero sector":              {append(bytes.Clone(good), make([]byte, 512)...), "extent 3: header MD5 mismatch", nil},
		"not an archive":                    {bytes.Repeat([]byte("hello\n"), 5000), "not a VMA archive", []string{"verify", "extract"}},
		"clusters scattered to exhaust RAM": {scattered(t), "too many clusters out of order to track", []string{"verify"}},
	}
	return cases
}

// scattered is an archive with a 256 TiB device whose clusters each touch
// a new 4096-cluster tracking page.
func scattered(t *testing.T) []byte {
	var hb bytes.Buffer
	w := vma.NewWriter(&hb, vma.WithUUID(testutil.TestUUID))
	d, _ := w.AddDevice("huge", vma.MaxClusters*vma.ClusterSize)
	for c := range int64(59) {
		w.WriteCluster(d, c, nil)
	}
	w.Flush()
	var b bytes.Buffer
	b.Write(hb.Bytes()[:12800])
	var slots []uint64
	for p := uint32(0); p < 1<<16+10; p++ {
		slots = append(slots, testutil.Slot(0, 1, p*4096+1))
		if len(slots) == 59 {
			b.Write(testutil.Extent(testutil.TestUUID, slots...))
			slots = slots[:0]
		}
	}
	b.Write(testutil.Extent(testutil.TestUUID, slots...))
	return b.Bytes()
}

func TestBadInputs(t *testing.T) { // not parallel: it counts the process's allocations
	for name, tc := range badArchives(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			arc := filepath.Join(dir, "bad.vma")
			if err := os.WriteFile(arc, tc.raw, 0o644); err != nil {
				t.Fatal(err)
			}
			before := listTree(t, dir)
			cmds := map[string][]string{
				"verify":  {"verify", arc},
				"extract": {"extract", arc, filepath.Join(dir, "out")},
				"convert": {arc + ":drive-efidisk0", filepath.Join(dir, "efi.raw")},
			}
			names := tc.cmds
			if names == nil {
				names = []string{"verify", "extract", "convert"}
			}
			for _, cmd := range names {
				args := cmds[cmd]
				var stdout, stderr bytes.Buffer
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				st := run(context.Background(), args, nil, &stdout, &stderr)
				runtime.ReadMemStats(&m1)
				msg := stderr.String()
				if st != 1 {
					t.Errorf("%s: status %d, want 1 (%q)", args[0], st, msg)
				}
				if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "vmaconv: ") {
					t.Errorf("%s: want one error line, got %q", args[0], msg)
				}
				if !strings.Contains(msg, tc.want) {
					t.Errorf("%s: %q does not say %q", args[0], msg, tc.want)
				}
				if !strings.Contains(msg, "byte offset") {
					t.Errorf("%s: %q does not say where", args[0], msg)
				}
				if a := m1.TotalAlloc - m0.TotalAlloc; a > 256<<20 {
					t.Errorf("%s: allocated %d MiB", args[0], a>>20)
				}
				if after := listTree(t, dir); !slices.Equal(after, before) {
					t.Errorf("%s left files behind: %v", args[0], after)
				}
			}
		})
	}
}

// listTree lists every path below dir.
func listTree(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return out
}

// runFails runs the CLI and checks it fails with one line mentioning want,
// leaving dir as it was.
func runFails(t *testing.T, dir, want string, args ...string) {
	t.Helper()
	before := listTree(t, dir)
	var stdout, stderr bytes.Buffer
	st := run(context.Background(), args, nil, &stdout, &stderr)
	msg := stderr.String()
	if st == 0 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, want) {
		t.Errorf("vmaconv %s: status %d, %q; want one line saying %q", args[0], st, msg, want)
	}
	if after := listTree(t, dir); !slices.Equal(after, before) {
		t.Errorf("vmaconv %s left files behind: %v", args[0], after)
	}
}

func TestBadWrites(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	os.WriteFile(img, make([]byte, 4096), 0o644)
	conf := filepath.Join(dir, "c.conf")
	os.WriteFile(conf, []byte("x\n"), 0o644)
	args := []string{"create", "-f", "raw", filepath.Join(dir, "many.vma")}
	for i := range vma.MaxDevices + 1 {
		args = append(args, fmt.Sprintf("drive-scsi%d=%s", i, img))
	}
	// Proxmox has 59 disk keys: the writer's limit of 254 devices is out of
	// the CLI's reach (format/vma tests it); a name past them is refused.
	runFails(t, dir, `device name "drive-scsi31" is not a Proxmox disk`, args...)
	args = []string{"-f", "raw", img, filepath.Join(dir, "cfg.vma")}
	for i := range vma.MaxConfigs + 1 {
		args = append(args, "-c", fmt.Sprintf("c%d.conf=%s", i, conf)) // distinct names: one given twice is refused first
	}
	runFails(t, dir, "too many configs (at most 256)", args...)
	big := filepath.Join(dir, "big.conf")
	os.WriteFile(big, make([]byte, vma.MaxBlobSize+1), 0o644)
	runFails(t, dir, "a config file holds at most 65535 bytes", "-f", "raw", img, filepath.Join(dir, "big.vma"), "-c", big)
}

func TestBadImages(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", at("ok.qcow2"), "1M")
	b, _ := os.ReadFile(at("ok.qcow2"))
	binary.BigEndian.PutUint32(b[36:], 0x7fffffff) // l1_size: 16 GiB of L1 table
	os.WriteFile(at("l1.qcow2"), b, 0o644)
	os.WriteFile(at("badbase.qcow2"), append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 100)...), 0o644)
	testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "badbase.qcow2", "-F", "qcow2", at("badtop.qcow2"), "1M")
	os.MkdirAll(at("sub"), 0o755)
	testutil.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "../ok.qcow2", "-F", "qcow2", at("sub/outside.qcow2"))
	out := at("out.vma")
	runFails(t, dir, "l1_size 2147483647: an L1 table of 16383 MiB (qemu's limit is 32 MiB)", at("l1.qcow2"), out)
	runFails(t, dir, "cluster_bits 0: unsupported cluster size", "--allow-backing", at("badtop.qcow2"), out)
	runFails(t, dir, `image has backing file "../ok.qcow2"; pass --allow-backing to read it`, at("sub/outside.qcow2"), out)
	// With -f raw nothing is probed: the qcow2 file is converted as bytes.
	// The hash is that of the file's bytes exactly, as sha256sum gives it
	// (a note says an archive would round the disk up to whole sectors).
	var stdout, stderr bytes.Buffer
	if st := run(context.Background(), []string{"checksum", "-f", "raw", at("l1.qcow2")}, nil, &stdout, &stderr); st != 0 {
		t.Errorf("-f raw on a qcow2 file: %s", stderr.String())
	}
	raw, _ := os.ReadFile(at("l1.qcow2"))
	sum := sha256.Sum256(raw)
	if want := hex.EncodeToString(sum[:]) + "  " + at("l1.qcow2") + "\n"; stdout.String() != want {
		t.Errorf("-f raw on a qcow2 file: %q, want %q", stdout.String(), want)
	}
}

func TestSalvageCLI(t *testing.T) {
	data := testutil.GenDisk(5, 150*vma.ClusterSize, "data")
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: data}}, []format.Config{{Name: "qemu-server.conf", Data: []byte("x\n")}}, "seq", 0)
	ext1 := 12800 + 512 + 58*vma.ClusterSize // second extent
	raw[ext1+200] ^= 0xff
	dir := t.TempDir()
	arc := filepath.Join(dir, "damaged.vma")
	os.WriteFile(arc, raw, 0o644)
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	if st := run(context.Background(), []string{"extract", "--salvage", arc, out}, nil, &stdout, &stderr); st != exitIncomplete {
		t.Fatalf("status %d, want %d: %s", st, exitIncomplete, stderr.String())
	}
	want := fmt.Sprintf("vmaconv: damaged: bytes %d-%d (%d bytes) skipped: vma: extent 1: header MD5 mismatch", ext1, ext1+512+58*vma.ClusterSize-1, 512+58*vma.ClusterSize)
	if !strings.HasPrefix(stderr.String(), want) || !strings.Contains(stderr.String(), "vmaconv: lost: drive-scsi0: 58 of 150 clusters, written as zeros: 58-115 (bytes 3801088-7602175)\n") {
		t.Errorf("report:\n%s", stderr.String())
	}
	got, err := os.ReadFile(filepath.Join(out, "disk-drive-scsi0.raw"))
	if err != nil {
		t.Fatal(err)
	}
	clear(data[58*vma.ClusterSize : 116*vma.ClusterSize])
	if !bytes.Equal(got, data) {
		t.Error("salvaged disk differs from the intact parts of the original")
	}
}

// TestInflatedVMState: an archive of a few KB whose vmstate stream
// declares 256 TiB but stores 4 clusters makes no command zero-fill the
// rest (39 hours of hashing): every way of reading that stream's content
// refuses it at once with one line, and whatever does not need the
// content (verify, info, the disk beside it) works.
func TestInflatedVMState(t *testing.T) {
	raw := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 65536, "data")},
		{Name: vma.VMStateName, Data: testutil.GenDisk(2, 200000, "mixed")},
	}, nil, "seq", 0)
	hs := int(binary.BigEndian.Uint32(raw[56:]))
	binary.BigEndian.PutUint64(raw[4096+2*32+8:], vma.MaxClusters*vma.ClusterSize) // device 2's size
	testutil.FixHeaderMD5(raw[:hs])
	dir := t.TempDir()
	arc := filepath.Join(dir, "bomb.vma")
	if err := os.WriteFile(arc, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	const want = "the archive stores 262144 of the 281474976710656 bytes the vmstate stream declares; refusing to make up the other 281474976448512 as zeros"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a guard against a hang, not a speed test
	defer cancel()
	for _, args := range [][]string{
		{"verify", "--digest", arc},
		{"checksum", arc + ":vmstate"},
		{"checksum", "-", ":vmstate"},
		{arc + ":vmstate", "-"},
		{"--", "-:vmstate", "-"},
		{arc + ":vmstate", filepath.Join(dir, "vmstate.qcow2")},
		{"extract", arc, filepath.Join(dir, "out")},
	} {
		if args[1] == "-" && args[0] == "checksum" {
			args = []string{"checksum", "--", "-:vmstate"}
		}
		var stdout, stderr bytes.Buffer
		st := run(ctx, args, bytes.NewReader(raw), &stdout, &stderr)
		msg := stderr.String()
		if st != 1 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, want) {
			t.Errorf("vmaconv %v: status %d, %q; want one line saying %q", args, st, msg, want)
		}
		if stdout.Len() > 1<<20 {
			t.Errorf("vmaconv %v wrote %d bytes", args, stdout.Len())
		}
	}
	for _, args := range [][]string{{"verify", arc}, {"info", arc}, {"checksum", arc + ":drive-scsi0"}, {"extract", "-d", "drive-scsi0", arc, filepath.Join(dir, "disk")}} {
		var stdout, stderr bytes.Buffer
		if st := run(ctx, args, nil, &stdout, &stderr); st != 0 {
			t.Errorf("vmaconv %v: status %d: %s", args, st, stderr.String())
		}
	}
}

// TestWorkersMemory: memory does not grow with -m: the buffers in flight
// are bounded in all, whatever the number of workers. With -m 1024 a run
// allocates about 60 MiB (pipeline.MaxInFlight's 48 MiB of buffers and
// more), the zstd qcow2 output some 1.5 times the disk's 8 MiB on top;
// buffers per worker would be a GiB, made up front whatever the disk's
// size.
func TestWorkersMemory(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(at("d.raw"), testutil.GenDisk(1, 8<<20, "mixed"), 0o644)
	vmaconv(t, "-f", "raw", at("d.raw"), at("d.vma"))
	for _, args := range [][]string{
		{"-f", "raw", at("d.raw"), at("a.vma")},
		{at("d.vma"), at("b.raw")},
		{at("d.vma"), at("c.qcow2"), "--compress", "zstd"},
		{"checksum", at("d.vma")},
		{"checksum", "-f", "raw", at("d.raw")},
	} {
		for _, m := range []string{"1", "1024"} {
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			vmaconv(t, append(args, "-m", m)...)
			runtime.ReadMemStats(&m1)
			if a := m1.TotalAlloc - m0.TotalAlloc; a > 112<<20 {
				t.Errorf("vmaconv %v -m %s allocated %d MiB", args, m, a>>20)
			}
			for _, f := range []string{"a.vma", "b.raw", "c.qcow2"} {
				os.Remove(at(f))
			}
		}
	}
}

// TestConcurrentOutputs: two runs writing the same new destination at
// once never both succeed, and never mix: one gets the destination
// whole, the other fails saying why and leaves nothing.
func TestConcurrentOutputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	arc := filepath.Join(dir, "m.vma")
	os.WriteFile(arc, testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 6<<20, "data")},
		{Name: "drive-scsi1", Data: testutil.GenDisk(2, 2<<20, "data")},
	}, []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 1\n")}}, "seq", 0), 0o644)
	for round := range 5 {
		for _, args := range [][]string{
			{"extract", arc, filepath.Join(dir, fmt.Sprint("x", round))},
			{arc + ":drive-scsi0", filepath.Join(dir, fmt.Sprint("c", round, ".raw"))},
		} {
			var wg sync.WaitGroup
			st := make([]int, 2)
			msg := make([]string, 2)
			for i := range 2 {
				wg.Go(func() {
					var stdout, stderr bytes.Buffer
					st[i] = run(context.Background(), args, nil, &stdout, &stderr)
					msg[i] = stderr.String()
				})
			}
			wg.Wait()
			if ok := (st[0] == 0) != (st[1] == 0); !ok {
				t.Fatalf("vmaconv %v twice at once: statuses %v (%q)", args, st, msg)
			}
		}
		got := listTree(t, filepath.Join(dir, fmt.Sprint("x", round)))
		if want := []string{"", "/disk-drive-scsi0.raw", "/disk-drive-scsi1.raw", "/qemu-server.conf"}; !slices.Equal(got, want) {
			t.Errorf("round %d: the directory holds %v", round, got)
		}
		if sum := fileSHA(t, filepath.Join(dir, fmt.Sprint("x", round), "disk-drive-scsi0.raw")); sum != fileSHA(t, filepath.Join(dir, fmt.Sprint("c", round, ".raw"))) {
			t.Errorf("round %d: the outputs differ", round)
		}
	}
	for _, e := range listTree(t, dir) {
		if strings.Contains(e, ".vmaconv-") {
			t.Errorf("left behind: %s", e)
		}
	}
}

// TestShortVMState: a vmstate stream that stores less than it declares
// (Proxmox has no completeness rule for it), by less than the bound, is
// restored at its declared size: what is stored as stored, the rest
// zeros; verify and checksum agree with the file extract writes.
func TestShortVMState(t *testing.T) {
	state := testutil.GenDisk(2, 200000, "data")
	raw := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 65536, "data")},
		{Name: vma.VMStateName, Data: state},
	}, nil, "seq", 0)
	hs := int(binary.BigEndian.Uint32(raw[56:]))
	const declared = 3 << 20 // stores 4 clusters (262144 bytes)
	binary.BigEndian.PutUint64(raw[4096+2*32+8:], declared)
	testutil.FixHeaderMD5(raw[:hs])
	dir := t.TempDir()
	arc := filepath.Join(dir, "short.vma")
	os.WriteFile(arc, raw, 0o644)
	vmaconv(t, "extract", arc, filepath.Join(dir, "out"))
	got, err := os.ReadFile(filepath.Join(dir, "out", "vmstate.bin"))
	want := append(append([]byte(nil), state...), make([]byte, declared-len(state))...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("vmstate.bin: %d bytes (%v), want the %d stored then zeros to %d", len(got), err, len(state), declared)
	}
	sum := sha256.Sum256(want)
	if out := vmaconv(t, "checksum", arc+":vmstate"); !strings.HasPrefix(out, hex.EncodeToString(sum[:])) {
		t.Errorf("checksum of the vmstate stream: %q", out)
	}
	vmaconv(t, "verify", arc)
	// Streamed (the archive on stdin, the stream to stdout) it is the same.
	var stdout, stderr bytes.Buffer
	if st := run(context.Background(), []string{"--", "-:vmstate", "-"}, bytes.NewReader(raw), &stdout, &stderr); st != 0 || !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("vmstate streamed: status %d, %d bytes (%s), want %d", st, stdout.Len(), stderr.String(), len(want))
	}
}

// TestSalvageShiftCLI: bytes inserted into an extent's data are reported:
// the skipped range, and a warning naming the clusters that may be shifted.
func TestSalvageShiftCLI(t *testing.T) {
	data := testutil.GenDisk(5, 150*vma.ClusterSize, "data")
	raw := testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: data}}, []format.Config{{Name: "qemu-server.conf", Data: []byte("x\n")}}, "seq", 0)
	ext1 := 12800 + 512 + 58*vma.ClusterSize // second extent: clusters 58-115
	at := ext1 + 512 + 1000
	raw = slices.Concat(raw[:at], []byte("xyz"), raw[at:])
	dir := t.TempDir()
	arc := filepath.Join(dir, "shifted.vma")
	os.WriteFile(arc, raw, 0o644)
	var stderr bytes.Buffer
	if st := run(context.Background(), []string{"extract", "--salvage", arc, filepath.Join(dir, "out")}, nil, &bytes.Buffer{}, &stderr); st != exitIncomplete {
		t.Fatalf("status %d, want %d: %s", st, exitIncomplete, stderr.String())
	}
	next := ext1 + 512 + 58*vma.ClusterSize
	for _, want := range []string{
		fmt.Sprintf("vmaconv: damaged: bytes %d-%d (3 bytes) skipped: vma: extent 2: ", next, next+2),
		fmt.Sprintf("vmaconv: warning: the extent at byte %d is followed by 3 unexpected bytes: if they were inserted into its data, drive-scsi0 clusters 58-115 (bytes 3801088-7602175) hold shifted data", ext1),
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stderr.String())
		}
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vma"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

var updateExample = flag.Bool("update-example", false, "rewrite the shipped example archive")

func TestMain(m *testing.M) {
	// A binary built with -race sleeps a second when it exits
	// (atexit_sleep_ms), for reports from goroutines still running: the
	// vmaconv commands these tests start would pay it hundreds of times.
	// Races are reported all the same.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if filepath.Base(os.Args[0]) != "vmaconv" { // go test's run, not a command of a script
		// Most of these tests wait on the processes they start (vmaconv,
		// qemu-img, shells): run twice as many at once as there are CPUs,
		// unless -parallel says otherwise.
		flag.Parse()
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
		if !set {
			flag.Set("test.parallel", strconv.Itoa(2*runtime.GOMAXPROCS(0)))
		}
	}
	testscript.Main(privateCache{m}, map[string]func(){"vmaconv": main})
}

// privateCache runs the tests with a cache directory of their own
// (XDG_CACHE_HOME), removed afterwards: what the CLI run in process
// decompresses for reading at random never lands in the user's cache, and
// no test needs to set the variable itself (which would keep it from
// running in parallel).
type privateCache struct{ m *testing.M }

func (p privateCache) Run() int {
	dir, err := os.MkdirTemp("", "vmaconv-test-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_CACHE_HOME", dir)
	return p.m.Run()
}

// scriptsRan is set once TestScripts has run in this process.
var scriptsRan atomic.Bool

// TestScripts runs the CLI golden tests in testdata/script. They run once
// per process: every vmaconv command in them is a process of its own,
// which -cpu (GOMAXPROCS in the test process only) does not reach, so a
// second -cpu pass would run the same commands the same way again.
func TestScripts(t *testing.T) {
	if scriptsRan.Swap(true) {
		t.Skip("the scripts ran in the first -cpu pass: their commands are processes of their own, which -cpu does not reach")
	}
	t.Parallel()
	golden, _ := testutil.FindGolden(t)
	root := testutil.ModuleRoot(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("GOLDEN", golden)
			env.Setenv("EXAMPLES", filepath.Join(root, "examples"))
			env.Setenv("TZ", "UTC")
			env.Setenv("GORACE", os.Getenv("GORACE")) // see TestMain
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "golden":
				return golden != "", nil
			case "qemu", "lzop", "zsh", "fish", "script", "sh", "mkfifo", "mkfs": // tools CI has or installs; a test fails under CI without them
				tool := map[string]string{"qemu": "qemu-img", "lzop": "lzop", "zsh": "zsh", "fish": "fish", "script": "script", "sh": "sh", "mkfifo": "mkfifo", "mkfs": "mkfs.ext4"}[cond]
				_, err := exec.LookPath(tool)
				if err != nil && os.Getenv("CI") == "true" {
					return false, fmt.Errorf("%s not found under CI (.ci/run installs it): %v", tool, err)
				}
				return err == nil, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"genvma":   genvma,
			"sha256":   sha256Cmd,
			"cut":      cutCmd,
			"salvaged": salvagedCmd,
			"flip":     flipCmd,
			"gendisk":  gendiskCmd,
			// Object stores on loopback (remote_test.go).
			"s3serve":   s3serveCmd,
			"s3put":     s3putCmd,
			"s3get":     s3getCmd,
			"s3uploads": s3uploadsCmd,
			"httpserve": httpserveCmd,
			"httpput":   httpputCmd,
		},
	})
}

// gendisk SEED SIZE KIND FILE [KEEP] writes testutil.GenDisk(SEED, SIZE,
// KIND) to FILE, with every byte from KEEP on zero: what a salvage of the
// disk's archive cut at KEEP must give back.
func gendiskCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 4 || len(args) > 5 {
		ts.Fatalf("usage: gendisk SEED SIZE KIND FILE [KEEP]")
	}
	seed, err1 := strconv.ParseUint(args[0], 10, 64)
	size, err2 := strconv.ParseInt(args[1], 10, 64)
	if err1 != nil || err2 != nil {
		ts.Fatalf("gendisk: bad seed or size")
	}
	b := testutil.GenDisk(seed, size, args[2])
	if len(args) == 5 {
		keep, err := strconv.ParseInt(args[4], 10, 64)
		if err != nil || keep > size {
			ts.Fatalf("gendisk: bad KEEP %q", args[4])
		}
		clear(b[keep:])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[3]), b, 0o644))
}

// genvma KIND FILE writes a generated archive.
func genvma(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: genvma KIND FILE")
	}
	t := tsT{ts}
	conf := []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}
	var raw []byte
	switch args[0] {
	case "example":
		raw = testutil.ExampleArchive(t)
	case "mixed":
		raw = testutil.WriteArchive(t, []testutil.Disk{
			{Name: "drive-scsi0", Data: testutil.GenDisk(1, 1<<20+4096, "mixed")},
			{Name: "drive-virtio1", Data: testutil.GenDisk(2, 300000, "data")},
		}, conf, "interleave", 0)
	case "truncated": // cut after the first of three extents
		raw = testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(3, 8<<20, "data")}}, conf, "seq", 0)
		raw = raw[:12800+512+58*vma.ClusterSize]
	case "shuffled":
		raw = testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(4, 4<<20, "mixed")}}, conf, "shuffle", 1)
	case "vmstate":
		raw = testutil.WriteArchive(t, []testutil.Disk{
			{Name: "drive-scsi0", Data: testutil.GenDisk(5, 65536, "data")},
			{Name: vma.VMStateName, Data: testutil.GenDisk(6, 200000, "mixed")},
		}, conf, "seq", 0)
	case "hostile": // names that try to leave the target directory
		raw = testutil.WriteArchive(t, []testutil.Disk{{Name: "..X..Xdisk", Data: testutil.GenDisk(7, 8192, "data")}},
			[]format.Config{{Name: "..Xescape.conf", Data: []byte("x\n")}, {Name: ".hidden", Data: []byte("y\n")}}, "seq", 0)
		raw = testutil.PatchName(t, raw, "..Xescape.conf", "../escape.conf")
		raw = testutil.PatchName(t, raw, "..X..Xdisk", "../../disk")
	case "minctime": // a ctime no calendar holds
		raw = testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(1, 65536, "data")}}, conf, "seq", 0)
		hs := int(binary.BigEndian.Uint32(raw[56:]))
		binary.BigEndian.PutUint64(raw[24:], 1<<63)
		testutil.FixHeaderMD5(raw[:hs])
	case "big": // 8 MiB of incompressible data in three extents
		raw = testutil.WriteArchive(t, []testutil.Disk{{Name: "drive-scsi0", Data: testutil.GenDisk(3, 8<<20, "data")}}, conf, "seq", 0)
	case "forge", "forgecut": // names that try to forge output lines and drive the terminal
		raw = testutil.WriteArchive(t, []testutil.Disk{
			{Name: "drive-scsi0\nvmaconv: ok\x1b]0;pwned\x07\x1b[2J", Data: testutil.GenDisk(8, 2*vma.ClusterSize, "data")},
			{Name: "drive-scsi1", Data: testutil.GenDisk(9, 65536, "data")},
		}, []format.Config{{Name: "qemu-server.conf\n\x1b[31mred", Data: []byte("x\n")}}, "seq", 0)
		if args[0] == "forgecut" { // cut after the first cluster's data: clusters missing
			rd, err := vma.NewReader(bytes.NewReader(raw))
			ts.Check(err)
			raw = raw[:rd.Header().Size+512+vma.ClusterSize]
		}
	case "collide": // two configs that sanitise to the same file name
		raw = testutil.WriteArchive(t, nil, []format.Config{{Name: "aXb", Data: []byte("1")}, {Name: "a_b", Data: []byte("2")}}, "seq", 0)
		raw = testutil.PatchName(t, raw, "aXb", "a/b")
	case "clashes": // made elsewhere: map lines and file names that clash
		raw = testutil.WriteArchive(t, []testutil.Disk{
			{Name: "drive-scsi0", Data: testutil.GenDisk(10, 8192, "data")},
			{Name: "drive-scsi1", Data: testutil.GenDisk(11, 8192, "data")},
		}, []format.Config{
			{Name: "qemu-server.conf", Data: []byte("scsi0: local-lvm:vm-100-disk-0,size=8K\n#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:\n#qmdump#map:scsi1:drive-scsi0:local-lvm:raw:\n#qmdump#map:scsi1:drive-scsi1:::\n")},
			{Name: "disk-drive-scsi1.raw", Data: []byte("1\n")},
			{Name: "drive-scsi0.raw", Data: []byte("2\n")},
		}, "seq", 0)
	default:
		ts.Fatalf("genvma: unknown kind %q", args[0])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), raw, 0o666))
}

// sha256 FILE [HEX] prints a file's sha256, or checks it against HEX.
func sha256Cmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: sha256 FILE [HEX]")
	}
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	sum := sha256.Sum256(b)
	got := hex.EncodeToString(sum[:])
	if len(args) == 1 {
		ts.Stdout().Write([]byte(got + "\n"))
		return
	}
	if (got == args[1]) == neg {
		ts.Fatalf("sha256 of %s is %s", args[0], got)
	}
}

// tsT adapts a TestScript to testutil.TB.
type tsT struct{ *testscript.TestScript }

func (t tsT) Helper()           {}
func (t tsT) Fatal(args ...any) { t.Fatalf("%s", fmt.Sprint(args...)) }

func TestExampleUpToDate(t *testing.T) {
	path := filepath.Join(testutil.ModuleRoot(t), "examples", testutil.ExampleName)
	want := testutil.ExampleArchive(t)
	if *updateExample {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale; regenerate with go test ./cmd/vmaconv -run TestExampleUpToDate -update-example", path)
	}
}

// TestExitStatus checks run's exit status and that failures print exactly
// one line.
func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	example := filepath.Join(testutil.ModuleRoot(t), "examples", testutil.ExampleName)
	notVMA := filepath.Join(dir, "notes.txt")
	os.WriteFile(notVMA, bytes.Repeat([]byte("hello\n"), 3000), 0o644)
	tests := []struct {
		args   []string
		status int
	}{
		{[]string{"info", example}, 0},
		{[]string{"--version"}, 0},
		{[]string{"--help"}, 0},
		{[]string{}, 2},
		{[]string{"info"}, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"info", "--output", "xml", example}, 2},
		{[]string{"info", filepath.Join(dir, "missing.vma")}, 1},
		{[]string{"info", notVMA}, 0}, // a raw image, as qemu-img info says
		{[]string{"info", "-f", "vma", notVMA}, 1},
		{[]string{"info", dir}, 1},
		{[]string{"config", example, "nope.conf"}, 1},
		{[]string{"verify", notVMA}, 1},
		{[]string{"extract", example, filepath.Join(dir, "no", "such", "parent")}, 1},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		got := run(context.Background(), tc.args, strings.NewReader(""), &stdout, &stderr)
		if got != tc.status {
			t.Errorf("vmaconv %q: status %d, want %d; stderr %q", tc.args, got, tc.status, stderr.String())
		}
		if got == 1 && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("vmaconv %q: want one error line, got %q", tc.args, stderr.String())
		}
	}
}

// TestExtractGolden extracts every archive of MANIFEST.json, compressed
// ones included, with the CLI from a file and from stdin, and checks every
// file against its sha256.
func TestExtractGolden(t *testing.T) {
	t.Parallel()
	dir, manifest := testutil.LoadManifest(t)
	for name, want := range manifest {
		for _, viaStdin := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stdin=%v", name, viaStdin), func(t *testing.T) {
				extractGolden(t, filepath.Join(dir, name), viaStdin, want.Configs, want.Devices)
			})
		}
	}
}

// extractGolden runs extract on one golden archive and checks the files.
func extractGolden(t *testing.T, archive string, viaStdin bool, configs []testutil.ManifestConfig, devices []testutil.ManifestDevice) {
	out := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	var stdin io.Reader
	arg := archive
	if viaStdin {
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		stdin, arg = f, "-"
	}
	if st := run(context.Background(), []string{"extract", arg, out}, stdin, &stdout, &stderr); st != 0 {
		t.Fatalf("status %d: %s", st, stderr.String())
	}
	files := map[string]string{}
	for _, c := range configs {
		files[c.Name] = c.SHA256
	}
	for _, d := range devices {
		files["disk-"+d.Name+".raw"] = d.SHA256
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != len(files) {
		t.Errorf("%d files extracted, want %d", len(entries), len(files))
	}
	for f, sum := range files {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: sha256 %x, want %s", f, got, sum)
		}
	}
}

// fileAndOffset reads the file named by args[0] and parses args[1] as an
// offset into it (negative: from the end), for cut and flip.
func fileAndOffset(ts *testscript.TestScript, neg bool, args []string, usage string) ([]byte, int) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: %s", usage)
	}
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	if n < 0 {
		n += len(b)
	}
	return b, n
}

// cut FILE N keeps the first N bytes of FILE (N < 0: all but the last -N).
func cutCmd(ts *testscript.TestScript, neg bool, args []string) {
	b, n := fileAndOffset(ts, neg, args, "cut FILE N")
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b[:n], 0o666))
}

// flip FILE OFFSET inverts the byte at OFFSET (negative: from the end).
func flipCmd(ts *testscript.TestScript, neg bool, args []string) {
	b, n := fileAndOffset(ts, neg, args, "flip FILE OFFSET")
	b[n] ^= 0xff
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o666))
}

// salvaged GOT WANT MIN checks a salvaged disk: every 64 KiB cluster of GOT
// is WANT's or all zero (lost), and at least MIN clusters that are not
// zero in WANT were restored.
func salvagedCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: salvaged GOT WANT MIN")
	}
	got, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	want, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	least, err := strconv.Atoi(args[2])
	ts.Check(err)
	if len(got) != len(want) {
		ts.Fatalf("%s has %d bytes, %s %d", args[0], len(got), args[1], len(want))
	}
	kept := 0
	for off := 0; off < len(got); off += vma.ClusterSize {
		g, w := got[off:min(off+vma.ClusterSize, len(got))], want[off:min(off+vma.ClusterSize, len(want))]
		switch {
		case bytes.Equal(g, w):
			if !testutil.AllZero(w) {
				kept++
			}
		case !testutil.AllZero(g):
			ts.Fatalf("cluster %d of %s is neither the original nor zero", off/vma.ClusterSize, args[0])
		}
	}
	if kept < least {
		ts.Fatalf("%d clusters restored, want at least %d", kept, least)
	}
	ts.Logf("%d clusters restored", kept)
}

// TestExampleName: the example archive is named as vzdump names a backup
// made at its ctime, and Proxmox would restore it.
func TestExampleName(t *testing.T) {
	if want := vma.ArchiveName(100, testutil.TestCTime.UTC(), ""); testutil.ExampleName != want {
		t.Errorf("example named %s, its ctime makes it %s", testutil.ExampleName, want)
	}
	std, unattached, err := qmrestore(t, filepath.Join(testutil.ModuleRoot(t), "examples", testutil.ExampleName))
	if err != nil || !std || len(unattached) > 0 {
		t.Errorf("Proxmox's rules on the example: %v (standard name %v, unattached %v)", err, std, unattached)
	}
}

package part

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var tmpDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "part-test-")
	if err != nil {
		panic(err)
	}
	tmpDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// disk is a test disk image made by sfdisk, and sfdisk's view of it.
type diskImage struct {
	path   string
	size   int64
	oracle *sfJSON
}

// Scripts for the test disks. Partition lines are named "xN :" to give
// their numbers (5.. are logical).
const (
	gptScript = `label: gpt
label-id: 01234567-89AB-CDEF-0123-456789ABCDEF
size=1M, type=U, name="EFI"
size=8M, type=L, name="Données ü €𝄞", uuid=11111111-2222-3333-4444-555555555555
size=4M, type=S, name="swap"
size=2M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
type=CA7D7CCB-63ED-4C53-861C-1742536059CC, name="0123456789012345678901234567890123456"
`
	dosScript = `label: dos
label-id: 0x0badcafe
x1 : size=8M, type=83, bootable
x2 : size=40M, type=f
x5 : size=4M, type=83
x6 : size=4M, type=82
x7 : type=8e
x3 : type=7
`
	// Small disks whose tables lie in the first and last few sectors:
	// fuzz seeds.
	smallDOSScript = `label: dos
label-id: 0xdeadbeef
x1 : start=1, size=1, type=83, bootable
x2 : start=2, size=7, type=85
x5 : start=3, size=1, type=83
x6 : start=5, size=1, type=82
x7 : start=7, size=2, type=8e
x3 : start=10, size=2, type=c
`
	smallGPTScript = `label: gpt
table-length: 4
first-lba: 4
start=4, size=16, type=L, name="a"
start=32, size=100, type=S, name="b"
`
)

type imageSpec struct {
	name, script string
	size         int64
	sector4k     bool
}

var imageSpecs = []imageSpec{
	{"gpt", gptScript, 32 << 20, false},
	{"gpt4k", gptScript, 64 << 20, true},
	{"dos", dosScript, 64 << 20, false},
	{"dos4k", dosScript, 64 << 20, true},
	{"empty-dos", "label: dos\nlabel-id: 0x00000001\n", 1 << 20, false},
	{"small-dos", smallDOSScript, 64 << 10, false},
	{"small-gpt", smallGPTScript, 256 << 10, false},
}

var (
	imagesOnce sync.Once
	images     map[string]*diskImage
	imagesErr  string // why the 4096-byte-sector images are missing
	imagesFail string
)

// loopMu serializes loop device use.
var loopMu sync.Mutex

// getImage returns the named image, building them all once.
func getImage(t *testing.T, name string) *diskImage {
	t.Helper()
	sfdisk := needTool(t, "sfdisk", "fdisk")
	buildImages(t, sfdisk)
	if imagesFail != "" {
		t.Fatalf("building test disks: %s", imagesFail)
	}
	img := images[name]
	if img == nil {
		t.Skipf("image %s not built: %s", name, imagesErr)
	}
	return img
}

// getImageF returns the named image for a fuzz seed, or nil.
func getImageF(f *testing.F, name string) *diskImage {
	sfdisk, err := findTool("sfdisk")
	if err != nil {
		return nil
	}
	buildImages(f, sfdisk)
	if imagesFail != "" {
		f.Fatalf("building test disks: %s", imagesFail)
	}
	return images[name]
}

func buildImages(t testing.TB, sfdisk string) {
	imagesOnce.Do(func() {
		images = map[string]*diskImage{}
		for _, s := range imageSpecs {
			path := filepath.Join(tmpDir, s.name+".raw")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				imagesFail = err.Error()
				return
			}
			if err := os.Truncate(path, s.size); err != nil {
				imagesFail = err.Error()
				return
			}
			dev := path
			if s.sector4k {
				loop, err := loopDevice(path)
				if err != nil {
					imagesErr = err.Error()
					continue
				}
				dev = loop
			}
			out, err := sfdiskRun(sfdisk, s.script, "-q", "--no-reread", "--no-tell-kernel", dev)
			if err == nil {
				out, err = sfdiskRun(sfdisk, "", "-J", dev)
			}
			if s.sector4k {
				exec.Command("losetup", "-d", dev).Run()
			}
			if err != nil {
				imagesFail = s.name + ": " + err.Error() + ": " + out
				return
			}
			images[s.name] = &diskImage{path: path, size: s.size, oracle: parseSfdisk(t, []byte(out))}
		}
	})
}

func sfdiskRun(sfdisk, stdin string, args ...string) (string, error) {
	cmd := exec.Command(sfdisk, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return string(out), nil
}

// loopDevice attaches path to a loop device with 4096-byte sectors (sfdisk
// 2.38 has no --sector-size).
func loopDevice(path string) (string, error) {
	if _, err := exec.LookPath("losetup"); err != nil {
		return "", errors.New("losetup not found (Debian package mount)")
	}
	loopMu.Lock()
	defer loopMu.Unlock()
	out, err := exec.Command("losetup", "-f", "--show", "-b", "4096", path).CombinedOutput()
	if err != nil {
		return "", errors.New("losetup -b 4096 (needs root and loop devices): " + strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func openImage(t *testing.T, img *diskImage) *os.File {
	t.Helper()
	f, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestSfdisk compares every field of every partition with sfdisk -J.
func TestSfdisk(t *testing.T) {
	for _, s := range imageSpecs {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			img := getImage(t, s.name)
			tab, err := Read(openImage(t, img), img.size)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, tab, img.oracle)
			if len(tab.Warnings) != 0 {
				t.Errorf("warnings: %q", tab.Warnings)
			}
		})
	}
}

func TestTypeNames(t *testing.T) {
	img := getImage(t, "gpt")
	tab, err := Read(openImage(t, img), img.size)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"EFI System", "Linux filesystem", "Linux swap", "Linux LVM", "Linux LUKS"}
	for i, p := range tab.Partitions {
		if p.TypeName != want[i] {
			t.Errorf("partition %d: TypeName %q, want %q", p.Number, p.TypeName, want[i])
		}
	}
	img = getImage(t, "dos")
	tab, err = Read(openImage(t, img), img.size)
	if err != nil {
		t.Fatal(err)
	}
	wantDOS := map[int]string{1: "Linux", 2: "W95 Ext'd (LBA)", 3: "HPFS/NTFS/exFAT", 5: "Linux", 6: "Linux swap / Solaris", 7: "Linux LVM"}
	for _, p := range tab.Partitions {
		if p.TypeName != wantDOS[p.Number] {
			t.Errorf("partition %d: TypeName %q, want %q", p.Number, p.TypeName, wantDOS[p.Number])
		}
		if p.Extended() != (p.Number == 2) {
			t.Errorf("partition %d: Extended() = %v", p.Number, p.Extended())
		}
	}
}

// TestHybridMBR adds a FAT32 entry beside the protective one.
func TestHybridMBR(t *testing.T) {
	img := getImage(t, "gpt")
	f := openImage(t, img)
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	copy(mbr[446+16:], mbrSector(0, ent{0x80, 0x0C, 2048, 2048})[446:462])
	d := (&overlay{base: f, size: img.size}).add(0, mbr)
	tab, err := Read(d, img.size)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, tab, img.oracle)
	if len(tab.Warnings) != 1 || !strings.Contains(tab.Warnings[0], "hybrid MBR ignored") {
		t.Errorf("warnings %q, want one about the hybrid MBR", tab.Warnings)
	}
}

// TestBackupGPT damages the primary GPT in several ways.
func TestBackupGPT(t *testing.T) {
	for _, name := range []string{"gpt", "gpt4k"} {
		t.Run(name, func(t *testing.T) {
			img := getImage(t, name)
			ss := int64(img.oracle.PT.SectorSize)
			last := img.size - ss
			f := openImage(t, img)
			for _, c := range []struct {
				what    string
				patches []patch
				warn    string // "" for an error
			}{
				{"header CRC", []patch{{ss + 60, []byte{0xFF}}}, "header CRC32"},
				{"signature", []patch{{ss, []byte("EFI PARK")}}, "missing"},
				{"entries", []patch{{2*ss + 130, []byte{0xFF}}}, "entry array CRC32"},
				{"both", []patch{{ss + 60, []byte{0xFF}}, {last + 60, []byte{0xFF}}}, ""},
				{"backup only", []patch{{last + 60, []byte{0xFF}}}, "backup GPT header is damaged"},
			} {
				d := &overlay{base: f, size: img.size, patches: c.patches}
				tab, err := Read(d, img.size)
				if c.warn == "" {
					if err == nil || !errors.Is(err, ErrCorrupt) || strings.Contains(err.Error(), "\n") {
						t.Errorf("%s: got %v, %v; want one line wrapping ErrCorrupt", c.what, tab, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", c.what, err)
					continue
				}
				compare(t, tab, img.oracle)
				if len(tab.Warnings) != 1 || !strings.Contains(tab.Warnings[0], c.warn) {
					t.Errorf("%s: warnings %q, want one about %q", c.what, tab.Warnings, c.warn)
				}
			}
		})
	}
}

// TestTruncated reads disks cut short: the last partition clipped, or
// starting past the end.
func TestTruncated(t *testing.T) {
	img := getImage(t, "gpt")
	f := openImage(t, img)
	last := img.oracle.PT.Partitions[len(img.oracle.PT.Partitions)-1]
	cut := (last.Start + 100) * 512
	tab, err := Read(f, cut)
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Partitions[len(tab.Partitions)-1]
	if p.Start+p.Size != cut || len(tab.Warnings) != 2 || !strings.Contains(strings.Join(tab.Warnings, "|"), "clipped") {
		t.Errorf("cut at %d: last partition %+v, warnings %q", cut, p, tab.Warnings)
	}
	tab, err = Read(f, last.Start*512)
	if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "partition 5") {
		t.Errorf("cut at partition 5's start: %v, %v; want an error naming partition 5", tab, err)
	}

	img = getImage(t, "dos")
	f = openImage(t, img)
	tab, err = Read(f, 60<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tab.Warnings, "|"), "partition 3 runs") {
		t.Errorf("dos cut at 60 MiB: warnings %q", tab.Warnings)
	}
}

// TestFileSystemBootSectors checks that whole-disk file systems are no
// partition table, though FAT, NTFS and exFAT carry 0x55AA.
func TestFileSystemBootSectors(t *testing.T) {
	type fsCase struct {
		name, tool, pkg string
		size            int64
		args            []string // the image path is appended
	}
	cases := []fsCase{
		{"fat12", "mkfs.vfat", "dosfstools", 1440 << 10, []string{"-F", "12"}},
		{"fat16", "mkfs.vfat", "dosfstools", 16 << 20, []string{"-F", "16"}},
		{"fat32", "mkfs.vfat", "dosfstools", 40 << 20, []string{"-F", "32"}},
		{"fat32-1s", "mkfs.vfat", "dosfstools", 40 << 20, []string{"-F", "32", "-s", "1", "-S", "4096"}},
		{"ext4", "mkfs.ext4", "e2fsprogs", 8 << 20, []string{"-q", "-F"}},
		{"ntfs", "mkntfs", "ntfs-3g", 8 << 20, []string{"-q", "-F", "-f", "-s", "512"}},
		{"exfat", "mkfs.exfat", "exfatprogs", 8 << 20, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if c.name == "exfat" && os.Getenv("CI") == "true" {
				if _, err := exec.LookPath(c.tool); err != nil {
					t.Skip("mkfs.exfat not installed (exfatprogs); optional")
				}
			}
			tool := needTool(t, c.tool, c.pkg)
			path := filepath.Join(t.TempDir(), c.name+".img")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, c.size); err != nil {
				t.Fatal(err)
			}
			run(t, "", tool, append(c.args, path)...)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tab, err := Read(f, c.size)
			if tab != nil || err != nil {
				t.Errorf("Read = %+v, %v; want no table", tab, err)
			}
			if c.name == "ext4" {
				return
			}
			// With the boot sector's bytes where an MBR keeps its entries
			// zeroed (status bytes 0), it is still told from an MBR.
			d := (&overlay{base: f, size: c.size}).add(446, make([]byte, 64))
			tab, err = Read(d, c.size)
			if tab != nil || err != nil {
				t.Errorf("with zeroed entries: Read = %+v, %v; want no table", tab, err)
			}
		})
	}
}

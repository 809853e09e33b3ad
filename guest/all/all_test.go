package all_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	formats "github.com/vmaconv/vmaconv/format/all"
	"github.com/vmaconv/vmaconv/format/raw"
	"github.com/vmaconv/vmaconv/guest"
	_ "github.com/vmaconv/vmaconv/guest/all"
	"github.com/vmaconv/vmaconv/guest/guesttest"
	"github.com/vmaconv/vmaconv/input"
	"github.com/vmaconv/vmaconv/internal/testutil"
	"github.com/vmaconv/vmaconv/pipeline"
)

const mib = 1 << 20

// lvmConfig creates LVM2 metadata without device-mapper (see
// ../shared/docs/test-images.md).
const lvmConfig = "global { activation=0 } activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }"

// fixture is the test disks, built once: drive-scsi0 with a GPT (p1 a
// FAT16 EFI system partition, p2 ext4 holding the standard tree, p3 an
// LVM2 physical volume of volume group vg0 with an ext4 logical volume
// "root", where loop devices work), drive-scsi1 with an MBR (p1 ext4,
// p2 an extended partition holding logical partitions p5, ext4, and p6,
// swap).
type fixture struct {
	dir     string
	tree    string // the standard tree on the host
	entries []guesttest.Entry
	disks   []string // raw disk files
	lvm     bool     // p3 holds LVM
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  string
)

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// getFixture builds the fixture once, in a directory removed by TestMain.
func getFixture(t *testing.T) *fixture {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "sfdisk", "mkfs.vfat", "mcopy", "mkswap", "mkntfs", "ntfscp", "xorriso", "mkfs.xfs"} {
		testutil.RequireTool(t, tool)
	}
	fixOnce.Do(func() {
		f, err := build(fixtureDir)
		if err != nil {
			fixErr = err.Error()
			return
		}
		fix = f
	})
	if fix == nil {
		t.Fatal(fixErr)
	}
	return fix
}

var fixtureDir string

func TestMain(m *testing.M) { guesttest.MainTempDir(m, &fixtureDir, "", "guest-all-") }

// build makes the disks.
func build(dir string) (*fixture, error) {
	f := &fixture{dir: dir, tree: filepath.Join(dir, "tree"), entries: guesttest.Standard()}
	if err := os.Mkdir(f.tree, 0o755); err != nil {
		return nil, err
	}
	var werr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				werr = fmt.Errorf("%v", r)
			}
		}()
		guesttest.Write(&fatalTB{}, f.tree, f.entries)
	}()
	if werr != nil {
		return nil, werr
	}
	small := filepath.Join(dir, "small")
	os.MkdirAll(filepath.Join(small, "etc"), 0o755)
	os.WriteFile(filepath.Join(small, "etc", "fstab"), []byte("/dev/vg0/root / ext4 defaults 0 1\n"), 0o644)
	os.MkdirAll(filepath.Join(small, "EFI", "BOOT"), 0o755)
	os.WriteFile(filepath.Join(small, "EFI", "BOOT", "BOOTX64.EFI"), bytes.Repeat([]byte("MZ"), 3000), 0o644)

	steps := []func() error{
		func() error {
			return run("mkfs.ext4", "-q", "-F", "-N", "16384", "-E", "root_owner=0:0", "-d", f.tree, filepath.Join(dir, "std.ext4"), "48M")
		},
		func() error {
			return run("mkfs.ext4", "-q", "-F", "-d", small, filepath.Join(dir, "small.ext4"), "4M")
		},
		func() error { return run("mkfs.vfat", "-F", "16", "-C", filepath.Join(dir, "esp.fat"), "16384") },
		func() error {
			cmd := exec.Command("mcopy", "-s", "-i", filepath.Join(dir, "esp.fat"), filepath.Join(small, "EFI"), "::")
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("mcopy: %v\n%s", err, out)
			}
			return nil
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	// drive-scsi0: GPT. p1 at 1 MiB (16 MiB), p2 at 17 MiB (48 MiB), p3 at
	// 65 MiB (20 MiB).
	d0 := filepath.Join(dir, "d0.raw")
	if err := os.WriteFile(d0, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(d0, 90*mib); err != nil {
		return nil, err
	}
	if err := sfdisk(d0, "label: gpt\nstart=2048, size=32768, type=U, name=\"EFI system\"\nstart=34816, size=98304, type=L, name=root\nstart=133120, size=40960, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n"); err != nil {
		return nil, err
	}
	if err := place(d0, filepath.Join(dir, "esp.fat"), 1*mib); err != nil {
		return nil, err
	}
	if err := place(d0, filepath.Join(dir, "std.ext4"), 17*mib); err != nil {
		return nil, err
	}
	if err := makeLVM(d0, 65*mib, 20*mib, filepath.Join(dir, "small.ext4")); err == nil {
		f.lvm = true
	} else if os.Getenv("CI") == "true" && canLoop() {
		return nil, fmt.Errorf("LVM: %v", err)
	} else {
		fmt.Fprintf(os.Stderr, "guest/all: no LVM volume in the test disks: %v\n", err)
	}
	// drive-scsi1: MBR with logical partitions: p1 ext4 at 1 MiB, p2 the
	// extended partition from 5 MiB, p5 ext4 at 6 MiB, p6 swap at 11 MiB,
	// p7 NTFS at 16 MiB, p8 ISO 9660 at 25 MiB, p9 XFS at 28 MiB (300 MiB,
	// the least mkfs.xfs makes).
	d1 := filepath.Join(dir, "d1.raw")
	os.WriteFile(d1, nil, 0o644)
	os.Truncate(d1, 330*mib)
	if err := sfdisk(d1, "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=665600, type=5\n"+
		"start=12288, size=8192, type=83\nstart=22528, size=8192, type=82\nstart=32768, size=16384, type=7\n"+
		"start=51200, size=4096, type=83\nstart=57344, size=614400, type=83\n"); err != nil {
		return nil, err
	}
	swap := filepath.Join(dir, "swap")
	ntfs := filepath.Join(dir, "ntfs")
	iso := filepath.Join(dir, "small.iso")
	xfs := filepath.Join(dir, "xfs")
	proto := filepath.Join(dir, "proto")
	fstab := filepath.Join(small, "etc", "fstab")
	steps = []func() error{
		func() error { return os.WriteFile(swap, make([]byte, 4*mib), 0o644) },
		func() error { return run("mkswap", "-q", swap) },
		func() error { return os.WriteFile(ntfs, nil, 0o644) },
		func() error { return os.Truncate(ntfs, 8*mib) },
		func() error { return run("mkntfs", "-q", "-F", "-f", "-s", "512", ntfs) },
		func() error { return run("ntfscp", "-q", ntfs, fstab, "/fstab") },
		func() error {
			return run("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", iso, filepath.Join(small, "etc"))
		},
		func() error { return os.WriteFile(xfs, nil, 0o644) },
		func() error { return os.Truncate(xfs, 300*mib) },
		func() error {
			return os.WriteFile(proto, []byte("/dev/null\n0 0\nd--755 0 0\netc d--755 0 0\nfstab ---644 0 0 "+fstab+"\n$\n$\n"), 0o644)
		},
		func() error { return run("mkfs.xfs", "-q", "-f", "-p", proto, xfs) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	for _, p := range []struct {
		img string
		off int64
	}{{filepath.Join(dir, "small.ext4"), 1 * mib}, {filepath.Join(dir, "small.ext4"), 6 * mib}, {swap, 11 * mib}, {ntfs, 16 * mib}, {iso, 25 * mib}, {xfs, 28 * mib}} {
		if err := place(d1, p.img, p.off); err != nil {
			return nil, err
		}
	}
	f.disks = []string{d0, d1}
	return f, nil
}

// fatalTB turns guesttest.Write's failures into a panic that build
// recovers.
type fatalTB struct{ testing.TB }

func (fatalTB) Helper()                   {}
func (fatalTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (fatalTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func sfdisk(disk, script string) error {
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %v\n%s", err, out)
	}
	return nil
}

// place copies the file src into disk at off, holes left holes.
func place(disk, src string, off int64) error {
	return run("dd", "if="+src, "of="+disk, "bs=64K", fmt.Sprintf("seek=%d", off/(64<<10)), "conv=notrunc,sparse", "status=none")
}

// canLoop reports whether loop devices and LVM's tools work here.
func canLoop() bool {
	_, e1 := exec.LookPath("losetup")
	_, e2 := exec.LookPath("pvcreate")
	if e1 != nil || e2 != nil {
		return false
	}
	_, err := os.Stat("/dev/loop-control")
	return err == nil
}

// makeLVM makes the partition at off an LVM2 physical volume of volume
// group vg0 with a logical volume root of 8 MiB holding fsImage.
func makeLVM(disk string, off, size int64, fsImage string) error {
	if !canLoop() {
		return fmt.Errorf("no loop devices or LVM tools")
	}
	out, err := exec.Command("losetup", "-f", "--show", "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size), disk).Output()
	if err != nil {
		return fmt.Errorf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	detached := false
	detach := func() {
		if !detached {
			exec.Command("losetup", "-d", loop).Run()
			detached = true
		}
	}
	defer detach()
	c := "--config=" + lvmConfig
	for _, args := range [][]string{
		{"pvcreate", "-q", c, loop},
		{"vgcreate", "-q", c, "-s", "1M", "vg0", loop},
		{"lvcreate", "-q", c, "-an", "-Zn", "-L", "4M", "-n", "root", "vg0"},
	} {
		if err := run(args[0], args[1:]...); err != nil {
			return err
		}
	}
	outs, err := exec.Command("lvs", c, "--segments", "--reportformat", "json", "--units", "b", "-o", "lv_name,seg_start_pe,seg_pe_ranges", "vg0").Output()
	if err != nil {
		return fmt.Errorf("lvs: %v", err)
	}
	pvs, err := exec.Command("pvs", c, "--reportformat", "json", "--units", "b", "-o", "pe_start", loop).Output()
	if err != nil {
		return fmt.Errorf("pvs: %v", err)
	}
	detach()
	var lv struct {
		Report []struct {
			LV []struct {
				Ranges string `json:"seg_pe_ranges"`
			} `json:"seg"`
		} `json:"report"`
	}
	var pv struct {
		Report []struct {
			PV []struct {
				PEStart string `json:"pe_start"`
			} `json:"pv"`
		} `json:"report"`
	}
	if err := json.Unmarshal(outs, &lv); err != nil {
		return err
	}
	if err := json.Unmarshal(pvs, &pv); err != nil {
		return err
	}
	if len(lv.Report) == 0 || len(lv.Report[0].LV) != 1 || len(pv.Report) == 0 || len(pv.Report[0].PV) != 1 {
		return fmt.Errorf("lvs/pvs: unexpected %s %s", outs, pvs)
	}
	var first, last int64
	if _, err := fmt.Sscanf(lv.Report[0].LV[0].Ranges[strings.LastIndex(lv.Report[0].LV[0].Ranges, ":")+1:], "%d-%d", &first, &last); err != nil {
		return fmt.Errorf("seg_pe_ranges %q: %v", lv.Report[0].LV[0].Ranges, err)
	}
	var peStart int64
	fmt.Sscanf(strings.TrimSuffix(pv.Report[0].PV[0].PEStart, "B"), "%d", &peStart)
	return place(disk, fsImage, off+peStart+first*mib)
}

// packing is one way of storing the fixture.
type packing struct {
	name  string
	file  string
	multi bool // an archive: disks at the root
}

var (
	packOnce sync.Once
	packs    []packing
	packErr  error
)

// pack writes the fixture as raw and qcow2 (drive-scsi0 only), and as a
// .vma, a .vma.zst and a seekable .vma.zst of both disks.
func pack(t *testing.T, f *fixture) []packing {
	t.Helper()
	packOnce.Do(func() {
		reg := formats.Registry()
		write := func(fmName, file, opts string, disks []string) error {
			fm, err := reg.Lookup(fmName)
			if err != nil {
				return err
			}
			v, err := format.ParseOptions(fm, opts)
			if err != nil {
				return err
			}
			var devs []format.Device
			var srcs []*raw.Source
			for i, d := range disks {
				fi, err := os.Stat(d)
				if err != nil {
					return err
				}
				dev := format.Device{Size: fi.Size()}
				if fm.Multi {
					dev.Name = fmt.Sprintf("drive-scsi%d", i)
				}
				devs = append(devs, dev)
				f, err := os.Open(d)
				if err != nil {
					return err
				}
				s, err := raw.Open(f) // its holes are not read
				if err != nil {
					f.Close()
					return err
				}
				defer s.Close()
				srcs = append(srcs, s)
			}
			var cfgs []format.Config
			if fm.Multi {
				cfgs = []format.Config{{Name: "qemu-server.conf", Data: []byte("scsi0: local-lvm:vm-100-disk-0,size=90M\nscsi1: local-lvm:vm-100-disk-1,size=330M\n")}}
			}
			sink, err := fm.Create(format.Dest{Path: filepath.Join(f.dir, file)}, devs, format.CreateOptions{Options: v, Configs: cfgs})
			if err != nil {
				return err
			}
			for i, s := range srcs {
				if err := pipeline.Copy(context.Background(), sink.Disk(i), s, pipeline.Options{}); err != nil {
					return err
				}
			}
			return sink.Commit()
		}
		all := []struct {
			p        packing
			fm, opts string
			disks    []string
		}{
			{packing{"raw", "d0.raw", false}, "", "", nil},
			{packing{"qcow2", "d0.qcow2", false}, "qcow2", "", f.disks[:1]},
			{packing{"vma", "vzdump-qemu-100-2024_06_10-06_13_20.vma", true}, "vma", "", f.disks},
			{packing{"vma.zst", "vzdump-qemu-100-2024_06_10-06_13_20.vma.zst", true}, "vma", "compress=zstd", f.disks},
			{packing{"seekable vma.zst", "seekable.vma.zst", true}, "vma", "compress=zstd,seekable=on", f.disks},
		}
		for _, a := range all {
			if a.fm != "" {
				if err := write(a.fm, a.p.file, a.opts, a.disks); err != nil {
					packErr = fmt.Errorf("%s: %v", a.p.name, err)
					return
				}
			}
			packs = append(packs, a.p)
		}
	})
	if packErr != nil {
		t.Fatal(packErr)
	}
	return packs
}

// openTree opens a packing's file tree.
func openTree(t *testing.T, f *fixture, p packing) *guest.Tree {
	t.Helper()
	in, err := input.Open(context.Background(), formats.Registry(), format.Ref{Path: filepath.Join(f.dir, p.file)},
		input.Options{RandomAccess: true, Cache: input.CacheOptions{Dir: filepath.Join(f.dir, "cache")}, Note: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	tr, err := guest.OpenInput(in)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// nodeFS is an FS whose root is a node.
type nodeFS struct{ n guest.Node }

func (f nodeFS) Root() (guest.Node, error) { return f.n, nil }

func lookup(t *testing.T, tr *guest.Tree, p string) guest.Node {
	t.Helper()
	n, _, err := tr.Lookup(p, false)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPackings reads the fixture's file trees from every packing: the
// volumes each level shows, the standard tree inside ext4 (guesttest.Check),
// a file inside LVM, and one behind a symbolic link.
func TestPackings(t *testing.T) {
	f := getFixture(t)
	for _, p := range pack(t, f) {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			tr := openTree(t, f, p)
			d0 := ""
			if p.multi {
				d0 = "/drive-scsi0"
				want := map[string]string{"drive-scsi0": "gpt", "drive-scsi1": "dos"}
				checkVolumes(t, tr, "/", want)
				checkVolumes(t, tr, "/drive-scsi1", map[string]string{"p1": "ext4", "p5": "ext4", "p6": "swap", "p7": "ntfs", "p8": "iso9660", "p9": "xfs"})
				for _, p := range []string{"p5/etc/fstab", "p7/fstab", "p8/fstab", "p9/etc/fstab"} {
					n, _, err := tr.Lookup("/drive-scsi1/"+p, true)
					if err != nil {
						t.Fatal(err)
					}
					checkFile(t, n, "/dev/vg0/root / ext4 defaults 0 1\n")
				}
			}
			want := map[string]string{"p1": "fat16", "p2": "ext4", "p3": "lvm2"}
			if !f.lvm {
				want["p3"] = "empty"
			}
			checkVolumes(t, tr, d0+"/", want)
			guesttest.Check(t, nodeFS{lookup(t, tr, d0+"/p2")}, f.entries, guesttest.Caps{
				Perm: true, Symlinks: true, HardLinks: true, MTime: time.Second, Sparse: true, Ignore: []string{"lost+found"},
			})
			n, resolved, err := tr.Lookup(d0+"/p2/link-rel", true)
			if err != nil || resolved != d0+"/p2/dir/file" {
				t.Fatalf("link-rel resolves to %q, %v", resolved, err)
			}
			if n.Info().Size != 5000 {
				t.Errorf("link-rel: size %d", n.Info().Size)
			}
			n, _, err = tr.Lookup(d0+"/p1/EFI/BOOT/BOOTX64.EFI", true)
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, n, strings.Repeat("MZ", 3000))
			if f.lvm {
				checkVolumes(t, tr, d0+"/p3", map[string]string{"vg0": "lvm2"})
				checkVolumes(t, tr, d0+"/p3/vg0", map[string]string{"root": "ext4"})
				n, _, err := tr.Lookup(d0+"/p3/vg0/root/etc/fstab", true)
				if err != nil {
					t.Fatal(err)
				}
				checkFile(t, n, "/dev/vg0/root / ext4 defaults 0 1\n")
			}
			// The link to /etc/passwd stays inside p2's file system.
			if _, _, err := tr.Lookup(d0+"/p2/link-abs", true); err == nil || !strings.Contains(err.Error(), d0+"/p2: etc: file does not exist") {
				t.Errorf("link-abs: %v, want it resolved inside p2 (where there is no etc)", err)
			}
		})
	}
}

func checkVolumes(t *testing.T, tr *guest.Tree, p string, want map[string]string) {
	t.Helper()
	nodes, err := lookup(t, tr, p).ReadDir()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range nodes {
		v, ok := n.(guest.Volumer)
		if !ok {
			t.Fatalf("%s/%s is not a volume", p, n.Info().Name)
		}
		got[n.Info().Name] = v.Volume().Content
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: volumes %v, want %v", p, got, want)
	}
}

func checkFile(t *testing.T, n guest.Node, want string) {
	t.Helper()
	f, err := n.Open()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := guest.WriteTo(context.Background(), f, &b); err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Errorf("content %q, want %q", b.String(), want)
	}
}

// TestCopyOut copies the ext4 file system out of a seekable .vma.zst and
// compares the copy with the source tree: diff -r (contents, link
// targets), modes (setuid dropped), mtimes, hard links and holes.
func TestCopyOut(t *testing.T) {
	f := getFixture(t)
	testutil.RequireTool(t, "diff")
	var p packing
	for _, q := range pack(t, f) {
		if q.name == "seekable vma.zst" {
			p = q
		}
	}
	tr := openTree(t, f, p)
	n, q, err := tr.Lookup("/drive-scsi0/p2", false)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	var notes []string
	skipped, err := guest.CopyOut(context.Background(), n, q, dest, guest.CopyOptions{Recursive: true, Note: func(m string) { notes = append(notes, m) }})
	if err != nil || skipped != 0 {
		t.Fatalf("CopyOut: %d skipped (%v), %v", skipped, notes, err)
	}
	if out, err := exec.Command("diff", "-r", "--no-dereference", "-x", "lost+found", f.tree, dest).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, out)
	}
	for _, e := range f.entries {
		fi, err := os.Lstat(filepath.Join(dest, e.Path))
		if err != nil {
			t.Fatal(err)
		}
		want := e.Mode &^ fs.ModeSetuid
		if fi.Mode() != want && e.Mode&fs.ModeSymlink == 0 {
			t.Errorf("%s: mode %v, want %v", e.Path, fi.Mode(), want)
		}
		// mkfs.ext4 -d keeps whole seconds; a link's is when Write made it.
		mtime := e.ModTime
		if e.Mode&fs.ModeSymlink != 0 {
			src, err := os.Lstat(filepath.Join(f.tree, e.Path))
			if err != nil {
				t.Fatal(err)
			}
			mtime = src.ModTime()
		}
		if !fi.ModTime().Equal(mtime.Truncate(time.Second)) {
			t.Errorf("%s: mtime %v, want %v", e.Path, fi.ModTime(), mtime)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if e.Link != "" && st.Nlink != 2 {
			t.Errorf("%s: %d links, want 2", e.Path, st.Nlink)
		}
		if e.Path == "sparse" && st.Blocks*512 > 256<<10 {
			t.Errorf("sparse: %d bytes allocated, want the 128 KiB of data", st.Blocks*512)
		}
	}
	// Again into the same place: files are replaced, nothing doubles.
	if _, err := guest.CopyOut(context.Background(), n, q, dest, guest.CopyOptions{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	// --preserve keeps setuid.
	s := lookup(t, tr, "/drive-scsi0/p2/setuid")
	sp := filepath.Join(t.TempDir(), "setuid")
	if _, err := guest.CopyOut(context.Background(), s, "/drive-scsi0/p2/setuid", sp, guest.CopyOptions{Preserve: true}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(sp); fi == nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("--preserve: setuid dropped")
	}
}

var (
	changedOnce sync.Once
	changedImg  string
	changedErr  error
)

// changedImage returns an ext4 image of the standard tree changed: a
// file's content (same size), a file added, one removed, a mode.
func changedImage(t *testing.T, f *fixture) string {
	changedOnce.Do(func() {
		changed := filepath.Join(f.dir, "changed")
		if changedErr = run("cp", "-a", f.tree, changed); changedErr != nil {
			return
		}
		os.WriteFile(filepath.Join(changed, "small"), bytes.Repeat([]byte("x"), 100), 0o644)
		os.WriteFile(filepath.Join(changed, "dir", "new"), []byte("new\n"), 0o644)
		os.Remove(filepath.Join(changed, "secret"))
		os.Chmod(filepath.Join(changed, "exec"), 0o700)
		changedImg = filepath.Join(f.dir, "changed.ext4")
		changedErr = run("mkfs.ext4", "-q", "-F", "-N", "16384", "-E", "root_owner=0:0", "-d", changed, changedImg, "48M")
	})
	if changedErr != nil {
		t.Fatal(changedErr)
	}
	return changedImg
}

// TestDiff compares two archives of the standard tree, one changed: a
// file's content (same size), a file added, one removed, a mode.
func TestDiff(t *testing.T) {
	f := getFixture(t)
	var p packing
	for _, q := range pack(t, f) {
		if q.name == "vma" {
			p = q
		}
	}
	a := openTree(t, f, p)
	// B: p2's file system rebuilt from a changed tree, once for every
	// -cpu pass.
	img := changedImage(t, f)
	fb, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	b := guest.New([]guest.Disk{{R: fb, Size: 48 * mib}})
	rb, _ := b.Root()
	var got []string
	err = guest.Diff(context.Background(), lookup(t, a, "/drive-scsi0/p2"), rb, "/", guest.DiffOptions{}, func(c guest.Change) error {
		if c.Err != nil {
			return c.Err
		}
		got = append(got, fmt.Sprintf("%c %s %v", c.Op, c.Path, c.What))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"+ /dir/new []", "M /exec [mode]", "- /secret []", "M /small [content]"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The same tree against itself: nothing.
	err = guest.Diff(context.Background(), lookup(t, a, "/drive-scsi0/p2"), lookup(t, a, "/drive-scsi0/p2"), "/", guest.DiffOptions{Times: true}, func(c guest.Change) error {
		return fmt.Errorf("a change against itself: %c %s %v %v", c.Op, c.Path, c.What, c.Err)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHugeDirectory: an ext4 directory of 273,141 entries (801 blocks of
// dirents written by hand into a directory debugfs expanded) is refused
// for itself with one error matching guest.ErrTooManyEntries; the rest of
// the tree is listed.
func TestHugeDirectory(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "mkfs.ext4")
	debugfs := testutil.RequireTool(t, "debugfs")
	img := filepath.Join(fixtureDir, "huge.ext4")
	hugeExt4Once.Do(func() { hugeExt4Err = makeHugeExt4(t, debugfs, img) })
	if hugeExt4Err != nil {
		t.Fatal(hugeExt4Err)
	}
	r, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	root, _ := guest.New([]guest.Disk{{R: r, Size: 32 << 20}}).Root()
	var errs []error
	var seen []string
	err = guest.Walk(root, "/", func(p string, n guest.Node, err error) error {
		if err != nil {
			errs = append(errs, err)
		} else {
			seen = append(seen, p)
		}
		return nil
	})
	if err != nil || len(errs) != 1 || !errors.Is(errs[0], guest.ErrTooManyEntries) {
		t.Fatalf("Walk: %v, errors %v", err, errs)
	}
	if strings.Join(seen, " ") != "/ /d /f /lost+found" {
		t.Errorf("listed %q", seen)
	}
}

// The huge directories' images, built once for every -cpu pass.
var (
	hugeExt4Once, hugeXFSOnce sync.Once
	hugeExt4Err, hugeXFSErr   error
)

// makeHugeExt4 makes TestHugeDirectory's image at img.
func makeHugeExt4(t *testing.T, debugfs, img string) error {
	dir := t.TempDir()
	tree := filepath.Join(dir, "t")
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte("x\n"), 0o644)
	if err := run("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum,^dir_index", "-d", tree, img, "32M"); err != nil {
		return err
	}
	cmds := filepath.Join(dir, "cmds")
	os.WriteFile(cmds, []byte(strings.Repeat("expand_dir /d\n", 800)), 0o644)
	if err := run(debugfs, "-w", "-f", cmds, img); err != nil {
		return err
	}
	out, err := exec.Command(debugfs, "-R", "blocks /d", img).Output()
	if err != nil {
		return err
	}
	blocks := strings.Fields(string(out))
	if len(blocks) < 770 {
		return fmt.Errorf("/d has %d blocks", len(blocks))
	}
	// 341 entries a block, each naming the inode of /f (13).
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for _, b := range blocks {
		var blk int64
		fmt.Sscan(b, &blk)
		for i := range 341 {
			e := buf[12*i:]
			rec := 12
			if i == 340 {
				rec = 4096 - 12*340
			}
			binary.LittleEndian.PutUint32(e, 13)
			binary.LittleEndian.PutUint16(e[4:], uint16(rec))
			e[6], e[7] = 4, 1
			copy(e[8:12], fmt.Sprintf("%04x", i))
		}
		if _, err := f.WriteAt(buf, blk*4096); err != nil {
			return err
		}
	}
	return f.Close()
}

// TestHugeDirectoryXFS: the same for XFS, a node-format directory of
// 262,200 files made by mkfs.xfs from a protofile.
func TestHugeDirectoryXFS(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "mkfs.xfs")
	img := filepath.Join(fixtureDir, "huge.xfs")
	hugeXFSOnce.Do(func() { hugeXFSErr = makeHugeXFS(img) })
	if hugeXFSErr != nil {
		t.Fatal(hugeXFSErr)
	}
	r, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := guest.New([]guest.Disk{{R: r, Size: 2 << 30}})
	n, _, err := tr.Lookup("/d", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ReadDir(); !errors.Is(err, guest.ErrTooManyEntries) {
		t.Errorf("ReadDir of %d entries: %v", guest.MaxDirEntries+56, err)
	}
}

// makeHugeXFS makes TestHugeDirectoryXFS's image at img.
func makeHugeXFS(img string) error {
	var proto strings.Builder
	proto.WriteString("/dev/null\n0 0\nd--755 0 0\n d d--755 0 0\n")
	for i := range guest.MaxDirEntries + 56 {
		proto.WriteString("  f" + strconv.Itoa(1000000 + i)[1:] + " ---644 0 0 /dev/null\n")
	}
	proto.WriteString(" $\n$\n")
	pf := img + ".proto"
	if err := os.WriteFile(pf, []byte(proto.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(img, 2<<30); err != nil {
		return err
	}
	return run("mkfs.xfs", "-q", "-f", "-p", pf, img)
}

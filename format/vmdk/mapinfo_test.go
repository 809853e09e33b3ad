package vmdk_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/format/vmdk"
	"github.com/vmaconv/vmaconv/pipeline"
)

// ourMap returns the map of an image as vmaconv map prints it: JSON
// entries, and the human format's text, naming the image path.
func ourMap(t *testing.T, path string) ([]map[string]any, string) {
	t.Helper()
	src, err := open(t, path, format.OpenOptions{AllowBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var entries []map[string]any
	var text strings.Builder
	err = pipeline.Map(context.Background(), src, src.Size(), pipeline.MapOptions{End: src.Size()}, func(m format.Mapping, last bool) error {
		var e map[string]any
		if err := json.Unmarshal([]byte(m.JSON()), &e); err != nil {
			return err
		}
		delete(e, "compressed") // qemu-img 8.1 and later print it
		entries = append(entries, e)
		text.WriteString(m.Text(path))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries, text.String()
}

// TestMapQemuImg: the map of every fixture is qemu-img map's, entry for
// entry: data at its offset in its file (a flat extent's holes zero), the
// parent's ranges at depth 1, compressed grains without an offset,
// zeroed grains zero and present; and the human format names the file of
// each range, the extent files of a descriptor included.
func TestMapQemuImg(t *testing.T) {
	requireFixtures(t)
	for _, set := range []map[string]string{fixtures.cases, fixtures.whole, fixtures.split} {
		for name, path := range set {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				got, text := ourMap(t, path)
				want := qemuMap(t, path)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("map:\n got %v\nwant %v", got, want)
				}
				out, err := exec.Command("qemu-img", "map", path).CombinedOutput()
				if strings.Contains(string(out), "compressed clusters") {
					return // qemu-img prints no human map of compressed data
				}
				if err != nil {
					t.Fatalf("qemu-img map: %v\n%s", err, out)
				}
				want0 := strings.SplitN(string(out), "\n", 2)[1] // past its header line
				if text != want0 {
					t.Errorf("human map:\n got %q\nwant %q", text, want0)
				}
			})
		}
	}
}

// TestInfoQemuImg: info of every fixture says what qemu-img info --output
// json says of it: virtual size, cluster size, backing file, and the vmdk
// data (CIDs, create type, each extent's file, format, sizes and
// compression); the disk size counts the extent files.
func TestInfoQemuImg(t *testing.T) {
	requireFixtures(t)
	for _, set := range []map[string]string{fixtures.cases, fixtures.whole, fixtures.split} {
		for name, path := range set {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				out, err := exec.Command("qemu-img", "info", "--output", "json", path).Output()
				if err != nil {
					t.Fatal(err)
				}
				var want map[string]any
				if err := json.Unmarshal(out, &want); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fi, _ := f.Stat()
				in, err := vmdk.Format.InfoAt(f, fi.Size(), format.FileStat{Name: path, Size: fi.Size(), Allocated: allocated(fi)})
				if err != nil {
					t.Fatal(err)
				}
				b, err := json.Marshal(in)
				if err != nil {
					t.Fatal(err)
				}
				var got map[string]any
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatal(err)
				}
				for k, v := range want {
					if !reflect.DeepEqual(got[k], v) {
						t.Errorf("%s: got %v, want %v", k, got[k], v)
					}
				}
				for k := range got {
					if _, ok := want[k]; !ok {
						t.Errorf("%s: %v, which qemu-img does not show", k, got[k])
					}
				}
				// The text, line for line.
				wantText, err := exec.Command("qemu-img", "info", path).Output()
				if err != nil {
					t.Fatal(err)
				}
				var text strings.Builder
				if err := in.WriteText(&text); err != nil {
					t.Fatal(err)
				}
				if text.String() != string(wantText) {
					t.Errorf("text:\n%s\nqemu-img info:\n%s", text.String(), wantText)
				}
			})
		}
	}
}

// allocated is what a file takes on disk, as qemu-img's disk size.
func allocated(fi os.FileInfo) int64 {
	v := reflect.ValueOf(fi.Sys()).Elem().FieldByName("Blocks")
	return v.Int() * 512
}

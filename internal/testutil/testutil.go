// Package testutil holds helpers shared by vmaconv's tests.
package testutil

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// GoldenDir returns ../shared/testdata/vma beside the module root: archives
// written by Proxmox's own vma tool. Where it is absent the test is skipped,
// except under CI=true, where its absence fails the test.
func GoldenDir(t testing.TB) string {
	t.Helper()
	dir, err := FindGolden(t)
	if err != nil {
		t.Skipf("golden archives not found (%v); clone the project's shared/ beside the checkout to run this test", err)
	}
	return dir
}

// FindGolden is GoldenDir for callers that go on without the archives: it
// returns an error where GoldenDir skips (and still fails under CI=true).
func FindGolden(t testing.TB) (string, error) {
	t.Helper()
	dir := filepath.Join(ModuleRoot(t), "..", "shared", "testdata", "vma")
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST.json")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("golden archives missing under CI: %v", err)
		}
		return "", err
	}
	return dir, nil
}

// Manifest describes the golden archives: per archive, the sha256 of every
// device and config.
type Manifest map[string]struct {
	ArchiveSHA256 string           `json:"archive_sha256"`
	Configs       []ManifestConfig `json:"configs"`
	Devices       []ManifestDevice `json:"devices"`
}

// ManifestConfig is a config blob of a golden archive.
type ManifestConfig struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int    `json:"size"`
}

// ManifestDevice is a device of a golden archive.
type ManifestDevice struct {
	ID     int    `json:"id"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// LoadManifest reads MANIFEST.json from GoldenDir.
func LoadManifest(t testing.TB) (string, Manifest) {
	t.Helper()
	dir := GoldenDir(t)
	b, err := os.ReadFile(filepath.Join(dir, "MANIFEST.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

// RequireTool returns the path of an external program (qemu-img, zstd, …).
// Where it is missing the test is skipped, except under CI=true, where
// .ci/run installs it and its absence fails the test.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found under CI (.ci/run installs it): %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

package buildinfo

import (
	"runtime/debug"
	"testing"
	"time"
)

// TestVersion: a version set at link time is kept; otherwise the build's
// module version, revision (12 digits), time and state, and Go version.
func TestVersion(t *testing.T) {
	if v := Version("1.2.3"); v != "1.2.3" {
		t.Errorf("Version(1.2.3) = %q", v)
	}
	bi := &debug.BuildInfo{GoVersion: "go1.26", Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-01-31T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	if v := version(bi); v != "(devel) (0123456789ab 2026-01-31T10:00:00Z, modified) go1.26" {
		t.Errorf("version = %q", v)
	}
	bi.Main.Version, bi.Settings = "v1.0.0", nil
	if v := version(bi); v != "v1.0.0 go1.26" {
		t.Errorf("version without VCS = %q", v)
	}
}

// TestDate: the revision's date, else today's.
func TestDate(t *testing.T) {
	now := time.Date(2027, 3, 4, 23, 0, 0, 0, time.FixedZone("x", -3600))
	if d := date(&debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.time", Value: "2026-01-31T10:00:00Z"}}}, now); d != "2026-01-31" {
		t.Errorf("date = %q", d)
	}
	if d := date(&debug.BuildInfo{}, now); d != "2027-03-05" {
		t.Errorf("date without VCS = %q", d)
	}
}

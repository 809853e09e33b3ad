// Package buildinfo says which vmaconv this is: the version set at link
// time, or what the Go toolchain recorded in the build (module version,
// VCS revision and time, Go version).
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"time"
)

// Version returns set, the version set at link time (-ldflags "-X
// main.version=…"), unless it is "dev": then the module version and VCS
// revision recorded in the build, "(devel) (0123456789ab 2026-01-31T10:00:00Z,
// modified) go1.26", or "dev" if the build recorded nothing.
func Version(set string) string {
	if set != "dev" {
		return set
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return version(bi)
}

func version(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, when, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += fmt.Sprintf(" (%s %s%s)", rev, when, dirty)
	}
	return v + " " + bi.GoVersion
}

// Date returns the date of the build's VCS revision, else today's
// (UTC), as 2026-01-31.
func Date() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return date(bi, time.Now())
	}
	return time.Now().UTC().Format("2006-01-02")
}

func date(bi *debug.BuildInfo, now time.Time) string {
	for _, s := range bi.Settings {
		if s.Key == "vcs.time" && len(s.Value) >= 10 {
			return s.Value[:10]
		}
	}
	return now.UTC().Format("2006-01-02")
}

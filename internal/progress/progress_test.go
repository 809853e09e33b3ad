package progress

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

// TestMeter: a plain line at the end with what was done of the total and
// the rate; on a terminal, the line drawn in place, ended by Abort (once)
// so that an error starts its own line; a nil Meter does nothing.
func TestMeter(t *testing.T) {
	var b bytes.Buffer
	m := New(&b, false, "converting d.raw", -1)
	m.Report(1<<20, 2<<20)
	m.Finish()
	if !regexp.MustCompile(`^converting d\.raw: 1 MiB of 2 MiB \(50%\), [\d.]+ [KMG]?i?B/s, \d+(\.\d+)?[mµn]?s\n$`).Match(b.Bytes()) {
		t.Errorf("plain: %q", b.String())
	}
	b.Reset()
	m = New(&b, true, "hashing", 4096)
	m.Update(4096)
	m.last = m.last.Add(-time.Second) // as if the last draw were long ago
	m.Update(4096)
	m.Abort()
	EndLine(&b)
	if !regexp.MustCompile(`^\r\x1b\[Khashing: 4 KiB of 4 KiB \(100%\), [^\n]*\n$`).Match(b.Bytes()) {
		t.Errorf("terminal: %q", b.String())
	}
	var nilMeter *Meter
	nilMeter.Update(1)
	nilMeter.Report(1, 2)
	nilMeter.Abort()
	nilMeter.Finish()
}

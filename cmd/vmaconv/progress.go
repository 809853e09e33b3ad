package main

import "github.com/vmaconv/vmaconv/internal/progress"

// meter is a progress line on stderr (internal/progress); nil does
// nothing.
type meter struct{ m *progress.Meter }

// newProgress starts a progress line on stderr for -p (nil, which does
// nothing, without it or with -q).
func newProgress(e *env, enabled bool, what string, total int64) *meter {
	if !enabled || e.quiet { // -q wins over -p, as in qemu-img
		return nil
	}
	return &meter{progress.New(e.stderr, e.stderrTTY, what, total)}
}

// The meter's methods, by the names the commands use.
func (p *meter) get() *progress.Meter {
	if p == nil {
		return nil
	}
	return p.m
}
func (p *meter) update(done int64)        { p.get().Update(done) }
func (p *meter) report(done, total int64) { p.get().Report(done, total) }
func (p *meter) abort()                   { p.get().Abort() }
func (p *meter) finish()                  { p.get().Finish() }

// endLine ends a progress line left open, so that a message starts its
// own line.
var endLine = progress.EndLine

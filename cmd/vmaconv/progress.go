package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress reports bytes done on stderr: a line rewritten in place on a
// terminal, or a plain line every few seconds otherwise.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	what  string
	total int64 // -1 if unknown
	start time.Time
	last  time.Time
	done  int64
}

// newProgress starts a progress line on stderr for -p (nil, which does
// nothing, without it or with -q).
func newProgress(e *env, enabled bool, what string, total int64) *progress {
	if !enabled || e.quiet { // -q wins over -p, as in qemu-img
		return nil
	}
	now := time.Now()
	return &progress{w: e.stderr, tty: e.stderrTTY, what: what, total: total, start: now, last: now}
}

// update records done bytes; it may be called from any goroutine.
func (p *progress) update(done int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = done
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if now := time.Now(); now.Sub(p.last) >= every {
		p.last = now
		p.print(false)
	}
}

// report records done bytes of total (-1 if unknown), for pipeline's
// Progress; it may be called from any goroutine.
func (p *progress) report(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.total = total
	p.mu.Unlock()
	p.update(done)
}

// abort ends a progress line drawn in place, so that what follows (an
// error) starts its own line.
func (p *progress) abort() {
	if p == nil || !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	endLine(p.w)
}

// lineOpen is set while a progress line drawn in place has no newline yet.
var lineOpen atomic.Bool

// endLine ends a progress line left open on w, so that a message (an
// error, "interrupted") starts its own line.
func endLine(w io.Writer) {
	if lineOpen.Swap(false) {
		fmt.Fprintln(w)
	}
}

// finish prints the final state.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print(true)
}

func (p *progress) print(final bool) {
	el := time.Since(p.start)
	rate := float64(p.done) / max(el.Seconds(), 1e-3)
	line := fmt.Sprintf("%s: %s", p.what, humanSize(p.done))
	if p.total > 0 {
		line += fmt.Sprintf(" of %s (%.0f%%)", humanSize(p.total), 100*float64(p.done)/float64(p.total))
	}
	line += fmt.Sprintf(", %s/s", humanSize(int64(rate)))
	if !final && p.total > 0 && rate > 0 {
		eta := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		line += fmt.Sprintf(", %s left", eta.Round(time.Second))
	} else if final {
		line += fmt.Sprintf(", %s", el.Round(time.Millisecond))
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		lineOpen.Store(!final)
		if final {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

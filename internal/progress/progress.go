// Package progress draws how far a long run has got: a line rewritten in
// place on a terminal, or a plain line every few seconds otherwise, with
// the bytes done, the total, the rate and the time left.
package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmaconv/vmaconv/internal/text"
)

// Meter reports bytes done on w. A nil *Meter does nothing.
type Meter struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	what  string
	total int64 // -1 if unknown
	start time.Time
	last  time.Time
	done  int64
}

// New starts a meter of what (the line's start: "converting") counting
// up to total bytes (-1 if unknown) on w, drawn in place if tty.
func New(w io.Writer, tty bool, what string, total int64) *Meter {
	now := time.Now()
	return &Meter{w: w, tty: tty, what: what, total: total, start: now, last: now}
}

// Update records done bytes; it may be called from any goroutine.
func (p *Meter) Update(done int64) {
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

// Report records done bytes of total (-1 if unknown), as pipeline's
// Progress callbacks give them; it may be called from any goroutine.
func (p *Meter) Report(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.total = total
	p.mu.Unlock()
	p.Update(done)
}

// Abort ends a line drawn in place, so that what follows (an error)
// starts its own line.
func (p *Meter) Abort() {
	if p == nil || !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	EndLine(p.w)
}

// lineOpen is set while a line drawn in place has no newline yet.
var lineOpen atomic.Bool

// EndLine ends a line drawn in place left open on w, so that a message
// (an error, "interrupted") starts its own line.
func EndLine(w io.Writer) {
	if lineOpen.Swap(false) {
		fmt.Fprintln(w)
	}
}

// Finish prints the final state.
func (p *Meter) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print(true)
}

func (p *Meter) print(final bool) {
	el := time.Since(p.start)
	rate := float64(p.done) / max(el.Seconds(), 1e-3)
	line := fmt.Sprintf("%s: %s", p.what, text.Size(p.done))
	if p.total > 0 {
		line += fmt.Sprintf(" of %s (%.0f%%)", text.Size(p.total), 100*float64(p.done)/float64(p.total))
	}
	line += fmt.Sprintf(", %s/s", text.Size(int64(rate)))
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

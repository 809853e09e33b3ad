// Package interrupt ends a command cleanly on SIGINT or SIGTERM. The
// signal cancels the command's context; the command cleans up and
// returns. A command blocked in a read that never returns (a silent
// pipe, a terminal) gets a grace period, then the registered cleanups
// (AtInterrupt) run and the process ends all the same. A second signal
// kills at once. A command that holds on (Hold: a mount with files open)
// is not ended by the grace period while it drains; a second signal
// forces it to end, a third kills.
package interrupt

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Options say how Run ends an interrupted command.
type Options struct {
	// Grace is how long an interrupted command may take to stop.
	Grace time.Duration
	// Status is the exit status of a command that ended because it was
	// interrupted; Run returns 128+N for it, N the signal (130, 143).
	Status int
	// GaveUp is called when the grace period ends with the command still
	// running, after the cleanups: to say that it was interrupted.
	GaveUp func()
}

// Run runs cmd with a context that SIGINT or SIGTERM cancels, and returns
// its exit status, or, if it does not return within the grace period
// after the signal, o.Status (as 128+N).
func Run(cmd func(ctx context.Context) int, o Options) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	stop := func() { signal.Stop(sigs) }
	defer stop()
	done := make(chan int, 1)
	go func() { done <- cmd(ctx) }()
	var got os.Signal
	select {
	case status := <-done:
		return status
	case got = <-sigs:
	}
	cancel()
	var again <-chan os.Signal // a second signal, while a command holds on
	if held, _ := Holding(); held {
		again = sigs
	} else {
		stop()
	}
	grace := time.NewTimer(o.Grace)
	var status int
wait:
	for {
		select {
		case status = <-done:
			break wait
		case got = <-again: // forced; the grace period starts again, and a third signal kills
			stop()
			again = nil
			forceHolds()
			grace.Reset(o.Grace)
		case <-grace.C:
			if _, draining := Holding(); draining && again != nil {
				grace.Reset(o.Grace)
				continue
			}
			runCleanups()
			if o.GaveUp != nil {
				o.GaveUp()
			}
			status = o.Status
			break wait
		}
	}
	if sig, ok := got.(syscall.Signal); ok && status == o.Status {
		status = 128 + int(sig)
	}
	return status
}

// cleanups are run when the process exits on a signal before the command
// has returned; commands register the removal of their partial outputs.
var cleanups struct {
	sync.Mutex
	fns map[*int]func()
}

// AtInterrupt registers fn to run if the process is interrupted and the
// command does not return in time; the returned function unregisters it.
func AtInterrupt(fn func()) (unregister func()) {
	key := new(int)
	cleanups.Lock()
	defer cleanups.Unlock()
	if cleanups.fns == nil {
		cleanups.fns = map[*int]func(){}
	}
	cleanups.fns[key] = fn
	return func() {
		cleanups.Lock()
		defer cleanups.Unlock()
		delete(cleanups.fns, key)
	}
}

func runCleanups() {
	cleanups.Lock()
	defer cleanups.Unlock()
	for _, fn := range cleanups.fns {
		fn()
	}
}

// holds are registered by commands that others use while they run
// (mount): interrupted, such a command may run on past the grace period
// while draining says its users are not done, and a second signal calls
// force, which must make it return at once.
var holds struct {
	sync.Mutex
	m map[*int]hold
}

type hold struct {
	draining func() bool
	force    func()
}

// Hold registers a hold; the returned function releases it.
func Hold(draining func() bool, force func()) (release func()) {
	key := new(int)
	holds.Lock()
	defer holds.Unlock()
	if holds.m == nil {
		holds.m = map[*int]hold{}
	}
	holds.m[key] = hold{draining, force}
	return func() {
		holds.Lock()
		defer holds.Unlock()
		delete(holds.m, key)
	}
}

// Holding reports whether a command holds on, and whether one is
// draining.
func Holding() (held, draining bool) {
	holds.Lock()
	defer holds.Unlock()
	for _, h := range holds.m {
		held = true
		draining = draining || h.draining()
	}
	return held, draining
}

func forceHolds() {
	holds.Lock()
	defer holds.Unlock()
	for _, h := range holds.m {
		h.force()
	}
}

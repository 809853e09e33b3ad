//go:build unix

package interrupt

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const grace = 100 * time.Millisecond

func kill(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
}

// TestRun: a command that returns is its status; one interrupted and
// ending as interrupted is 128+signal; one that fails otherwise keeps its
// status.
func TestRun(t *testing.T) {
	o := Options{Grace: 10 * time.Second, Status: 130}
	if st := Run(func(context.Context) int { return 3 }, o); st != 3 {
		t.Errorf("status %d, want 3", st)
	}
	for sig, want := range map[syscall.Signal]int{syscall.SIGINT: 130, syscall.SIGTERM: 143} {
		st := Run(func(ctx context.Context) int {
			kill(t, sig)
			<-ctx.Done()
			return 130
		}, o)
		if st != want {
			t.Errorf("%v: status %d, want %d", sig, st, want)
		}
	}
	st := Run(func(ctx context.Context) int {
		kill(t, syscall.SIGINT)
		<-ctx.Done()
		return 1 // failed otherwise while stopping
	}, o)
	if st != 1 {
		t.Errorf("status %d, want 1", st)
	}
}

// TestGaveUp: a command that does not return within the grace period is
// left; the cleanups registered run (not those unregistered), and GaveUp
// says so.
func TestGaveUp(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	var cleaned, unregistered, said atomic.Bool
	start := time.Now()
	st := Run(func(ctx context.Context) int {
		AtInterrupt(func() { cleaned.Store(true) })
		AtInterrupt(func() { unregistered.Store(true) })()
		kill(t, syscall.SIGTERM)
		<-stuck
		return 0
	}, Options{Grace: grace, Status: 130, GaveUp: func() { said.Store(cleaned.Load()) }})
	if st != 143 || !cleaned.Load() || unregistered.Load() || !said.Load() {
		t.Errorf("status %d, cleaned %v, unregistered cleanup run %v, GaveUp after the cleanups %v", st, cleaned.Load(), unregistered.Load(), said.Load())
	}
	if d := time.Since(start); d < grace || d > 5*time.Second {
		t.Errorf("gave up after %v, grace %v", d, grace)
	}
}

// TestHold: a command that holds on and drains outlives the grace
// period; a second signal forces it, and its status is that signal's.
func TestHold(t *testing.T) {
	var gaveUp atomic.Bool
	st := Run(func(ctx context.Context) int {
		forced := make(chan struct{})
		defer Hold(func() bool { return true }, func() { close(forced) })()
		if held, draining := Holding(); !held || !draining {
			t.Errorf("Holding() = %v, %v", held, draining)
		}
		kill(t, syscall.SIGINT)
		<-ctx.Done()
		time.Sleep(3 * grace) // past the grace period, held
		kill(t, syscall.SIGTERM)
		select {
		case <-forced:
		case <-time.After(10 * time.Second):
			t.Error("the second signal did not force the hold")
		}
		return 130
	}, Options{Grace: grace, Status: 130, GaveUp: func() { gaveUp.Store(true) }})
	if st != 143 || gaveUp.Load() {
		t.Errorf("status %d (want 143), gave up %v", st, gaveUp.Load())
	}
	if held, _ := Holding(); held {
		t.Error("the hold was not released")
	}
}

package controller

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// heldWindowMetrics holds the worker inside its first ApplyFailed (called
// for a cluster held back) until a reconcile has started and ended, or
// for at most a bound: before the lock order was fixed, holdBack called
// it (through heldEvent) with w.mu held, and a reconcile of a cluster in
// transition waited there for w.mu (quietTargets) while holding c.mu,
// which heldEvent's addEvent then waited for.
type heldWindowMetrics struct {
	nopMetrics
	c       *Controller
	once    sync.Once
	entered chan struct{}
}

func (m *heldWindowMetrics) ApplyFailed(string, error) {
	m.once.Do(func() {
		close(m.entered)
		m.c.Trigger()
		// Wait for the reconcile to start, then for it to end (it never
		// does while the locks are taken in opposite orders): a bounded
		// window, not a condition of the test's result.
		deadline := time.Now().Add(500 * time.Millisecond)
		for !m.c.reconciling.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		for m.c.reconciling.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	})
}

// runBounded runs c until the test ends; the cleanup waits a bounded time
// for Run to return (a deadlocked controller fails the test, not hangs it).
func runBounded(t *testing.T, c *Controller) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return 10s after its context ended")
		}
	})
	return done
}

// dumpIfStuck fails the test with every goroutine's stack.
func dumpIfStuck(t *testing.T, what string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	t.Log(string(buf[:n]))
	t.Fatal(what)
}

// TestHeldBackDuringTransitionNoDeadlock: a target refusing one cluster's
// services (held back: heldEvent records it) while another cluster is in
// transition (each reconcile asks the workers whether they are quiet)
// must not deadlock the controller: c.mu is never taken under w.mu.
func TestHeldBackDuringTransitionNoDeadlock(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	rt := &refusingTarget{bad: map[string]bool{}, has: map[string]services.Service{}}
	m := &heldWindowMetrics{entered: make(chan struct{})}
	c := New(inv, []target.Target{rt}, Options{Debounce: time.Millisecond, Metrics: m, PatroniCAFile: "/nonexistent"})
	m.c = c
	runBounded(t, c)
	obs := func(rev int64, testLeader, liveLeader string) {
		s := state(rev, testLeader, 100, "pg-test-1", "pg-test-2", "pg-test-3")
		s.Clusters["pg-live"] = liveState(liveLeader, "pg-live-1", "pg-live-2")
		c.Observe(s)
	}
	obs(10, "pg-test-1", "pg-live-1")
	eventually(t, "first apply", func() bool { return c.workers[0].snapshot().InSync })
	// pg-test switches over (a transition with a fence in flight: every
	// reconcile asks the workers whether they are quiet) while the HAProxy
	// refuses pg-live's new services.
	rt.setBad("pg-live", true)
	obs(11, "pg-test-2", "pg-live-2")
	select {
	case <-m.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("pg-live never held back")
	}
	done := make(chan Status, 1)
	go func() { done <- c.Status() }()
	select {
	case st := <-done:
		_ = st
	case <-time.After(5 * time.Second):
		dumpIfStuck(t, "deadlock: Status blocked 5s (c.mu held by a reconcile waiting for w.mu, held by holdBack waiting for c.mu)")
	}
	eventually(t, "held_back event in the history", func() bool {
		for _, e := range c.Status().History {
			if e.Kind == "held_back" && e.Cluster == "pg-live" {
				return true
			}
		}
		return false
	})
	c.mu.Lock()
	_, inTransition := c.tx.active["pg-test"]
	c.mu.Unlock()
	if !inTransition {
		t.Log("pg-test's transition ended before the held-back cluster was recorded: the lock orders were not exercised together")
	}
}

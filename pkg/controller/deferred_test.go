package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// deferringTarget defers changes in its first applies (as the Data Plane
// API target leaves a crashed old primary's twins for the new leader's
// apply) until release is closed.
type deferringTarget struct {
	fakeTarget
	release chan struct{}
}

func (d *deferringTarget) Apply(ctx context.Context, desired []services.Service) (target.Result, error) {
	if _, err := d.fakeTarget.Apply(ctx, desired); err != nil {
		return target.Result{}, err
	}
	res := target.Result{Changes: []target.Change{{Kind: target.KindSetState, Backend: "pg-test-replica", Server: "pg-test-2"}}}
	select {
	case <-d.release:
	default:
		res.Deferred, res.RetryIn = 1, 30*time.Millisecond
	}
	return res, nil
}

// TestDeferredChangesRetried: an apply that defers changes leaves the
// target "deferring" (not in sync, not ready, the count and due time in
// status) and the worker applies the same desired state again when they
// are due, with no DCS event; once nothing is deferred it is in sync.
func TestDeferredChangesRetried(t *testing.T) {
	dt := &deferringTarget{release: make(chan struct{})}
	c := New(loadInventory(t), []target.Target{dt}, Options{Debounce: time.Millisecond})
	c.checkEvery = time.Hour
	runInBackground(t, c)
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	// (A snapshot during the retry's own apply says "applying".)
	var ts TargetStatus
	waitFor(t, func() bool { ts = c.workers[0].snapshot(); return dt.count() >= 2 && ts.State == "deferring" })
	if ts.InSync || ts.Deferred != 1 || ts.DeferredUntil.IsZero() {
		t.Errorf("while deferring: in_sync=%v deferred %d until %s", ts.InSync, ts.Deferred, ts.DeferredUntil)
	}
	waitFor(t, func() bool {
		st := c.Status()
		return !st.Ready && strings.Contains(strings.Join(st.NotReady, "\n"), "fake: deferring")
	})
	dt.mu.Lock()
	for i, a := range dt.applies {
		if !sameDesired(a, dt.applies[0]) {
			t.Errorf("apply #%d: another desired state than the first, with no DCS event", i+1)
		}
	}
	dt.mu.Unlock()
	close(dt.release)
	waitFor(t, func() bool { ts := c.workers[0].snapshot(); return ts.InSync })
	ts = c.workers[0].snapshot()
	if ts.State != "in_sync" || ts.Deferred != 0 || !ts.DeferredUntil.IsZero() {
		t.Errorf("after: state %s deferred %d until %s", ts.State, ts.Deferred, ts.DeferredUntil)
	}
	if d := c.workers[0].deferredRetryIn(); d != 0 {
		t.Errorf("after: a retry still due in %s", d)
	}
	if st := c.Status(); !st.Ready {
		t.Errorf("after: not ready: %v", st.NotReady)
	}
}

package controller

import (
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// Observe returns while a reconcile holds c.mu (the watcher's snapshots
// must not wait behind each reconcile), and the next reconcile takes the
// newest snapshot with the time of the first event it answers.
func TestObserveDoesNotWaitForReconcile(t *testing.T) {
	inv := loadInventory(t)
	ft := &fakeTarget{}
	c := New(inv, []target.Target{ft}, Options{})
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	first := state(10, "pg-test-1", 100, all...)
	c.mu.Lock() // a reconcile in progress
	done := make(chan struct{})
	go func() {
		c.Observe(first)
		c.Observe(state(11, "pg-test-1", 100, all...))
		c.Observe(state(12, "pg-test-2", 100, all...))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.mu.Unlock()
		t.Fatal("Observe waited for c.mu")
	}
	c.mu.Unlock()
	c.ReconcileOnce(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	if got := c.snaps["/pg"].Revision; got != 12 {
		t.Errorf("the reconcile planned from revision %d, want the newest, 12", got)
	}
	if leader := c.lastLeaders["pg-test"]; leader != "pg-test-2" {
		t.Errorf("leader %q after the reconcile, want pg-test-2", leader)
	}
	if len(c.inbox) != 0 || len(c.inboxAt) != 0 {
		t.Errorf("inbox not emptied: %d snapshots, %d times", len(c.inbox), len(c.inboxAt))
	}
}

package controller

import (
	"context"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// silentProber never answers (a REST API that hangs).
type silentProber struct{}

func (silentProber) Probe(ctx context.Context, _ string) patroni.ProbeResult {
	<-ctx.Done()
	return patroni.ProbeResult{Err: ctx.Err().Error()}
}

// TestRoleHoldEndsOnTime: while the new leader's REST API does not answer,
// its role changes are held back for maxRoleHold; when the hold ends, the
// loop reconciles at that time by itself (not at the next staleness tick,
// which this test puts an hour away).
func TestRoleHoldEndsOnTime(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Debounce: time.Millisecond, Prober: silentProber{}})
	c.checkEvery = time.Hour
	runInBackground(t, c)
	c.Observe(withAPI(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3")))
	waitFor(t, func() bool { return ft.count() > 0 && backups(ft.last(), "pg-test-replica") == "pg-test-1" })
	// Patroni's switchover: the leader key is released (the write fence
	// goes on), then the candidate takes it.
	c.Observe(withAPI(state(11, "", 100, "pg-test-1", "pg-test-2", "pg-test-3")))
	waitFor(t, func() bool { return forcedDown(ft.last(), "pg-test-primary", "pg-test-1") })
	// Its member key says promoted (Patroni writes master once the
	// promotion is over, which would count: no hold then).
	moved := time.Now()
	s := withAPI(state(12, "pg-test-2", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	s.Clusters["pg-test"].Members["pg-test-2"].Role = patroni.RolePromoted
	s.Clusters["pg-test"].Members["pg-test-2"].RawRole = patroni.RolePromoted
	c.Observe(s)
	deadline := time.Now().Add(10 * time.Second)
	for backups(ft.last(), "pg-test-replica") != "pg-test-2" {
		if time.Now().After(deadline) {
			t.Fatalf("the role change never came after the hold (backups %q)", backups(ft.last(), "pg-test-replica"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(moved); took < maxRoleHold {
		t.Fatalf("role change applied %s after the leader key moved: not held for %s", took, maxRoleHold)
	}
}

// runInBackground runs c until the test ends.
func runInBackground(t *testing.T, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// withAPI gives every member of s a REST API URL (what is probed).
func withAPI(s patroni.Snapshot) patroni.Snapshot {
	for _, cs := range s.Clusters {
		for _, m := range cs.Members {
			m.APIURL = "http://" + m.Host + ":8008/patroni"
		}
	}
	return s
}

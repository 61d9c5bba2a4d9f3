package controller

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestLostLeadershipStatus: an instance that stops leading reports its
// targets standby at once (not in_sync: another instance drives them now),
// stays ready (a standby able to lead), and once it leads again in a new
// term re-applies what it had applied before (the other leader may have
// changed the HAProxy meanwhile) instead of calling the target in sync
// because its own desired state did not change.
func TestLostLeadershipStatus(t *testing.T) {
	var mu sync.Mutex
	term, leading := int64(1), true
	set := func(tm int64, l bool) {
		mu.Lock()
		term, leading = tm, l
		mu.Unlock()
	}
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Term: func() (int64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return term, leading
	}})
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	c.Observe(state(10, "pg-test-1", 100, all...))
	step(c, true)
	if st := c.Status(); !st.Ready || st.Targets[0].State != "in_sync" || ft.count() != 1 {
		t.Fatalf("leader: ready %v %q %+v, %d applies", st.Ready, st.NotReady, st.Targets[0], ft.count())
	}

	set(1, false) // the lease is lost; no job has come yet
	st := c.Status()
	if ts := st.Targets[0]; ts.State != "standby" || ts.InSync {
		t.Fatalf("no longer leading, before any job: %+v", ts)
	}
	if !st.Ready {
		t.Fatalf("a standby with a fresh view is not ready: %q", st.NotReady)
	}
	// A DCS event that changes nothing here.
	c.Observe(state(11, "pg-test-1", 200, all...))
	step(c, false)
	if ts := c.Status().Targets[0]; ts.State != "standby" || ts.InSync || ft.count() != 1 {
		t.Fatalf("no longer leading, after a job: %+v, %d applies", ts, ft.count())
	}

	set(2, true) // elected again, in a new term
	if st := c.Status(); st.Ready || st.Targets[0].InSync {
		t.Fatalf("leading again, nothing re-checked yet: ready %v %+v", st.Ready, st.Targets[0])
	}
	step(c, false) // the reconcile the election's OnChange triggers
	if st := c.Status(); ft.count() != 2 || !st.Ready || st.Targets[0].State != "in_sync" {
		t.Fatalf("leading again: %d applies (want the state re-applied), ready %v %+v", ft.count(), st.Ready, st.Targets[0])
	}
}

// TestNewTermReapplies: a worker that never saw its instance stop leading
// (no job came while it did not) still re-applies when a job of a new term
// comes: the state it applied was written in an earlier term.
func TestNewTermReapplies(t *testing.T) {
	var mu sync.Mutex
	term := int64(1)
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Term: func() (int64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return term, true
	}})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, true)
	step(c, false)
	if ft.count() != 1 {
		t.Fatalf("same term, same state: %d applies, want 1", ft.count())
	}
	mu.Lock()
	term = 3
	mu.Unlock()
	step(c, false)
	if ts := c.Status().Targets[0]; ft.count() != 2 || ts.State != "in_sync" {
		t.Fatalf("new term: %d applies, want 2; %+v", ft.count(), ts)
	}
}

// TestTransitionInFlightStatus: while a switchover is followed, status
// counts it and names it on its cluster (cause, since when, from whom); it
// was visible only once ended, as a history event.
func TestTransitionInFlightStatus(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := runTransitionController(t, ft, nopMetrics{})
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	if st := c.Status(); st.TransitionsInFlight != 0 || st.Clusters[0].Transition != "" {
		t.Fatalf("steady state: %d in flight, %q", st.TransitionsInFlight, st.Clusters[0].Transition)
	}
	c.Observe(a.with(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"), ""))
	eventually(t, "the switchover in status", func() bool {
		st := c.Status()
		return st.TransitionsInFlight == 1 && strings.HasPrefix(st.Clusters[0].Transition, "switchover requested since ") &&
			strings.HasSuffix(st.Clusters[0].Transition, ": from pg-test-1 to (no new leader yet)")
	})
}

// TestStandbyHoldsNothingBack: a leader that held a cluster back on an
// HAProxy and then stopped leading no longer reports it held back (not
// ready for it, pgsvc_target_held_back_clusters > 0): it holds nothing, the
// elected instance drives that HAProxy. Leading again, it re-applies.
func TestStandbyHoldsNothingBack(t *testing.T) {
	var mu sync.Mutex
	term, leading := int64(1), true
	set := func(tm int64, l bool) {
		mu.Lock()
		term, leading = tm, l
		mu.Unlock()
	}
	topo := manyClusters(t, 4)
	rt := &refusingTarget{bad: map[string]bool{"pg-c2": true}, has: map[string]services.Service{}}
	c := New(topo, []target.Target{rt}, Options{Term: func() (int64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return term, leading
	}})
	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 1, At: time.Now(), Clusters: map[string]*patroni.ClusterState{}})
	step(c, false)
	if st := c.Status(); len(st.Targets[0].HeldBack) != 1 || st.Ready {
		t.Fatalf("leader: held %+v, ready %v", st.Targets[0].HeldBack, st.Ready)
	}

	set(1, false)
	check := func(when string) {
		t.Helper()
		st := c.Status()
		if ts := st.Targets[0]; ts.State != "standby" || len(ts.HeldBack) != 0 {
			t.Fatalf("standby, %s: %+v", when, ts)
		}
		if !st.Ready {
			t.Fatalf("standby, %s: not ready %q", when, st.NotReady)
		}
	}
	check("before any job")
	step(c, true)
	check("after a job")
	if d := c.workers[0].heldRetryIn(); d != 0 {
		t.Errorf("a standby keeps retrying a held cluster in %s", d)
	}

	set(2, true)
	rt.setBad("pg-c2", false)
	step(c, false)
	if st := c.Status(); !st.Ready || st.Targets[0].State != "in_sync" {
		t.Fatalf("leading again: ready %v %q %+v", st.Ready, st.NotReady, st.Targets[0])
	}
}

// TestStandbyNotFailing: a leader whose target kept failing and that then
// stopped leading does not report consecutive failures as a standby (an
// alert on pgsvc_target_consecutive_failures fired on it for good): it
// applies nothing. The last error stays, as the last one seen.
func TestStandbyNotFailing(t *testing.T) {
	var mu sync.Mutex
	leading := true
	ft := &fakeTarget{err: errors.New("connection refused")}
	c := New(loadInventory(t), []target.Target{ft}, Options{Term: func() (int64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return 1, leading
	}})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, true)
	step(c, true)
	if ts := c.Status().Targets[0]; ts.State != "failing" || ts.Failures != 2 {
		t.Fatalf("leader: %+v", ts)
	}
	mu.Lock()
	leading = false
	mu.Unlock()
	for _, when := range []string{"before any job", "after a job"} {
		if ts := c.Status().Targets[0]; ts.State != "standby" || ts.Failures != 0 || ts.LastError != "connection refused" {
			t.Fatalf("standby, %s: %+v", when, ts)
		}
		step(c, true)
	}
}

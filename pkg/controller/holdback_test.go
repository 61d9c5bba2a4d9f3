package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// refusingTarget refuses (a rejection, as `haproxy -c` or a failed bind)
// every desired set that contains a service of a cluster in bad, and
// otherwise keeps what it is given, per service (never deleting others).
type refusingTarget struct {
	mu      sync.Mutex
	bad     map[string]bool
	has     map[string]services.Service
	applies int
}

func (r *refusingTarget) Name() string { return "refusing" }
func (r *refusingTarget) Diff(context.Context, []services.Service) ([]target.Change, error) {
	return nil, nil
}
func (r *refusingTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applies++
	for _, s := range d {
		if r.bad[s.Cluster] {
			return target.Result{}, target.Reject(errors.New("new config rejected by haproxy -c: backend " + s.Name))
		}
	}
	var ch []target.Change
	for _, s := range d {
		r.has[s.Name] = s
		ch = append(ch, target.Change{Kind: target.KindUpdateServer, Backend: s.Name})
	}
	return target.Result{Changes: ch, Reloaded: true}, nil
}
func (r *refusingTarget) setBad(c string, b bool) { r.mu.Lock(); r.bad[c] = b; r.mu.Unlock() }
func (r *refusingTarget) backups(svc string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return backups([]services.Service{r.has[svc]}, svc)
}

// TestRefusedClusterHeldBack: one cluster whose services the HAProxy
// refuses is held back (its last good state kept), the other cluster's
// switchover is applied; status says which cluster and services and why;
// the refused cluster is retried with backoff and applied once accepted
// (issue 12 row 6).
func TestRefusedClusterHeldBack(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	rt := &refusingTarget{bad: map[string]bool{}, has: map[string]services.Service{}}
	now := time.Now()
	clock := func() time.Time { return now }
	c := New(inv, []target.Target{rt}, Options{Now: clock, RetryMin: time.Second, RetryMax: 8 * time.Second})
	w := c.workers[0]
	obs := func(rev int64, testLeader, liveLeader string) {
		s := state(rev, testLeader, 100, "pg-test-1", "pg-test-2", "pg-test-3")
		s.Clusters["pg-live"] = liveState(liveLeader, "pg-live-1", "pg-live-2")
		c.Observe(s)
	}
	obs(10, "pg-test-1", "pg-live-1")
	step(c, false)
	if rt.backups("pg-test-replica") != "pg-test-1" {
		t.Fatalf("initial apply: %q", rt.backups("pg-test-replica"))
	}

	// pg-live's new state is refused; pg-test switches over at the same time.
	rt.setBad("pg-live", true)
	obs(11, "pg-test-2", "pg-live-2")
	step(c, false)
	if got := rt.backups("pg-test-replica"); got != "pg-test-2" {
		t.Errorf("pg-test's switchover not applied next to a refused cluster: backups %q", got)
	}
	if got := serverNames([]services.Service{rt.has["pg-live-primary"]}, "pg-live-primary"); got == "" {
		t.Error("pg-live's last good services are gone")
	}
	ts := w.snapshot()
	if ts.State != "partial" || ts.InSync || len(ts.HeldBack) != 1 {
		t.Fatalf("target status %s in_sync=%v held=%+v, want partial with pg-live held", ts.State, ts.InSync, ts.HeldBack)
	}
	h := ts.HeldBack[0]
	if h.Cluster != "pg-live" || strings.Join(h.Services, ",") != "pg-live-primary,pg-live-replica" || !strings.Contains(h.Error, "rejected") {
		t.Errorf("held back = %+v, want pg-live, its services and the reason", h)
	}
	st := c.Status()
	if st.Ready || !strings.Contains(strings.Join(st.NotReady, "\n"), "cluster pg-live held back") {
		t.Errorf("readiness does not name the held cluster: %v", st.NotReady)
	}
	if countEvents(st.History, "held_back") != 1 {
		t.Errorf("%d held_back events, want 1", countEvents(st.History, "held_back"))
	}

	// Before its retry time the refused cluster is not tried again, even on
	// new events or a resync (backoff): only pg-test's set is applied.
	n := rt.applies
	obs(12, "pg-test-2", "pg-live-2")
	step(c, true)
	if rt.applies != n+1 {
		t.Errorf("%d applies for one resync during the backoff, want 1 (without pg-live)", rt.applies-n)
	}
	if w.snapshot().HeldBack[0].Failures != 1 {
		t.Error("the refused cluster was retried before its backoff")
	}
	// Due: retried, refused again, the backoff doubles.
	now = now.Add(1100 * time.Millisecond)
	step(c, true)
	h = w.snapshot().HeldBack[0]
	if h.Failures != 2 || h.NextTry.Sub(now) != 2*time.Second {
		t.Errorf("after a second refusal: failures %d, next try in %s; want 2, 2s", h.Failures, h.NextTry.Sub(now))
	}
	if w.heldRetryIn() != 2*time.Second {
		t.Errorf("worker retries the held cluster in %s, want 2s", w.heldRetryIn())
	}

	// Accepted again: applied, nothing held, ready.
	rt.setBad("pg-live", false)
	now = now.Add(2100 * time.Millisecond)
	step(c, true)
	ts = w.snapshot()
	if len(ts.HeldBack) != 0 || ts.State != "in_sync" || !ts.InSync {
		t.Errorf("after the fix: %s in_sync=%v held=%+v", ts.State, ts.InSync, ts.HeldBack)
	}
	if got := rt.backups("pg-live-replica"); got != "" {
		t.Logf("pg-live-replica backups %q", got)
	}
	if !c.Status().Ready {
		t.Errorf("not ready after the fix: %v", c.Status().NotReady)
	}
}

// TestRefusedEverywhereIsAFailure: when every cluster is refused on its own
// the problem is not one cluster's: the target fails as a whole.
func TestRefusedEverywhereIsAFailure(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	rt := &refusingTarget{bad: map[string]bool{"pg-test": true, "pg-live": true}, has: map[string]services.Service{}}
	c := New(inv, []target.Target{rt}, Options{})
	s := state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3")
	s.Clusters["pg-live"] = liveState("pg-live-1", "pg-live-1", "pg-live-2")
	c.Observe(s)
	step(c, false)
	ts := c.workers[0].snapshot()
	if ts.State != "failing" || len(ts.HeldBack) != 0 {
		t.Errorf("state %s held %+v, want failing and nothing held", ts.State, ts.HeldBack)
	}
}

// TestTransientErrorNotBisected: an unreachable HAProxy is not a refusal:
// no bisection, no cluster held back.
func TestTransientErrorNotBisected(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{err: errors.New("connection refused")}
	c := New(inv, []target.Target{ft}, Options{})
	s := state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3")
	s.Clusters["pg-live"] = liveState("pg-live-1", "pg-live-1", "pg-live-2")
	c.Observe(s)
	step(c, false)
	if ts := c.workers[0].snapshot(); ts.State != "failing" || len(ts.HeldBack) != 0 {
		t.Errorf("state %s held %+v", ts.State, ts.HeldBack)
	}
}

// TestFailingTargetBacksOffAcrossEvents: the same failing work is not
// retried at every DCS event or resync, only when its backoff is due.
func TestFailingTargetBacksOffAcrossEvents(t *testing.T) {
	ft := &fakeTarget{err: target.Reject(errors.New("haproxy reload failed"))}
	c := New(loadInventory(t), []target.Target{ft}, Options{RetryMin: 400 * time.Millisecond, RetryMax: time.Second})
	w := c.workers[0]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	start := time.Now()
	for time.Since(start) < time.Second {
		c.ReconcileOnce(true) // same desired each time (a resync storm)
		time.Sleep(20 * time.Millisecond)
	}
	got := w.snapshot().Failures
	// 0s, 0.4s, 1.2s: at most 3 attempts in the first second (+1 slack).
	if got < 2 || got > 4 {
		t.Errorf("%d attempts in 1s with a 400ms backoff under ~50 identical jobs, want 2-4", got)
	}
}

// TestWorkOfAnOlderTermDropped: work planned under one election term is
// never written in another (a leader paused across a loss and a new win),
// and a loss inside an apply stops it at the next write check.
func TestWorkOfAnOlderTermDropped(t *testing.T) {
	var term int64 = 1
	leading := true
	var mu sync.Mutex
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Term: func() (int64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return term, leading
	}})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	c.ReconcileOnce(false) // planned in term 1
	mu.Lock()
	term = 2 // lost and won again before the worker ran
	mu.Unlock()
	w := c.workers[0]
	j := w.pending
	w.pending = nil
	if !w.handle(context.Background(), j) || ft.count() != 0 {
		t.Fatalf("work of term 1 applied in term 2 (%d applies)", ft.count())
	}
	if st := w.snapshot(); st.State != "standby" {
		t.Errorf("state %s after dropping, want standby", st.State)
	}
	// Planned and applied in the same term: written; the write check
	// inside the apply sees a loss.
	step(c, true)
	if ft.count() != 1 {
		t.Fatalf("%d applies in the planning term, want 1", ft.count())
	}
	var inApply error
	pt := &probeTarget{fn: func(ctx context.Context) error {
		mu.Lock()
		leading = false // the lease ran out during the apply
		mu.Unlock()
		inApply = target.CheckWrite(ctx)
		return inApply
	}}
	mu.Lock()
	leading = true
	mu.Unlock()
	c2 := New(loadInventory(t), []target.Target{pt}, Options{Term: c.opts.Term})
	c2.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c2, false)
	if !errors.Is(inApply, target.ErrNotLeader) {
		t.Errorf("write check inside the apply = %v, want ErrNotLeader", inApply)
	}
	if st := c2.workers[0].snapshot(); st.State != "standby" || st.Failures != 0 {
		t.Errorf("after a loss inside the apply: state %s, failures %d; want standby, 0", st.State, st.Failures)
	}
}

// probeTarget runs fn inside Apply.
type probeTarget struct{ fn func(context.Context) error }

func (p *probeTarget) Name() string { return "probe" }
func (p *probeTarget) Diff(context.Context, []services.Service) ([]target.Change, error) {
	return nil, nil
}
func (p *probeTarget) Apply(ctx context.Context, _ []services.Service) (target.Result, error) {
	return target.Result{}, p.fn(ctx)
}

// TestBisectionSkipsTheKnownRefusedSet: one refused cluster among eight is
// found without sending any set twice: when the first half of a refused set
// applies cleanly, the second half on top of it is that refused set again,
// so it is split without another apply (on the Data Plane API each refused
// apply costs a commit and two reloads).
func TestBisectionSkipsTheKnownRefusedSet(t *testing.T) {
	topo := manyClusters(t, 8)
	rt := &refusingTarget{bad: map[string]bool{"pg-c7": true}, has: map[string]services.Service{}}
	c := New(topo, []target.Target{rt}, Options{})
	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 1, At: time.Now(), Clusters: map[string]*patroni.ClusterState{}})
	step(c, false)
	ts := c.workers[0].snapshot()
	if len(ts.HeldBack) != 1 || ts.HeldBack[0].Cluster != "pg-c7" {
		t.Fatalf("held back %+v, want pg-c7 alone", ts.HeldBack)
	}
	for i := 0; i < 7; i++ {
		if _, ok := rt.has[fmt.Sprintf("pg-c%d-primary", i)]; !ok {
			t.Errorf("pg-c%d not applied next to the refused pg-c7", i)
		}
	}
	// The whole set (refused), then c0-c3, c4-c5 and c4-c6, each on top of
	// the good ones: 4 applies (a plain bisection sends 7).
	if rt.applies != 4 {
		t.Errorf("%d applies to find one refused cluster among 8, want 4", rt.applies)
	}
}

package controller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// fakeAPI is one member's Patroni REST API: /primary answers with the code
// and body role set by the test, and counts the requests.
type fakeAPI struct {
	srv   *httptest.Server
	mu    sync.Mutex
	code  int
	role  string
	state string
	hits  int
}

func newFakeAPI(t *testing.T, code int, role string) *fakeAPI {
	f := &fakeAPI{code: code, role: role, state: "running"}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hits++
		code, role, state := f.code, f.role, f.state
		f.mu.Unlock()
		if r.URL.Path != "/primary" {
			t.Errorf("probe of %s, want /primary", r.URL.Path)
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"state":"` + state + `","role":"` + role + `"}`))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) set(code int, role string) {
	f.mu.Lock()
	f.code, f.role = code, role
	f.mu.Unlock()
}

func (f *fakeAPI) setState(state string) {
	f.mu.Lock()
	f.state = state
	f.mu.Unlock()
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

// apis is pg-test's three members' REST APIs.
type apis map[string]*fakeAPI

// with points s's member keys at the fake APIs and sets the role the
// member keys say for the leader (Patroni rewrites it up to loop_wait after
// taking the key).
func (a apis) with(s patroni.Snapshot, leaderRole string) patroni.Snapshot {
	cs := s.Clusters["pg-test"]
	for name, m := range cs.Members {
		if f := a[name]; f != nil {
			m.APIURL = f.srv.URL + "/patroni"
		}
		if name == cs.Leader && leaderRole != "" {
			m.Role = leaderRole
		}
	}
	return s
}

// transitionMetrics records Transition calls.
type transitionMetrics struct {
	nopMetrics
	mu    sync.Mutex
	calls []time.Duration
}

func (m *transitionMetrics) Transition(cause string, d time.Duration, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ok {
		m.calls = append(m.calls, d)
	}
}

// runTransitionController runs a controller with fast probes and a short
// FenceHold until the test ends.
func runTransitionController(t *testing.T, ft *fakeTarget, m Metrics) *Controller {
	t.Helper()
	c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: 300 * time.Millisecond, PromoteWindow: 10 * time.Second, Metrics: m, PatroniCAFile: "/nonexistent"})
	runUntilEnd(t, c)
	return c
}

// runUntilEnd runs c until the test ends; then no probe goroutine may
// outlive Run.
func runUntilEnd(t *testing.T, c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if n := c.tx.running.Load(); n != 0 {
			t.Errorf("%d probe goroutines still running after Run returned", n)
		}
	})
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// afterProbes waits until f has answered n more probes.
func afterProbes(t *testing.T, f *fakeAPI, n int) {
	t.Helper()
	from := f.count()
	eventually(t, "more probes", func() bool { return f.count() >= from+n })
}

func (f *fakeTarget) all() [][]services.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]services.Service(nil), f.applies...)
}

func transitionEvents(c *Controller) []TransitionTimeline {
	var out []TransitionTimeline
	for _, e := range c.Status().History {
		if e.Kind == "transition" {
			out = append(out, *e.Transition)
		}
	}
	return out
}

// TestTransitionSwitchover follows a switchover pg-test-1 -> pg-test-2 the
// way Patroni makes it, with the REST answers moving ahead of the DCS.
func TestTransitionSwitchover(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	m := &transitionMetrics{}
	c := runTransitionController(t, ft, m)

	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	for name, f := range a {
		if n := f.count(); n != 0 {
			t.Errorf("%s probed %d times in steady state", name, n)
		}
	}

	// The request: the old primary and the named candidate are probed, the
	// write path is untouched while the old primary answers 200.
	c.Observe(a.with(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"), ""))
	eventually(t, "probes of the old primary and the candidate", func() bool {
		return a["pg-test-1"].count() > 2 && a["pg-test-2"].count() > 2
	})
	if n := a["pg-test-3"].count(); n != 0 {
		t.Errorf("pg-test-3, not the candidate, probed %d times", n)
	}
	if forcedDown(ft.last(), "pg-test-primary", "pg-test-1") {
		t.Errorf("pg-test-1 forced DOWN in the primary service at the request, want the fence at demotion, not at the request")
	}

	// Patroni demotes: it says it stops PostgreSQL while /primary still
	// answers 200, before any DCS change. Fenced at once.
	a["pg-test-1"].setState("stopping")
	eventually(t, "pg-test-1 fenced in write services", func() bool {
		last := ft.last()
		return forcedDown(last, "pg-test-primary", "pg-test-1") && forcedDown(last, "pg-test-default", "pg-test-1")
	})
	if forcedDown(ft.last(), "pg-test-replica", "pg-test-1") {
		t.Errorf("pg-test-1 forced DOWN in the replica service, want it only in write services")
	}
	if w := weightOf(ft.last(), "pg-test-primary", "pg-test-1"); w != 100 {
		t.Errorf("pg-test-1 weight %d in the primary service while fenced, want 100 (the fence is runtime health, not the file)", w)
	}

	// pg-test-2 takes the key; its member key still says replica, its
	// /primary says 200 but PostgreSQL is still in recovery: not forced UP
	// yet, and the role changes (a reload) wait for it.
	a["pg-test-2"].set(200, "replica")
	c.Observe(a.with(requested(state(12, "pg-test-2", 1, all...), "pg-test-1", "pg-test-2"), patroni.RoleReplica))
	eventually(t, "the new leader probed", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		tr := c.tx.active["pg-test"]
		return tr != nil && tr.to == "pg-test-2" && answerOf(c, tr, "pg-test-2").seen && answerOf(c, tr, "pg-test-2").last.Primary()
	})
	afterProbes(t, a["pg-test-2"], 3)
	// Meanwhile HAProxy's checks would bring it UP on that 200: it is
	// forced DOWN in the write services until it is read-write.
	eventually(t, "pg-test-2 held DOWN in write services while in recovery", func() bool {
		last := ft.last()
		return forcedDown(last, "pg-test-primary", "pg-test-2") && forcedDown(last, "pg-test-default", "pg-test-2") &&
			!forcedDown(last, "pg-test-replica", "pg-test-2")
	})
	if last := ft.last(); forcedUp(last, "pg-test-primary") != "" || backups(last, "pg-test-replica") != "pg-test-1" {
		t.Errorf("forced up %q, replica backups %q while PostgreSQL is still in recovery: want nothing forced, roles held",
			forcedUp(last, "pg-test-primary"), backups(last, "pg-test-replica"))
	}
	// Read-write: forced UP in both write services, though the member key
	// still says replica, never in the replica service; the role changes in
	// the same apply.
	a["pg-test-2"].set(200, "master")
	eventually(t, "pg-test-2 forced up", func() bool {
		last := ft.last()
		return forcedUp(last, "pg-test-primary") == "pg-test-2" && forcedUp(last, "pg-test-default") == "pg-test-2" &&
			!forcedDown(last, "pg-test-primary", "pg-test-2") && !forcedDown(last, "pg-test-default", "pg-test-2")
	})
	if got := backups(ft.last(), "pg-test-replica"); got != "pg-test-2" {
		t.Errorf("replica backups %q with the force-up, want pg-test-2", got)
	}
	if f := forcedUp(ft.last(), "pg-test-replica"); f != "" {
		t.Errorf("forced up %q in the replica service", f)
	}
	for _, applied := range ft.all() {
		if f := forcedUp(applied, "pg-test-primary"); f != "" && f != "pg-test-2" {
			t.Errorf("forced up %q, never the old primary or a member without the key", f)
		}
	}

	// FenceHold later the transition is over: fence lifted, probes stopped,
	// the timeline in the history and the metrics.
	eventually(t, "the transition's end", func() bool { return len(transitionEvents(c)) == 1 })
	eventually(t, "probes stopped", func() bool { return c.tx.running.Load() == 0 })
	eventually(t, "fence lifted and force-up over", func() bool {
		last := ft.last()
		return !forcedDown(last, "pg-test-primary", "pg-test-1") && forcedUp(last, "pg-test-primary") == ""
	})
	tl := transitionEvents(c)[0]
	if tl.Cause != "switchover requested" || tl.From != "pg-test-1" || tl.To != "pg-test-2" || tl.Requested.IsZero() ||
		tl.OldPrimaryOff.IsZero() || tl.LeaderKey.IsZero() || tl.NewPrimaryOn.IsZero() ||
		tl.OldPrimaryOff.Before(tl.Requested) || tl.NewPrimaryOn.Before(tl.OldPrimaryOff) || tl.WriteDowntime <= 0 {
		t.Errorf("timeline %+v", tl)
	}
	a["pg-test-1"].set(503, "replica")
	if tl.OffReason != "Patroni is stopping its PostgreSQL (state stopping)" {
		t.Errorf("off reason %q, want the REST answer", tl.OffReason)
	}
	m.mu.Lock()
	if len(m.calls) != 1 || m.calls[0] != tl.WriteDowntime {
		t.Errorf("downtime metric calls %v, want [%v]", m.calls, tl.WriteDowntime)
	}
	m.mu.Unlock()
}

// TestTransitionRefused: a switchover request Patroni never carries out
// leaves the write path untouched and stops the probes.
func TestTransitionRefused(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := runTransitionController(t, ft, nil)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	c.Observe(a.with(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", ""), ""))
	eventually(t, "probes of every member", func() bool {
		return a["pg-test-1"].count() > 2 && a["pg-test-2"].count() > 2 && a["pg-test-3"].count() > 2
	})
	c.Observe(a.with(state(12, "pg-test-1", 1, all...), ""))
	eventually(t, "the transition's end", func() bool { return len(transitionEvents(c)) == 1 })
	eventually(t, "probes stopped", func() bool { return c.tx.running.Load() == 0 })
	if tl := transitionEvents(c)[0]; !tl.OldPrimaryOff.IsZero() || tl.To != "" {
		t.Errorf("timeline %+v, want nothing off or on", tl)
	}
	for i, applied := range ft.all() {
		if forcedDown(applied, "pg-test-primary", "pg-test-1") {
			t.Errorf("apply %d: pg-test-1 forced DOWN, want the write path untouched", i)
		}
	}
	// The same request still in the DCS does not start another transition.
	c.Observe(a.with(requested(state(13, "pg-test-1", 1, all...), "pg-test-1", ""), ""))
	c.Observe(a.with(requested(state(14, "pg-test-1", 1, all...), "pg-test-1", ""), ""))
	eventually(t, "two more reconciles", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.decision >= 4
	})
	if n := c.tx.running.Load(); n != 0 {
		t.Errorf("%d probes for a request already seen through", n)
	}
}

// TestTransitionLeadsAgain: an old primary fenced because Patroni said it
// was stopping PostgreSQL, that then answers /primary 200 read-write again
// while it still holds the leader key (the stop did not go through), is
// forced UP at once in the write services (the fence left it DOWN, and its
// checks would take downinter and rise checks), for FenceHold only.
func TestTransitionLeadsAgain(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := runTransitionController(t, ft, nil)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	c.Observe(a.with(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"), ""))
	a["pg-test-1"].setState("stopping")
	eventually(t, "pg-test-1 fenced when Patroni stops PostgreSQL", func() bool {
		return forcedDown(ft.last(), "pg-test-primary", "pg-test-1") && forcedDown(ft.last(), "pg-test-default", "pg-test-1")
	})
	a["pg-test-1"].setState("running")
	eventually(t, "pg-test-1 forced UP, no longer fenced", func() bool {
		last := ft.last()
		return !forcedDown(last, "pg-test-primary", "pg-test-1") && forcedUp(last, "pg-test-primary") == "pg-test-1" &&
			forcedUp(last, "pg-test-default") == "pg-test-1"
	})
	if f := forcedUp(ft.last(), "pg-test-replica"); f != "" {
		t.Errorf("forced up %q in the replica service", f)
	}
	eventually(t, "the transition's end", func() bool { return len(transitionEvents(c)) == 1 })
	eventually(t, "force-up over", func() bool {
		last := ft.last()
		return forcedUp(last, "pg-test-primary") == "" && !forcedDown(last, "pg-test-primary", "pg-test-1")
	})
	for i, applied := range ft.all() {
		for _, svc := range []string{"pg-test-primary", "pg-test-default"} {
			if f := forcedUp(applied, svc); f != "" && f != "pg-test-1" {
				t.Errorf("apply %d: forced up %q in %s, want only the member that leads", i, f, svc)
			}
		}
	}
}

// TestTransitionKill9: the leader's lease expires (kill -9); the dead
// primary is fenced at once, the new leader forced UP as soon as its
// /primary answers 200 read-write, and no longer once it fails.
func TestTransitionKill9(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := runTransitionController(t, ft, nil)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })

	a["pg-test-1"].srv.Close() // dead: nothing answers
	c.Observe(a.with(state(11, "", 1, "pg-test-2", "pg-test-3"), ""))
	eventually(t, "the dead primary fenced", func() bool { return forcedDown(ft.last(), "pg-test-primary", "pg-test-1") })
	eventually(t, "the survivors probed", func() bool { return a["pg-test-2"].count() > 0 && a["pg-test-3"].count() > 0 })

	a["pg-test-3"].set(200, "master")
	c.Observe(a.with(state(12, "pg-test-3", 1, "pg-test-2", "pg-test-3"), patroni.RolePromoted))
	eventually(t, "pg-test-3 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-3" })

	// A real failure of its /primary within the window: left to HAProxy.
	a["pg-test-3"].set(503, "master")
	eventually(t, "force-up withdrawn", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "" })
	a["pg-test-3"].set(200, "master")
	// (A new primary that is on is probed every onEvery intervals: the
	// transition may end first.)
	from := a["pg-test-3"].count()
	eventually(t, "more probes, or the end", func() bool { return a["pg-test-3"].count() >= from+3 || len(transitionEvents(c)) == 1 })
	if f := forcedUp(ft.last(), "pg-test-primary"); f != "" {
		t.Errorf("forced %q up again after a real check failure", f)
	}
	eventually(t, "the transition's end", func() bool { return len(transitionEvents(c)) == 1 })
	tl := transitionEvents(c)[0]
	if tl.Cause != "leader key expired" || tl.OffReason != "its leader key expired" || tl.To != "pg-test-3" || tl.NewPrimaryOn.IsZero() {
		t.Errorf("timeline %+v", tl)
	}
}

// TestTransitionRoleHoldBounded: a new leader that never becomes read-write
// holds the role changes back for maxRoleHold at most, and is never forced
// UP.
func TestTransitionRoleHoldBounded(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := runTransitionController(t, ft, nil)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	a["pg-test-1"].set(503, "replica")
	a["pg-test-2"].set(200, "replica")
	start := time.Now()
	c.Observe(a.with(state(11, "pg-test-2", 1, all...), patroni.RolePromoted))
	eventually(t, "the roles applied after the hold", func() bool { return backups(ft.last(), "pg-test-replica") == "pg-test-2" })
	if d := time.Since(start); d < maxRoleHold {
		t.Errorf("roles applied %v after the key moved, want the hold (%v) first", d, maxRoleHold)
	}
	for _, applied := range ft.all() {
		if f := forcedUp(applied, "pg-test-primary"); f != "" {
			t.Errorf("forced up %q, never read-write", f)
		}
	}
}

// TestRuntimeRolesNotHeld: when every target applies role changes at
// runtime (Options.RuntimeRoles, the twins layout), a new leader that is not
// read-write yet does not hold the role changes back: they are applied
// while the write services still hold it DOWN (pending), and it is never
// forced UP. The controller's clock stops when the key moves, so a role
// hold (maxRoleHold by that clock) would never end.
func TestRuntimeRolesNotHeld(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	var clockMu sync.Mutex
	var frozen time.Time
	now := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		if !frozen.IsZero() {
			return frozen
		}
		return time.Now()
	}
	c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: 300 * time.Millisecond, PromoteWindow: 10 * time.Second, PatroniCAFile: "/nonexistent",
		RuntimeRoles: true, Now: now})
	runUntilEnd(t, c)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	a["pg-test-1"].set(503, "replica")
	a["pg-test-2"].set(200, "replica") // /primary 200, still read-only: pending
	clockMu.Lock()
	frozen = time.Now()
	clockMu.Unlock()
	c.Observe(a.with(state(11, "pg-test-2", 1, all...), patroni.RolePromoted))
	eventually(t, "the roles applied without a hold", func() bool { return backups(ft.last(), "pg-test-replica") == "pg-test-2" })
	last := ft.last()
	if !forcedDown(last, "pg-test-primary", "pg-test-2") {
		t.Errorf("new leader not held DOWN in the write service while not read-write: %+v", last)
	}
	for _, applied := range ft.all() {
		if f := forcedUp(applied, "pg-test-primary"); f != "" {
			t.Errorf("forced up %q, never read-write", f)
		}
	}
}

// gatedTarget is a fakeTarget whose applies wait while the gate is closed
// (a slow reload).
type gatedTarget struct {
	fakeTarget
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
}

func (g *gatedTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	return g.fakeTarget.Apply(ctx, d)
}

// TestFenceWaitsForReload: the old primary's fence is not lifted while an
// apply (a reload) is in progress, and only FenceHold after it ended: a
// reload with a server state dumped before HAProxy's checks failed brings
// the old primary back UP, and its checks start over.
func TestFenceWaitsForReload(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	gt := &gatedTarget{entered: make(chan struct{}, 1)}
	c := New(loadInventory(t), []target.Target{gt}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: 300 * time.Millisecond, PromoteWindow: 10 * time.Second, PatroniCAFile: "/nonexistent"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	defer func() {
		cancel()
		gt.mu.Lock()
		if gt.gate != nil {
			close(gt.gate)
			gt.gate = nil
		}
		gt.mu.Unlock()
		<-done
	}()
	ft := &gt.fakeTarget
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	c.Observe(a.with(state(11, "", 1, all...), ""))
	eventually(t, "pg-test-1 fenced", func() bool { return forcedDown(ft.last(), "pg-test-primary", "pg-test-1") })

	// The new leader comes on; its apply (a reload) hangs.
	gate := make(chan struct{})
	gt.mu.Lock()
	gt.gate = gate
	gt.mu.Unlock()
	a["pg-test-1"].set(503, "replica")
	a["pg-test-2"].set(200, "master")
	c.Observe(a.with(state(12, "pg-test-2", 1, all...), ""))
	<-gt.entered
	held := time.Now()
	eventually(t, "well past FenceHold", func() bool { return time.Since(held) > time.Second })
	c.mu.Lock()
	fenced := c.released["pg-test"] != nil
	c.mu.Unlock()
	if !fenced {
		t.Fatal("fence lifted while a reload is in progress")
	}
	gt.mu.Lock()
	gt.gate = nil
	gt.mu.Unlock()
	close(gate)
	released := time.Now()
	eventually(t, "fence lifted after the reload", func() bool { return !forcedDown(ft.last(), "pg-test-primary", "pg-test-1") })
	if d := time.Since(released); d < 300*time.Millisecond {
		t.Errorf("fence lifted %v after the reload ended, want FenceHold (300ms) at least", d)
	}
}

// urlProber records the URLs it is asked for and answers 503.
type urlProber struct {
	mu   sync.Mutex
	urls map[string]bool
}

func (p *urlProber) Probe(ctx context.Context, apiURL string) patroni.ProbeResult {
	p.mu.Lock()
	p.urls[apiURL] = true
	p.mu.Unlock()
	return patroni.ProbeResult{Sent: time.Now(), At: time.Now(), Code: 503}
}

// TestTransitionProbesHTTPSWithPatroniSSL: with patroni_ssl_enabled the
// REST API is probed over https even when api_url says http.
func TestTransitionProbesHTTPSWithPatroniSSL(t *testing.T) {
	inv, err := topology.Parse("test.yml", []byte(strings.Replace(testInventory,
		"vars: { pg_cluster: pg-test }", "vars: { pg_cluster: pg-test, patroni_ssl_enabled: true }", 1)))
	if err != nil {
		t.Fatal(err)
	}
	pr := &urlProber{urls: map[string]bool{}}
	c := New(inv, []target.Target{&fakeTarget{}}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond, Prober: pr})
	runUntilEnd(t, c)
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	withURL := func(s patroni.Snapshot) patroni.Snapshot {
		for name, m := range s.Clusters["pg-test"].Members {
			m.APIURL = "http://" + name + ":8008/patroni"
		}
		return s
	}
	c.Observe(withURL(state(10, "pg-test-1", 1, all...)))
	c.Observe(withURL(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2")))
	eventually(t, "probes of pg-test-1 and pg-test-2 over https", func() bool {
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return pr.urls["https://pg-test-1:8008/patroni"] && pr.urls["https://pg-test-2:8008/patroni"]
	})
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for u := range pr.urls {
		if strings.HasPrefix(u, "http://") {
			t.Errorf("probed %s over plain http", u)
		}
	}
}

// TestGhostLeaderIsNoTransition: a leader key naming no member (garbage)
// starts no transition and fences nobody.
func TestGhostLeaderIsNoTransition(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	c.Observe(state(10, "pg-test-1", 1, all...))
	step(c, false)
	ghost := state(11, "pg-test-1", 1, all...)
	ghost.Clusters["pg-test"].Leader = "ghost-9"
	c.Observe(ghost)
	step(c, false)
	c.mu.Lock()
	n := len(c.tx.active)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d transitions for a ghost leader", n)
	}
	if forcedDown(ft.last(), "pg-test-primary", "pg-test-1") {
		t.Errorf("pg-test-1 forced DOWN after a ghost leader key, want untouched")
	}
}

// TestTransitionMemberKeyBeforeREST: a new leader whose member key says
// running primary (Patroni writes role master only once the promotion is
// over) is forced UP in the write services without waiting for its REST
// API, which has not answered anything yet; one whose REST API answered
// /primary 200 still in recovery stays held when its member key comes to
// say running master (it is asked every probe interval: its answers are
// newer than the key).
func TestTransitionMemberKeyBeforeREST(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	run := func(t *testing.T, pr Prober) (*fakeTarget, *Controller, apis) {
		a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
			"pg-test-3": newFakeAPI(t, 503, "replica")}
		ft := &fakeTarget{}
		c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
			FenceHold: 300 * time.Millisecond, PromoteWindow: time.Minute, PatroniCAFile: "/nonexistent", Prober: pr})
		runUntilEnd(t, c)
		c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
		eventually(t, "first apply", func() bool { return ft.count() == 1 })
		a["pg-test-1"].set(503, "replica")
		return ft, c, a
	}
	t.Run("no REST answer yet", func(t *testing.T) {
		// No REST API answers, nor fails, while the test runs.
		ft, c, a := run(t, silentProber{})
		// pg-test-2 takes the key; its member key says running master.
		c.Observe(a.with(state(11, "pg-test-2", 1, all...), patroni.RolePrimary))
		eventually(t, "pg-test-2 forced up on its member key", func() bool {
			last := ft.last()
			return forcedUp(last, "pg-test-primary") == "pg-test-2" && forcedUp(last, "pg-test-default") == "pg-test-2" &&
				!forcedDown(last, "pg-test-primary", "pg-test-2")
		})
		c.mu.Lock()
		tr := c.tx.active["pg-test"]
		var seen bool
		if tr != nil {
			seen = answerOf(c, tr, "pg-test-2").seen
		}
		c.mu.Unlock()
		if seen {
			t.Errorf("pg-test-2's REST API answered (or failed): the test wants it forced up before any answer")
		}
	})
	t.Run("REST answered in recovery", func(t *testing.T) {
		ft, c, a := run(t, nil)
		a["pg-test-2"].set(200, "replica") // /primary 200, still in recovery
		c.Observe(a.with(state(11, "pg-test-2", 1, all...), patroni.RolePromoted))
		eventually(t, "pg-test-2 probed", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			tr := c.tx.active["pg-test"]
			return tr != nil && tr.to == "pg-test-2" && answerOf(c, tr, "pg-test-2").seen && answerOf(c, tr, "pg-test-2").last.Primary()
		})
		afterProbes(t, a["pg-test-2"], 3)
		eventually(t, "pg-test-2 held DOWN in the write services", func() bool {
			return forcedDown(ft.last(), "pg-test-primary", "pg-test-2")
		})
		// Its member key now says running master; its REST API, asked
		// every probe interval, still says in recovery: held.
		n := ft.count()
		c.Observe(a.with(state(12, "pg-test-2", 1, all...), patroni.RolePrimary))
		eventually(t, "the new member key applied", func() bool { return ft.count() > n })
		afterProbes(t, a["pg-test-2"], 3)
		if !forcedDown(ft.last(), "pg-test-primary", "pg-test-2") {
			t.Errorf("pg-test-2 no longer held while its REST API says it is in recovery")
		}
		for _, applied := range ft.all() {
			if f := forcedUp(applied, "pg-test-primary"); f != "" {
				t.Errorf("forced up %q while its REST API says it is in recovery", f)
			}
		}
		a["pg-test-2"].set(200, "master")
		eventually(t, "pg-test-2 forced up once read-write", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-2" })
	})
}

package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// heldDown reports whether server is forced and held DOWN (a new leader
// not read-write yet) in service svc.
func heldDown(svcs []services.Service, svc, server string) bool {
	for _, s := range svcs {
		if s.Name != svc {
			continue
		}
		for _, sv := range s.Servers {
			if sv.Name == server {
				return sv.ForceDown && sv.HoldDown
			}
		}
	}
	return false
}

// runtimeTarget is a fakeTarget that applies at runtime (never reloads):
// the fence's re-assertions every check (50 ms here, less than FenceHold)
// would otherwise each be a reload, and a fence lifts only FenceHold after
// the last one.
type runtimeTarget struct{ fakeTarget }

func (r *runtimeTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	res, err := r.fakeTarget.Apply(ctx, d)
	res.Reloaded = false
	return res, err
}

// staleController runs a controller whose namespace /pg loses etcd when
// the returned flag is set to false.
func staleController(t *testing.T, ft *runtimeTarget) (*Controller, *atomic.Bool) {
	t.Helper()
	c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: 300 * time.Millisecond, PromoteWindow: time.Second, PatroniCAFile: "/nonexistent"})
	c.checkEvery = 50 * time.Millisecond
	var connected atomic.Bool
	connected.Store(true)
	c.SetHealth("/pg", func() patroni.WatchStatus {
		return patroni.WatchStatus{Connected: connected.Load(), LastContact: time.Now()}
	})
	runUntilEnd(t, c)
	return c, &connected
}

// frozenReason is why pg-test is frozen ("" when it is not).
func frozenReason(c *Controller, cluster string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frozen[cluster]
}

// transitionOver reports whether cluster has no transition in flight and
// no probe runs.
func transitionOver(c *Controller, cluster string) bool {
	c.mu.Lock()
	_, active := c.tx.active[cluster]
	c.mu.Unlock()
	return !active && c.tx.running.Load() == 0
}

// TestStaleEndsForceUp: a new primary forced UP when etcd becomes
// unreachable is not kept forced UP for the whole outage: its transition
// goes on from its REST API's answers and the clock, so when it demotes
// (/primary 503) the force-UP goes at once, the transition ends and its
// probes stop; the cluster stays frozen on its last roles.
func TestStaleEndsForceUp(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &runtimeTarget{}
	c, connected := staleController(t, ft)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	a["pg-test-1"].srv.Close()
	a["pg-test-3"].set(200, "master")
	c.Observe(a.with(state(12, "pg-test-3", 1, "pg-test-2", "pg-test-3"), patroni.RolePromoted))
	eventually(t, "pg-test-3 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-3" })
	replicas := backups(ft.last(), "pg-test-replica")

	connected.Store(false) // etcd lost for the controller
	eventually(t, "pg-test frozen", func() bool { return frozenReason(c, "pg-test") != "" })
	a["pg-test-3"].set(503, "replica") // demoted (Patroni lost etcd too)
	eventually(t, "pg-test-3 no longer forced up", func() bool {
		return ft.count() > 0 && forcedUp(ft.last(), "pg-test-primary") == ""
	})
	eventually(t, "the transition over, its probes stopped", func() bool { return transitionOver(c, "pg-test") })
	if got := backups(ft.last(), "pg-test-replica"); got != replicas {
		t.Errorf("a frozen cluster's roles changed: replica backups %q, were %q", got, replicas)
	}
	if r := frozenReason(c, "pg-test"); r == "" {
		t.Error("pg-test no longer frozen while etcd is unreachable")
	}
	// (The apply of what the transition's end changed follows it.)
	eventually(t, "no flag of the ended transition applied", func() bool { return !hasForceDown(ft.last()) })
}

// TestStaleEndsPendingHoldDown: a new leader held DOWN (not read-write
// yet) when etcd becomes unreachable is not held DOWN for the whole
// outage: once its REST API says it is read-write it is forced UP, then
// left to HAProxy's checks, and the old primary's fence is lifted.
func TestStaleEndsPendingHoldDown(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &runtimeTarget{}
	c, connected := staleController(t, ft)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })

	a["pg-test-1"].srv.Close()
	a["pg-test-3"].set(200, "replica") // holds the key, still in recovery
	c.Observe(a.with(state(12, "pg-test-3", 1, "pg-test-2", "pg-test-3"), patroni.RoleReplica))
	eventually(t, "pg-test-3 held DOWN", func() bool { return heldDown(ft.last(), "pg-test-primary", "pg-test-3") })

	connected.Store(false) // etcd lost for the controller
	eventually(t, "pg-test frozen", func() bool { return frozenReason(c, "pg-test") != "" })
	a["pg-test-3"].set(200, "master") // promotion done: read-write
	eventually(t, "pg-test-3 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-3" })
	eventually(t, "the transition over, its probes stopped", func() bool { return transitionOver(c, "pg-test") })
	eventually(t, "no flag left", func() bool {
		last := ft.last()
		return !heldDown(last, "pg-test-primary", "pg-test-3") && !forcedDown(last, "pg-test-primary", "pg-test-1") &&
			forcedUp(last, "pg-test-primary") == ""
	})
	// Nothing more is re-asserted while the outage lasts: the fence went.
	c.mu.Lock()
	fencing := len(c.released) > 0 || c.anyPending()
	c.mu.Unlock()
	if fencing {
		t.Error("a fence or a pending promotion is left after the transition ended")
	}
}

// twoNamespaces: pg-test in /pg, pg-other in /other.
const twoNamespaces = testInventory + `
    pg-other:
      hosts:
        127.0.0.31: { pg_seq: 1, pg_role: primary }
        127.0.0.32: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-other, pg_namespace: /other }
`

// TestStaleNamespaceDoesNotFreezeOthers: with /other stale, a failover of
// pg-test in the healthy /pg is followed as usual (new primary forced UP,
// old one fenced).
func TestStaleNamespaceDoesNotFreezeOthers(t *testing.T) {
	inv, err := topology.Parse("two-ns.yml", []byte(twoNamespaces))
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := New(inv, []target.Target{ft}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: 300 * time.Millisecond, PromoteWindow: 10 * time.Second, PatroniCAFile: "/nonexistent"})
	c.checkEvery = 50 * time.Millisecond
	var otherUp atomic.Bool
	otherUp.Store(true)
	c.SetHealth("/other", func() patroni.WatchStatus {
		return patroni.WatchStatus{Connected: otherUp.Load(), LastContact: time.Now()}
	})
	runUntilEnd(t, c)
	other := &patroni.ClusterState{Scope: "pg-other", Leader: "pg-other-1", Members: map[string]*patroni.Member{}}
	for _, m := range []string{"pg-other-1", "pg-other-2"} {
		role := patroni.RoleReplica
		if m == "pg-other-1" {
			role = patroni.RolePrimary
		}
		other.Members[m] = &patroni.Member{Name: m, Host: "127.0.0.3" + m[len(m)-1:], Port: 5432, APIPort: 8008,
			Role: role, RawRole: role, State: "running", Timeline: 1}
	}
	c.Observe(patroni.Snapshot{Namespace: "/other", Revision: 5, At: time.Now(), Clusters: map[string]*patroni.ClusterState{"pg-other": other}})
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() >= 1 && serverNames(ft.last(), "pg-other-primary") != "" })

	otherUp.Store(false)
	eventually(t, "pg-other frozen", func() bool { return frozenReason(c, "pg-other") != "" })
	a["pg-test-1"].srv.Close()
	a["pg-test-3"].set(200, "master")
	c.Observe(a.with(state(12, "pg-test-3", 1, "pg-test-2", "pg-test-3"), patroni.RolePrimary))
	eventually(t, "pg-test-3 forced up, pg-test-1 fenced", func() bool {
		last := ft.last()
		return forcedUp(last, "pg-test-primary") == "pg-test-3" && forcedDown(last, "pg-test-primary", "pg-test-1")
	})
	if r := frozenReason(c, "pg-test"); r != "" {
		t.Errorf("pg-test frozen (%q) by another namespace's staleness", r)
	}
}

// TestKeepFrozenFlags: a frozen cluster keeps its last good servers, with
// the transient flags of the current plan; when its plan failed, its
// flags stay while a release or promotion of it is in effect, and go once
// none is.
func TestKeepFrozenFlags(t *testing.T) {
	c := New(loadInventory(t), nil, Options{})
	prev := []services.Service{{Name: "pg-test-primary", Cluster: "pg-test", Servers: []services.Server{
		{Name: "pg-test-1", ForceDown: true, Reason: "fenced"},
		{Name: "pg-test-3", ForceUp: true, Reason: "forced up"},
		{Name: "pg-test-2", Backup: true},
	}}}
	computed := []services.Service{{Name: "pg-test-primary", Cluster: "pg-test", Servers: []services.Server{
		{Name: "pg-test-1", Weight: 7, Reason: "a"},
		{Name: "pg-test-3", ForceDown: true, HoldDown: true, Reason: "held"},
		{Name: "pg-test-2", Reason: "c"},
	}}}
	got := c.keepFrozen("pg-test", prev, computed, true)
	want := []services.Server{
		{Name: "pg-test-1", Reason: "a"},
		{Name: "pg-test-3", ForceDown: true, HoldDown: true, Reason: "held"},
		{Name: "pg-test-2", Backup: true}, // (flags unchanged: as it was)
	}
	for i, sv := range got[0].Servers {
		if sv != want[i] {
			t.Errorf("planned: server %d = %+v, want %+v", i, sv, want[i])
		}
	}
	if !prev[0].Servers[0].ForceDown {
		t.Error("prev modified")
	}
	if again := c.keepFrozen("pg-test", computed, computed, true); !sameSlice(again, computed) {
		t.Error("no flag changed, yet a copy")
	}

	c.released["pg-test"] = &release{member: "pg-test-1"}
	if got := c.keepFrozen("pg-test", prev, nil, false); !sameSlice(got, prev) {
		t.Errorf("plan failed, release in effect: flags changed: %+v", got)
	}
	delete(c.released, "pg-test")
	got = c.keepFrozen("pg-test", prev, nil, false)
	if hasForceDown(got) || forcedUp(got, "pg-test-primary") != "" {
		t.Errorf("plan failed, no transition: flags kept: %+v", got)
	}
	if backups(got, "pg-test-primary") != "pg-test-2" {
		t.Errorf("servers changed: %+v", got)
	}
}

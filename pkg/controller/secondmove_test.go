package controller

import (
	"slices"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// releasedMembers is what cluster's write fence covers now ("" none).
func releasedMembers(c *Controller, cluster string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.released[cluster]; r != nil {
		return r.member
	}
	return ""
}

// runRuntimeController is runTransitionController with a target that
// applies at runtime (never reloads).
func runRuntimeController(t *testing.T, ft *runtimeTarget) *Controller {
	t.Helper()
	c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 5 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: 300 * time.Millisecond, PromoteWindow: 10 * time.Second, PatroniCAFile: "/nonexistent"})
	runUntilEnd(t, c)
	return c
}

// TestSecondMoveFencesIntermediateLeader: within one transition the key
// moves A -> B -> C. B, forced UP a moment ago and still answering
// /primary 200, is fenced in the very apply that forces C UP (never C
// forced UP with B unfenced), stays fenced while its /primary says 200,
// and is left to HAProxy's checks once Patroni reports it off.
func TestSecondMoveFencesIntermediateLeader(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &runtimeTarget{}
	c := runRuntimeController(t, ft)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })

	a["pg-test-1"].srv.Close()
	a["pg-test-2"].set(200, "master")
	c.Observe(a.with(state(11, "pg-test-2", 1, "pg-test-2", "pg-test-3"), patroni.RolePrimary))
	eventually(t, "pg-test-2 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-2" })
	n := ft.count()

	// pg-test-2 loses the key to pg-test-3 (its /primary still 200).
	a["pg-test-3"].set(200, "master")
	c.Observe(a.with(state(12, "pg-test-3", 1, "pg-test-2", "pg-test-3"), patroni.RolePrimary))
	eventually(t, "pg-test-3 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-3" })
	for i, svcs := range ft.all()[n:] {
		if forcedUp(svcs, "pg-test-primary") == "pg-test-3" && !forcedDown(svcs, "pg-test-primary", "pg-test-2") {
			t.Fatalf("apply %d forces pg-test-3 UP while pg-test-2, the leader a moment ago, is not fenced: up %q", n+i,
				serversWhere(svcs, "pg-test-primary", func(sv services.Server) bool { return !sv.ForceDown }))
		}
	}
	// Fenced while its /primary answers 200, well past FenceHold.
	afterProbes(t, a["pg-test-2"], 80) // ≥ 400 ms of probes (FenceHold 300 ms)
	if !forcedDown(ft.last(), "pg-test-primary", "pg-test-2") {
		t.Fatal("pg-test-2 unfenced while its /primary still answers 200")
	}
	if r := releasedMembers(c, "pg-test"); r != "pg-test-1,pg-test-2" && r != "pg-test-2" {
		t.Errorf("fenced %q, want pg-test-2 among them", r)
	}

	// Patroni demotes it: the fence lifts (FenceHold later), the transition ends.
	a["pg-test-2"].set(503, "replica")
	eventually(t, "pg-test-2 left to the checks", func() bool {
		last := ft.last()
		return !forcedDown(last, "pg-test-primary", "pg-test-2") && !forcedDown(last, "pg-test-primary", "pg-test-1")
	})
	eventually(t, "the transition over and reported", func() bool {
		return transitionOver(c, "pg-test") && len(transitionEvents(c)) > 0
	})
	tls := transitionEvents(c)
	if len(tls) != 1 || tls[0].From != "pg-test-1" || tls[0].To != "pg-test-3" || !slices.Equal(tls[0].AlsoFenced, []string{"pg-test-2"}) {
		t.Errorf("timelines %+v", tls)
	}
}

// TestKeyBackToOldPrimaryFencesIntermediateLeader: A -> B -> A: B, which
// held the key a moment, is fenced until Patroni reports it off, even
// though the transition would otherwise end (A leads again).
func TestKeyBackToOldPrimaryFencesIntermediateLeader(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &runtimeTarget{}
	c := runRuntimeController(t, ft)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })

	a["pg-test-1"].set(503, "replica")
	a["pg-test-2"].set(200, "master")
	c.Observe(a.with(state(11, "pg-test-2", 1, all...), patroni.RolePrimary))
	eventually(t, "pg-test-2 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-2" })

	// The key goes back to pg-test-1, read-write again; pg-test-2 still 200.
	a["pg-test-1"].set(200, "master")
	c.Observe(a.with(state(12, "pg-test-1", 1, all...), patroni.RolePrimary))
	eventually(t, "pg-test-2 fenced", func() bool {
		last := ft.last()
		return forcedDown(last, "pg-test-primary", "pg-test-2") && forcedUp(last, "pg-test-primary") != "pg-test-2"
	})
	afterProbes(t, a["pg-test-2"], 80)
	if !forcedDown(ft.last(), "pg-test-primary", "pg-test-2") || transitionOver(c, "pg-test") {
		t.Fatal("pg-test-2 unfenced (or the transition over) while its /primary still answers 200")
	}
	if forcedDown(ft.last(), "pg-test-primary", "pg-test-1") {
		t.Error("pg-test-1, leading again read-write, fenced")
	}
	a["pg-test-2"].set(503, "replica")
	eventually(t, "the transition over, no fence left", func() bool {
		return transitionOver(c, "pg-test") && !hasForceDown(ft.last())
	})
}

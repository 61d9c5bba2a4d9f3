package controller

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// twoClusters: pg-test (default services) and pg-live, whose replica
// service selects on a live field: starts_with() fails on a member Patroni
// does not report (patroni_state is null).
const twoClusters = `
all:
  children:
    pg-test:
      hosts:
        127.0.0.11: { pg_seq: 1, pg_role: primary }
        127.0.0.12: { pg_seq: 2, pg_role: replica }
        127.0.0.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-test }
    pg-live:
      hosts:
        127.0.0.21: { pg_seq: 1, pg_role: primary }
        127.0.0.22: { pg_seq: 2, pg_role: replica }
      vars:
        pg_cluster: pg-live
        pg_default_services:
          - { name: primary, port: 6433, ip: 127.0.0.20, dest: default, check: /primary, selector: "[]" }
          - { name: replica, port: 6434, ip: 127.0.0.20, dest: default, check: /read-only, selector: "[? starts_with(patroni_state,'run')]" }
`

// liveState is pg-live's DCS view with the given members (all running).
func liveState(leader string, members ...string) *patroni.ClusterState {
	cs := &patroni.ClusterState{Scope: "pg-live", Leader: leader, Members: map[string]*patroni.Member{}}
	for _, m := range members {
		role := patroni.RoleReplica
		if m == leader {
			role = patroni.RolePrimary
		}
		cs.Members[m] = &patroni.Member{Name: m, Host: "127.0.0.2" + m[len(m)-1:], Port: 5432, APIPort: 8008,
			Role: role, RawRole: role, State: "running", Timeline: 1}
	}
	return cs
}

// TestPlanFailureIsolated: pg-live's selector fails once a member key is
// deleted; pg-live keeps its last good services, says why in status, the
// history and readiness, while pg-test's switchover is applied (issue 12
// row 5). When the key is back, pg-live computes again.
func TestPlanFailureIsolated(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{}
	c := New(inv, []target.Target{ft}, Options{})
	snap := func(rev int64, testLeader string, live *patroni.ClusterState) patroni.Snapshot {
		s := state(rev, testLeader, 100, "pg-test-1", "pg-test-2", "pg-test-3")
		s.Clusters["pg-live"] = live
		return s
	}
	c.Observe(snap(10, "pg-test-1", liveState("pg-live-1", "pg-live-1", "pg-live-2")))
	step(c, false)
	if got := serverNames(ft.last(), "pg-live-replica"); got != "pg-live-1,pg-live-2" {
		t.Fatalf("pg-live-replica = %q, want both members", got)
	}
	if st := c.Status(); !st.Ready {
		t.Fatalf("not ready at start: %v", st.NotReady)
	}

	// pg-live-2's member key is deleted (its selector now fails), and
	// pg-test switches over in the same snapshot.
	c.Observe(snap(11, "pg-test-2", liveState("pg-live-1", "pg-live-1")))
	step(c, false)
	if got := backups(ft.last(), "pg-test-replica"); got != "pg-test-2" {
		t.Errorf("pg-test's switchover not applied: replica backups %q, want pg-test-2", got)
	}
	if got := serverNames(ft.last(), "pg-live-replica"); got != "pg-live-1,pg-live-2" {
		t.Errorf("pg-live-replica = %q, want its last good servers kept", got)
	}
	st := c.Status()
	var live *ClusterStatus
	for i := range st.Clusters {
		if st.Clusters[i].Name == "pg-live" {
			live = &st.Clusters[i]
		}
	}
	if live == nil || !strings.Contains(live.PlanError, "starts_with") || !strings.Contains(live.Frozen, "plan failed") {
		t.Fatalf("pg-live status does not say its plan failed: %+v", live)
	}
	if st.Ready || !strings.Contains(strings.Join(st.NotReady, "\n"), "cluster pg-live: plan failed") {
		t.Errorf("readiness does not name pg-live: ready=%v %v", st.Ready, st.NotReady)
	}
	var evs int
	for _, e := range st.History {
		if e.Kind == "plan_error" && e.Cluster == "pg-live" {
			evs++
		}
	}
	if evs != 1 {
		t.Errorf("%d plan_error events for pg-live, want 1", evs)
	}
	// The same failure again: no new event (no flood), still held.
	c.Observe(snap(12, "pg-test-2", liveState("pg-live-1", "pg-live-1")))
	step(c, true)
	if n := countEvents(c.Status().History, "plan_error"); n != 1 {
		t.Errorf("%d plan_error events after the same failure again, want 1", n)
	}

	// The key is back: pg-live computes again and the status clears.
	c.Observe(snap(13, "pg-test-2", liveState("pg-live-2", "pg-live-1", "pg-live-2")))
	step(c, false)
	st = c.Status()
	if !st.Ready {
		t.Errorf("not ready once pg-live computes again: %v", st.NotReady)
	}
	for _, cl := range st.Clusters {
		if cl.PlanError != "" || cl.Frozen != "" {
			t.Errorf("cluster %s still reported: %q %q", cl.Name, cl.PlanError, cl.Frozen)
		}
	}
	if got := backups(ft.last(), "pg-test-replica"); got != "pg-test-2" {
		t.Errorf("pg-test replica backups %q, want pg-test-2", got)
	}
}

// TestPlanFailureFirstPlan: a cluster whose very first plan fails is left
// as HAProxy has it (no services of it in desired); the others are applied.
func TestPlanFailureFirstPlan(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{}
	c := New(inv, []target.Target{ft}, Options{})
	s := state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3")
	s.Clusters["pg-live"] = liveState("pg-live-1", "pg-live-1")
	c.Observe(s)
	step(c, false)
	if ft.count() != 1 {
		t.Fatalf("%d applies, want 1 (pg-test)", ft.count())
	}
	for _, svc := range ft.last() {
		if svc.Cluster == "pg-live" {
			t.Errorf("service %s of a cluster that never planned is applied", svc.Name)
		}
	}
	if serverNames(ft.last(), "pg-test-primary") == "" {
		t.Errorf("pg-test not applied: %d services", len(ft.last()))
	}
	if st := c.Status(); st.Ready {
		t.Error("ready although pg-live's plan fails")
	}
}

func countEvents(h []Event, kind string) int {
	n := 0
	for _, e := range h {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// TestTwinNameCollisionIsolated: with unknown members included and the twin
// layout, a member Patroni reports under the name of another member's
// backup twin (pg-live-1.backup) must not fail the target's whole layout:
// that member is not served (a warning names it), pg-live is served without
// it, and pg-test's switchover in the same apply is applied.
func TestTwinNameCollisionIsolated(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{}
	c := New(inv, []target.Target{target.WithTwins(ft)}, Options{IncludeUnknown: true})
	snap := func(rev int64, testLeader string, live *patroni.ClusterState) patroni.Snapshot {
		s := state(rev, testLeader, 100, "pg-test-1", "pg-test-2", "pg-test-3")
		s.Clusters["pg-live"] = live
		return s
	}
	c.Observe(snap(10, "pg-test-1", liveState("pg-live-1", "pg-live-1", "pg-live-2")))
	step(c, false)
	disabled := func(name string) string {
		return serversWhere(ft.last(), name, func(sv services.Server) bool { return sv.Disabled })
	}
	if got := disabled("pg-test-replica"); got != "pg-test-1" {
		t.Fatalf("pg-test-replica disabled twins = %q at start, want pg-test-1 (the primary is backup)", got)
	}
	n := ft.count()

	// pg-test switches over; Patroni reports a member of pg-live named like
	// pg-live-1's backup twin.
	live := liveState("pg-live-1", "pg-live-1", "pg-live-2")
	live.Members["pg-live-1.backup"] = &patroni.Member{Name: "pg-live-1.backup", Host: "127.0.0.29", Port: 5432, APIPort: 8008,
		Role: patroni.RoleReplica, RawRole: patroni.RoleReplica, State: "running", Timeline: 1}
	c.Observe(snap(11, "pg-test-2", live))
	step(c, false)
	if ft.count() == n {
		t.Fatalf("nothing applied: %+v", c.Status().Targets)
	}
	if got := disabled("pg-test-replica"); got != "pg-test-2" {
		t.Errorf("pg-test's switchover not applied: replica disabled twins %q, want pg-test-2 (the new primary)", got)
	}
	if got := serversWhere(ft.last(), "pg-live-replica", func(sv services.Server) bool { return sv.Address == "127.0.0.29" }); got != "" {
		t.Errorf("the colliding member is served: %q", got)
	}
	if got := serverNames(ft.last(), "pg-live-primary"); got != "pg-live-1,pg-live-2" {
		t.Errorf("pg-live-primary servers = %q, want pg-live's two members", got)
	}
	var warned bool
	for _, cl := range c.Status().Clusters {
		if cl.Name == "pg-live" {
			warned = strings.Contains(strings.Join(cl.Warnings, "\n"), "pg-live-1.backup")
		}
	}
	if !warned {
		t.Errorf("no pg-live warning names pg-live-1.backup")
	}
}

package controller

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// leaderless is pg-test's DCS view without a leader key, under
// failsafe_mode, with the given member reporting role primary (the others
// replica; "" none).
func leaderless(rev int64, primary string) patroni.Snapshot {
	s := state(rev, "", 1, "pg-test-1", "pg-test-2", "pg-test-3")
	cs := s.Clusters["pg-test"]
	cs.FailsafeMode = true
	if m := cs.Members[primary]; m != nil {
		m.Role, m.RawRole = patroni.RolePrimary, "master"
	}
	return s
}

// hasCluster reports whether svcs has a service of cluster.
func hasCluster(svcs []services.Service, cluster string) bool {
	for _, s := range svcs {
		if s.Cluster == cluster {
			return true
		}
	}
	return false
}

// TestLeaderlessNeverLedContradictingRoles: a controller (re)started while
// pg-test has no leader key and Patroni's member keys say pg-test-2 is the
// primary (the inventory says pg-test-1) applies nothing for pg-test, as
// its status says, until a leader key appears; then the live roles.
func TestLeaderlessNeverLedContradictingRoles(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	c.Observe(leaderless(10, "pg-test-2"))
	step(c, false)
	step(c, true) // a resync does not apply it either
	if fr := frozenReason(c, "pg-test"); !strings.Contains(fr, "pg-test-2 reports primary, the inventory says replica") {
		t.Errorf("frozen %q", fr)
	}
	c.Observe(leaderless(10, "")) // every member a replica: pg-test-1 too
	step(c, false)
	fr := frozenReason(c, "pg-test")
	if !strings.HasPrefix(fr, reasonLeaderlessContradicts) || !strings.Contains(fr, "pg-test-1 reports replica, the inventory says primary") {
		t.Errorf("frozen %q", fr)
	}
	for i, svcs := range ft.all() {
		if hasCluster(svcs, "pg-test") {
			t.Fatalf("apply %d has pg-test's services (replica backups %q) though its member keys contradict its inventory roles",
				i, backups(svcs, "pg-test-replica"))
		}
	}

	s := state(11, "pg-test-2", 1, "pg-test-1", "pg-test-2", "pg-test-3")
	c.Observe(s)
	step(c, false)
	if got := backups(ft.last(), "pg-test-replica"); got != "pg-test-2" {
		t.Errorf("with a leader key: replica backups %q, want the live primary pg-test-2", got)
	}
	if fr := frozenReason(c, "pg-test"); fr != "" {
		t.Errorf("still frozen with a leader key: %q", fr)
	}
}

// TestLeaderlessNeverLedContradictionAfterInventoryPlan: services applied
// from the inventory while the DCS had nothing of pg-test are not
// re-applied once its member keys contradict them.
func TestLeaderlessNeverLedContradictionAfterInventoryPlan(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 9, Clusters: map[string]*patroni.ClusterState{}})
	step(c, false)
	if got := backups(ft.last(), "pg-test-replica"); got != "pg-test-1" {
		t.Fatalf("no DCS data: replica backups %q, want the inventory primary", got)
	}
	n := ft.count()
	c.Observe(leaderless(10, "pg-test-2"))
	step(c, false)
	step(c, true)
	if !strings.HasPrefix(frozenReason(c, "pg-test"), reasonLeaderlessContradicts) {
		t.Errorf("frozen %q", frozenReason(c, "pg-test"))
	}
	for i, svcs := range ft.all()[n:] {
		if hasCluster(svcs, "pg-test") {
			t.Errorf("apply %d re-applies pg-test's inventory roles (replica backups %q) against its member keys", n+i, backups(svcs, "pg-test-replica"))
		}
	}
}

// TestLeaderlessNeverLedAgreeingRoles: without a leader key, member keys
// that agree with the inventory (pg-test-1 primary, or not reported and
// the others replicas) let the inventory's roles be applied (what Pigsty
// renders), and status says so.
func TestLeaderlessNeverLedAgreeingRoles(t *testing.T) {
	for _, primary := range []string{"pg-test-1", ""} {
		ft := &fakeTarget{}
		c := New(loadInventory(t), []target.Target{ft}, Options{})
		s := leaderless(10, primary)
		if primary == "" {
			// The inventory primary not reported at all: nothing
			// contradicts it (the replicas report replica).
			delete(s.Clusters["pg-test"].Members, "pg-test-1")
		}
		c.Observe(s)
		step(c, false)
		if got := backups(ft.last(), "pg-test-replica"); got != "pg-test-1" {
			t.Errorf("%q primary: replica backups %q, want the inventory primary pg-test-1", primary, got)
		}
		if fr := frozenReason(c, "pg-test"); fr != reasonLeaderlessInventory {
			t.Errorf("%q primary: frozen %q", primary, fr)
		}
	}
}

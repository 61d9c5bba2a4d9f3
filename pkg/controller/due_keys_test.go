package controller

import (
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

const citusTwoGroups = `
all:
  children:
    pg-citus1:
      hosts:
        127.0.3.11: { pg_seq: 1, pg_role: primary }
        127.0.3.12: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-citus1, pg_mode: citus, pg_shard: pg-citus, pg_group: 1 }
`

// TestScheduledSwitchoverDueByClusterName: the check for a scheduled
// switchover come due finds the transitions (and the requests done) of a
// Citus group by its cluster name, not its DCS key (pg-citus/1), and
// ignores the scopes the inventory lacks: once its transition runs, it
// asks for no reconcile at every check.
func TestScheduledSwitchoverDueByClusterName(t *testing.T) {
	inv, err := topology.Parse("citus.yml", []byte(citusTwoGroups))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()}
	c := New(inv, []target.Target{&fakeTarget{}}, Options{Now: clock.Now, PatroniCAFile: "/nonexistent"})
	past := clock.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	group := func(scope, prefix string) *patroni.ClusterState {
		cs := &patroni.ClusterState{Scope: scope, Leader: prefix + "-1", Members: map[string]*patroni.Member{},
			Failover: &patroni.Failover{Leader: prefix + "-1", Member: prefix + "-2", ScheduledAt: past}}
		for i, m := range []string{prefix + "-1", prefix + "-2"} {
			role := patroni.RoleReplica
			if i == 0 {
				role = patroni.RolePrimary
			}
			cs.Members[m] = &patroni.Member{Name: m, Host: "127.0.3.1" + m[len(m)-1:], Port: 5432, APIPort: 8008,
				Role: role, RawRole: role, State: "running", Timeline: 1}
		}
		return cs
	}
	// Before the request: the leader known.
	first := group("pg-citus", "pg-citus1")
	first.Failover = nil
	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 1, At: time.Now(), Clusters: map[string]*patroni.ClusterState{"pg-citus/1": first}})
	step(c, false)

	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 2, At: time.Now(), Clusters: map[string]*patroni.ClusterState{
		"pg-citus/1": group("pg-citus", "pg-citus1"),
		"pg-other":   group("pg-other", "pg-other"), // a scope the inventory lacks
	}})
	due := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.takeInbox()
		return c.fenceExpired(clock.Now())
	}
	if !due() {
		t.Fatal("the scheduled switchover of pg-citus1, come due, not found due")
	}
	step(c, false)
	c.mu.Lock()
	started := c.tx.active["pg-citus1"] != nil
	c.mu.Unlock()
	if !started {
		t.Fatal("no transition for pg-citus1's scheduled switchover")
	}
	if due() {
		t.Error("pg-citus1's switchover runs, yet the check says one is due (a reconcile at every check)")
	}
}

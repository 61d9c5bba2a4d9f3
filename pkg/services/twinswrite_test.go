package services

import (
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestTwinsWriteServiceActivatesOnlyThePrimary: in a write service (/primary)
// whose membership depends on roles, no twin of a member other than the
// merged primary is active, whatever Pigsty's layout lists: HAProxy's check
// passes on the primary only, so Pigsty's layout never routes to them, while
// activating a twin (`ready`) is UP at once, before any check. Before, a
// replica whose PostgreSQL came back (stopped -> running) in a service of
// every member with the primary as backup had its normal twin readied (writes
// to a replica until its checks failed), and a member whose member key still
// said primary after a switchover (a selector on patroni_role) was active
// beside the new leader.
func TestTwinsWriteServiceActivatesOnlyThePrimary(t *testing.T) {
	defs := []*topology.ServiceDef{
		def(t, "anyw", 5441, "postgres", "/primary", "[]", "[? pg_role == `primary` ]"),
		def(t, "lagw", 5442, "postgres", "/primary", "[? patroni_role == `primary` ]", ""),
		def(t, "reads", 5443, "postgres", "/read-only", "[]", "[? pg_role == `primary` ]"),
	}
	for _, replicaState := range []string{"stopped", "running"} {
		v := view("pg-w", "pg-w-2", defs,
			known(1, "10.0.0.1", "primary", "replica", false),
			known(2, "10.0.0.2", "replica", "primary", false),
			known(3, "10.0.0.3", "replica", "replica", false))
		live := map[string]*patroni.Member{
			// pg-w-1 just lost the leader key: its member key still says primary.
			"pg-w-1": {Name: "pg-w-1", Role: patroni.RolePrimary, State: "running"},
			"pg-w-2": {Name: "pg-w-2", Role: patroni.RolePrimary, State: "running"},
			"pg-w-3": {Name: "pg-w-3", Role: patroni.RoleReplica, State: replicaState},
		}
		for _, m := range v.Members {
			m.Live = live[m.Name]
			m.Vars["patroni_role"] = m.Live.Role
		}
		_, laid := laidOut(t, v)
		for _, name := range []string{"anyw", "lagw"} {
			for _, sv := range laid[name].Servers {
				if !sv.Disabled && sv.Member != "pg-w-2" {
					t.Errorf("replica %s: %s: twin %s of a non-primary is active (%s)", replicaState, name, sv.Name, sv.Reason)
				}
				if sv.Member == "pg-w-2" && sv.Disabled == (sv.Backup == (name == "anyw")) {
					t.Errorf("replica %s: %s: the primary's twin %s active %v", replicaState, name, sv.Name, !sv.Disabled)
				}
			}
		}
		// A read service keeps Pigsty's layout: every running replica active.
		for _, sv := range laid["reads"].Servers {
			want := sv.Member == "pg-w-2" && sv.Backup || sv.Member == "pg-w-1" && !sv.Backup ||
				sv.Member == "pg-w-3" && !sv.Backup && replicaState == "running"
			if sv.Disabled == want {
				t.Errorf("replica %s: reads: twin %s active %v, want %v", replicaState, sv.Name, !sv.Disabled, want)
			}
		}
	}
}

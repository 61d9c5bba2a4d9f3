package plan

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// invariantServices are user services beside Pigsty's defaults: write
// services whose membership depends on roles (a selector on the primary; every
// member with the primary as backup), read services with the primary as
// backup, and a read-checked one that selects only the primary.
const invariantServices = `
        pg_services:
          - { name: writer, port: 5440, check: /primary, selector: "[? pg_role == ` + "`primary`" + ` ]" }
          - { name: anyw, port: 5441, check: /primary, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]" }
          - { name: reads, port: 5442, check: /read-only, selector: "[? pg_role == ` + "`replica`" + ` && !patroni_noloadbalance ]", backup: "[? pg_role == ` + "`primary`" + ` ]" }
          - { name: lagged, port: 5443, check: /replica, selector: "[? patroni_lag != null && patroni_lag < ` + "`1024`" + ` ]", backup: "[? pg_role == ` + "`primary`" + ` ]" }
`

// randomInventory is one cluster pg-r of 1-4 members: one inventory primary
// (sometimes none), replicas and offline members, offline queries at random.
func randomInventory(t testing.TB, r *rand.Rand) *topology.Inventory {
	var b strings.Builder
	b.WriteString("all:\n  children:\n    pg-r:\n      hosts:\n")
	n := 1 + r.Intn(4)
	prim := r.Intn(n + 1) // n: no inventory primary
	for i := 1; i <= n; i++ {
		role := []string{"replica", "replica", "offline"}[r.Intn(3)]
		if i-1 == prim {
			role = "primary"
		}
		fmt.Fprintf(&b, "        10.0.0.%d: { pg_seq: %d, pg_role: %s, pg_offline_query: %t }\n", i, i, role, r.Intn(3) == 0)
	}
	b.WriteString("      vars:\n        pg_cluster: pg-r\n")
	b.WriteString(invariantServices)
	inv, err := topology.Parse("inv.yml", []byte(b.String()))
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", b.String(), err)
	}
	return inv
}

// randomState is a DCS view of pg-r (nil: none): a leader key on a member, on
// one the inventory lacks, on nobody; member keys of some members, in any
// state and role (a lagging primary role included), tags; unknown members
// (one named too long for a backup twin);
// paused or failsafe.
func randomState(r *rand.Rand, inv *topology.Inventory) *patroni.ClusterState {
	if r.Intn(6) == 0 {
		return nil
	}
	c := inv.Clusters[0]
	names := []string{}
	for _, m := range c.Members {
		names = append(names, m.Name)
	}
	names = append(names, "pg-r-9")
	if r.Intn(4) == 0 {
		// Valid as a server name, not as its backup twin's.
		names = append(names, "pg-r-"+strings.Repeat("z", 122))
	}
	st := &patroni.ClusterState{Scope: "pg-r", Members: map[string]*patroni.Member{},
		Paused: r.Intn(5) == 0, FailsafeMode: r.Intn(5) == 0}
	if r.Intn(4) != 0 {
		st.Leader = names[r.Intn(len(names))]
	}
	states := []string{"running", "running", "streaming", "stopped", "starting", "crashed", "in archive recovery"}
	for i, name := range names {
		unknown := name == "pg-r-9" || len(name) > 6 // the inventory lacks it
		if r.Intn(4) == 0 || unknown && r.Intn(2) == 0 {
			continue
		}
		role := patroni.RoleReplica
		if name == st.Leader || r.Intn(6) == 0 {
			role = patroni.RolePrimary
		}
		m := &patroni.Member{Name: name, Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 5432, APIPort: 8008,
			Role: role, RawRole: role, State: states[r.Intn(len(states))], Tags: map[string]any{}}
		if unknown {
			m.Host = fmt.Sprintf("10.0.0.%d", 9+len(name)%2)
		}
		if r.Intn(4) == 0 {
			m.NoLoadBalance, m.Tags["noloadbalance"] = true, true
		}
		if r.Intn(4) == 0 {
			m.NoFailover, m.Tags["nofailover"] = true, true
		}
		if r.Intn(3) != 0 {
			lag := int64(r.Intn(2048))
			m.LagBytes = &lag
		}
		st.Members[name] = m
	}
	if r.Intn(8) == 0 {
		st.Leader = "pg-r-ghost"
	}
	return st
}

func randomOptions(r *rand.Rand, inv *topology.Inventory, st *patroni.ClusterState) ClusterOptions {
	c := inv.Clusters[0]
	pick := func() string {
		if r.Intn(3) == 0 {
			return ""
		}
		return c.Members[r.Intn(len(c.Members))].Name
	}
	o := ClusterOptions{IncludeUnknown: r.Intn(2) == 0, LastKnownLeader: pick(), Released: pick()}
	if st != nil && st.Leader != "" && r.Intn(3) == 0 {
		o.Promoted = st.Leader
		o.PromotedConfirmed = r.Intn(2) == 0
		o.PromotedPending = !o.PromotedConfirmed && r.Intn(2) == 0
	}
	return o
}

// rolePrimaries are the members a write service may route to in pc: the merged
// primary (the leader key's holder; the last known leader while the key is
// absent; the inventory primary without live data).
func rolePrimaries(pc Cluster) map[string]bool {
	out := map[string]bool{}
	for _, m := range pc.Members {
		if m.Served && m.Role == "primary" {
			out[m.Name] = true
		}
	}
	return out
}

// TestTwinsFollowPigstyOnRandomRoles plans random clusters (roles from the
// DCS or the inventory, leaderless with or without a last known leader,
// paused, failsafe, members missing from the DCS, members the inventory
// lacks, noloadbalance/nofailover tags, fences and promotions) and lays them
// out in twins: every role-dependent service's active twins are exactly
// Pigsty's layout of the same plan (a member the DCS does not report running
// has none), and no write service has an active twin of a member that is not
// the merged primary, nor two members active.
func TestTwinsFollowPigstyOnRandomRoles(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	for round := 0; round < 2000; round++ {
		inv := randomInventory(t, r)
		st := randomState(r, inv)
		opts := randomOptions(r, inv, st)
		pc, err := ComputeCluster(inv.File, inv.Clusters[0], st, true, opts)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		checkTwins(t, fmt.Sprintf("round %d (leader %q, opts %+v)", round, pc.Leader, opts), pc)
	}
}

func checkTwins(t *testing.T, where string, pc Cluster) {
	t.Helper()
	laid, err := services.Twins(pc.Services)
	if err != nil {
		t.Fatalf("%s: Twins: %v", where, err)
	}
	if err := services.Validate(laid); err != nil {
		t.Fatalf("%s: the twin layout does not validate: %v", where, err)
	}
	prim := rolePrimaries(pc)
	for i, s := range pc.Services {
		tw := laid[i]
		if !s.RoleDependent {
			continue
		}
		for _, c := range s.Candidates {
			var pig *services.Server
			for j := range s.Servers {
				if s.Servers[j].Name == c.Name {
					pig = &s.Servers[j]
				}
			}
			for _, sv := range tw.Servers {
				if sv.Member != c.Name {
					continue
				}
				tb, tname, _ := strings.Cut(sv.Track, "/")
				if tw := twinOf(laid, tb, tname); sv.Track != "" && tw != nil {
					// Tracks a normal twin of another service (the offline
					// service's backups, the replica service's normal
					// twins): active exactly while that twin is, which
					// must be while Pigsty's layout has the member as this
					// service's backup (and the DCS reports it running).
					want := pig != nil && pig.Backup && !c.Unconfirmed
					if tw.Disabled == want {
						t.Fatalf("%s: %s: backup twin %s tracks %s, active %v, want %v (Pigsty's: %+v, unconfirmed %v)",
							where, s.Name, sv.Name, sv.Track, !tw.Disabled, want, pig, c.Unconfirmed)
					}
					continue
				}
				if sv.Track != "" {
					// Tracks the primary service's server: UP while the
					// member passes /primary. Pigsty's layout has it as a
					// backup exactly while it is the primary.
					if (pig != nil && pig.Backup) != prim[c.Name] {
						t.Fatalf("%s: %s: tracked backup twin %s, but Pigsty's backup is %v and primary %v", where, s.Name, sv.Name, pig != nil && pig.Backup, prim[c.Name])
					}
					continue
				}
				want := pig != nil && pig.Backup == sv.Backup && !c.Unconfirmed
				if services.WriteCheck(s.Check) && !prim[c.Name] {
					want = false // the check passes on the primary only
				}
				if !sv.Disabled != want {
					t.Fatalf("%s: %s: twin %s active %v, want %v (Pigsty's: %+v, unconfirmed %v, primary %v)",
						where, s.Name, sv.Name, !sv.Disabled, want, pig, c.Unconfirmed, prim[c.Name])
				}
				// The active twin is Pigsty's server line; an inactive one
				// carries no health intent.
				if want && (sv.Address != pig.Address || sv.Port != pig.Port || sv.CheckPort != pig.CheckPort || sv.Weight != pig.Weight ||
					sv.ForceUp != pig.ForceUp || sv.ForceDown != pig.ForceDown || sv.HoldDown != pig.HoldDown) ||
					!want && (sv.ForceUp || sv.ForceDown || sv.HoldDown) {
					t.Fatalf("%s: %s: twin %s (active %v) %+v, Pigsty's %+v", where, s.Name, sv.Name, want, sv, pig)
				}
			}
		}
		if services.WriteCheck(s.Check) {
			active := map[string]bool{}
			for _, sv := range tw.Servers {
				if !sv.Disabled && sv.Track == "" {
					active[sv.Member] = true
				}
			}
			if len(active) > 1 {
				t.Fatalf("%s: write service %s has %d members active: %v", where, s.Name, len(active), active)
			}
		}
	}
}

// twinOf is the twin named server of the twin-layout service named backend
// in laid (a cluster's services laid out), nil when there is none.
func twinOf(laid []services.Service, backend, server string) *services.Server {
	for i := range laid {
		if laid[i].Name != backend || laid[i].Layout != services.LayoutTwins {
			continue
		}
		for j := range laid[i].Servers {
			if laid[i].Servers[j].Name == server {
				return &laid[i].Servers[j]
			}
		}
	}
	return nil
}

// TestTwinsSwitchoverFlipsOnlyItsMembers: a switchover (the leader key moves
// from one running member to another, nothing else changes) flips twins of
// those two members only, in every service: the sessions of every other
// member survive it (no drain, no maint), and the read services' twins
// leave in drain. Its leaderless gap (the last known leader kept) flips
// nothing.
func TestTwinsSwitchoverFlipsOnlyItsMembers(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for round := 0; round < 500; round++ {
		inv := randomInventory(t, r)
		c := inv.Clusters[0]
		if len(c.Members) < 2 {
			continue
		}
		from, to := c.Members[r.Intn(len(c.Members))].Name, ""
		for to == "" || to == from {
			to = c.Members[r.Intn(len(c.Members))].Name
		}
		mk := func(leader string) *patroni.ClusterState {
			st := &patroni.ClusterState{Scope: "pg-r", Leader: leader, Members: map[string]*patroni.Member{}}
			for i, m := range c.Members {
				role := patroni.RoleReplica
				if m.Name == leader {
					role = patroni.RolePrimary
				}
				lag := int64(i * 600)
				st.Members[m.Name] = &patroni.Member{Name: m.Name, Host: m.Host, Port: 5432, APIPort: 8008, Role: role, RawRole: role,
					State: "running", LagBytes: &lag, Tags: map[string]any{}}
			}
			return st
		}
		lay := func(leader string) []services.Service {
			pc, err := ComputeCluster(inv.File, c, mk(leader), true, ClusterOptions{LastKnownLeader: from})
			if err != nil {
				t.Fatal(err)
			}
			tw, err := services.Twins(pc.Services)
			if err != nil {
				t.Fatal(err)
			}
			return tw
		}
		before, gap, after := lay(from), lay(""), lay(to)
		// The switchover's gap (no leader key, the last known leader kept)
		// flips nothing.
		for i := range gap {
			for j := range gap[i].Servers {
				if g, b := gap[i].Servers[j], before[i].Servers[j]; g.Disabled != b.Disabled {
					t.Fatalf("round %d: the leaderless gap flips %s/%s (active %v -> %v)", round, gap[i].Name, g.Name, !b.Disabled, !g.Disabled)
				}
			}
		}
		for i := range after {
			b, a := before[i], after[i]
			if a.Layout != services.LayoutTwins {
				continue
			}
			for j := range a.Servers {
				sb, sa := b.Servers[j], a.Servers[j]
				if sb.Name != sa.Name {
					t.Fatalf("round %d: %s: server %d is %s, then %s", round, a.Name, j, sb.Name, sa.Name)
				}
				if sb.Disabled == sa.Disabled {
					continue
				}
				if sa.Member != from && sa.Member != to {
					t.Fatalf("round %d: switchover %s -> %s flips %s/%s (active %v -> %v): its member's role did not change",
						round, from, to, a.Name, sa.Name, !sb.Disabled, !sa.Disabled)
				}
				if sa.Disabled && !services.WriteCheck(a.Check) && services.InactiveState(a) != "drain" {
					t.Fatalf("round %d: %s/%s leaves in %s, want drain (a read service)", round, a.Name, sa.Name, services.InactiveState(a))
				}
			}
		}
	}
}

package services

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestTwinsTrackOfflineBackups: in Pigsty's offline service of a cluster
// with no offline member and no pg_offline_query, each backup twin tracks
// the replica service's normal twin of its member, is never disabled and
// has no check nor intent of its own; its normal twins stay flipped ones
// (all inactive: the selector picks nobody). A switchover changes none of
// its server lines.
func TestTwinsTrackOfflineBackups(t *testing.T) {
	members := func(primary int) *topology.View {
		var ms []mem
		for i := 1; i <= 3; i++ {
			role := "replica"
			if i == primary {
				role = "primary"
			}
			ms = append(ms, known(i, fmt.Sprintf("10.10.10.1%d", i), map[bool]string{true: "primary", false: "replica"}[i == 1], role, false))
		}
		return view("pg-test", "", seedDefs(t), ms...)
	}
	built, laid := laidOut(t, members(2))
	if !built["offline"].BackupIsReplicas || built["replica"].BackupIsReplicas || built["standby"].BackupIsReplicas {
		t.Errorf("BackupIsReplicas: offline %t replica %t standby %t, want true false false",
			built["offline"].BackupIsReplicas, built["replica"].BackupIsReplicas, built["standby"].BackupIsReplicas)
	}
	off := laid["offline"]
	if off.Layout != LayoutTwins || len(off.Servers) != 6 {
		t.Fatalf("offline: layout %q, %d servers", off.Layout, len(off.Servers))
	}
	for _, sv := range off.Servers {
		switch {
		case sv.Backup:
			want := "pg-test-replica/" + sv.Member
			if sv.Track != want || sv.Disabled || sv.CheckPort != 0 || sv.ForceUp || sv.ForceDown || sv.HoldDown || sv.Unconfirmed {
				t.Errorf("offline %s: %+v, want a tracker of %s, never disabled, no check nor intent of its own", sv.Name, sv, want)
			}
			if !strings.Contains(sv.Reason, "tracks its member's normal twin in the replica service") {
				t.Errorf("offline %s: reason %q", sv.Name, sv.Reason)
			}
			if sv.Port != 5432 {
				t.Errorf("offline %s: port %d, want the service's own destination 5432", sv.Name, sv.Port)
			}
		default:
			if sv.Track != "" || sv.CheckPort != 8008 || !sv.Disabled {
				t.Errorf("offline %s: %+v, want a checked normal twin, inactive (the selector picks no member)", sv.Name, sv)
			}
		}
	}
	// One reason for every such twin, not one per server (Track names
	// the server): reasons are kept once, up to maxReasons.
	reasons := map[string]bool{}
	for _, sv := range off.Servers {
		if sv.Backup {
			reasons[sv.Reason] = true
		}
	}
	if len(reasons) != 1 {
		t.Errorf("the offline trackers have %d reasons, want 1: %v", len(reasons), reasons)
	}
	_, after := laidOut(t, members(1))
	for i, sv := range after["offline"].Servers {
		b := off.Servers[i]
		if sv.Name != b.Name || sv.Track != b.Track || sv.Backup != b.Backup || sv.CheckPort != b.CheckPort || sv.Disabled != b.Disabled {
			t.Errorf("offline %s: the switchover changed the file's server line: %+v -> %+v", sv.Name, b, sv)
		}
	}
	// The replica service's normal twins, which they track, are checked
	// twins of their own.
	for _, sv := range laid["replica"].Servers {
		if !sv.Backup && (sv.Track != "" || sv.CheckPort == 0) {
			t.Errorf("replica %s: %+v, want a checked normal twin", sv.Name, sv)
		}
	}

	// No tracking where the offline service can pick a member: an offline
	// member, or pg_offline_query on one.
	v := members(1)
	v.Members[2].InventoryRole, v.Members[2].Role = "offline", "offline"
	if built, laid := laidOut(t, v); built["offline"].BackupIsReplicas || tracks(laid["offline"]) {
		t.Error("offline backups track with an offline member in the cluster")
	}
	for _, q := range []any{true, "yes", 1.0, []any{1.0}} {
		v := members(1)
		v.Members[2].Vars["pg_offline_query"] = q
		if built, laid := laidOut(t, v); built["offline"].BackupIsReplicas || tracks(laid["offline"]) {
			t.Errorf("offline backups track with pg_offline_query %v on a member", q)
		}
	}
	for _, q := range []any{false, nil, "", []any{}, map[string]any{}} {
		v := members(1)
		v.Members[2].Vars["pg_offline_query"] = q
		if built, _ := laidOut(t, v); !built["offline"].BackupIsReplicas {
			t.Errorf("pg_offline_query %#v (false to JMESPath) taken for set", q)
		}
	}
	// A standby cluster: the replica service's backups are no primary's,
	// so it is not a source (its normal twins are flipped as before).
	v = members(1)
	v.Members[0].Live = &patroni.Member{Name: "pg-test-1", Role: patroni.RoleStandbyLeader, State: "running"}
	if _, laid := laidOut(t, v); tracks(laid["offline"]) {
		t.Error("offline backups track in a standby cluster")
	}
}

func tracks(s Service) bool {
	for _, sv := range s.Servers {
		if sv.Track != "" {
			return true
		}
	}
	return false
}

// TestOfflineTrackersActiveAsBefore: over random clusters (2-4 members,
// any leader or none, members the DCS does not report, unknown members,
// now and then an offline member or one with pg_offline_query),
// wherever the offline service's backup twins track, each is to be active
// exactly when its own flipped twin would be (the layout without
// tracking): the replica service's normal twin it tracks is active (not
// Disabled) exactly then. This is what makes the tracking safe.
func TestOfflineTrackersActiveAsBefore(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	tracked := 0
	for n := 0; n < 2000; n++ {
		size := 2 + rng.Intn(3)
		leader := ""
		var ms []mem
		lead := rng.Intn(size + 1) // size: no leader
		for i := 1; i <= size; i++ {
			inv := "replica"
			if i == 1 {
				inv = "primary"
			}
			role := "replica"
			if i-1 == lead {
				role = "primary"
			}
			m := known(i, fmt.Sprintf("10.1.0.%d", i), inv, role, rng.Intn(12) == 0)
			if rng.Intn(8) == 0 {
				m.known = false
			}
			if rng.Intn(12) == 0 {
				m.invRole, m.role = "offline", "offline"
			}
			ms = append(ms, m)
		}
		v := view("pg-r", leader, seedDefs(t), ms...)
		if rng.Intn(2) == 0 {
			// Live: some members unreported or not running.
			v.Live = true
			for _, m := range v.Members {
				switch rng.Intn(4) {
				case 0:
				case 1:
					m.Live = &patroni.Member{Name: m.Name, Role: patroni.RoleReplica, State: "stopped"}
				default:
					m.Live = &patroni.Member{Name: m.Name, Role: patroni.RoleReplica, State: "running"}
				}
			}
		}
		in, err := Build(v)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Twins(in)
		if err != nil {
			t.Fatal(err)
		}
		var rep, offTracked Service
		var offPlain Service
		for i := range in {
			switch in[i].Service {
			case "replica":
				rep = out[i]
			case "offline":
				offTracked = out[i]
				if offPlain, err = LayOut(in[i], nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !tracks(offTracked) {
			continue
		}
		tracked++
		repNormal := map[string]Server{}
		for _, sv := range rep.Servers {
			if !sv.Backup {
				repNormal[sv.Member] = sv
			}
		}
		for i, sv := range offTracked.Servers {
			plain := offPlain.Servers[i]
			if sv.Name != plain.Name {
				t.Fatalf("case %d: server %d is %s, untracked %s", n, i, sv.Name, plain.Name)
			}
			if !sv.Backup {
				if sv != plain {
					t.Errorf("case %d: normal twin %s changed by the tracking: %+v -> %+v", n, sv.Name, plain, sv)
				}
				continue
			}
			r, ok := repNormal[sv.Member]
			if !ok || sv.Track != rep.Name+"/"+r.Name {
				t.Fatalf("case %d: %s tracks %q, want the replica service's normal twin of %s", n, sv.Name, sv.Track, sv.Member)
			}
			if r.Disabled != plain.Disabled {
				t.Errorf("case %d: %s would be active %t, the replica twin it tracks is active %t (roles %v)",
					n, sv.Name, !plain.Disabled, !r.Disabled, roles(v))
			}
		}
	}
	if tracked < 500 {
		t.Fatalf("only %d of 2000 random clusters tracked: the test does not test", tracked)
	}
}

func roles(v *topology.View) []string {
	var out []string
	for _, m := range v.Members {
		s := m.Name + ":" + m.Role
		if m.Live != nil {
			s += "/" + m.Live.State
		}
		out = append(out, s)
	}
	return out
}

// TestCanTrackReplicasRefuses: each condition on its own.
func TestCanTrackReplicasRefuses(t *testing.T) {
	v := view("pg-test", "pg-test-1", seedDefs(t),
		known(1, "10.10.10.11", "primary", "primary", false),
		known(2, "10.10.10.12", "replica", "replica", false),
		known(3, "10.10.10.13", "replica", "replica", false))
	in, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	var off, rep, std Service
	for _, s := range in {
		switch s.Service {
		case "offline":
			off = s
		case "replica":
			rep = s
		case "standby":
			std = s
		}
	}
	if !CanTrackReplicas(&off, &rep) {
		t.Fatal("Pigsty's offline and replica services: no tracking")
	}
	if CanTrackReplicas(&off, &std) || CanTrackReplicas(&rep, &off) || CanTrackReplicas(&off, &off) {
		t.Error("tracks the standby service, or the other way round, or itself")
	}
	for _, tc := range []struct {
		name string
		mod  func(s, src *Service)
	}{
		{"a lag limit on the offline check", func(s, _ *Service) { s.Check = "/replica?lag=16MB" }},
		{"another offline check", func(s, _ *Service) { s.Check = "/read-only" }},
		{"a lag limit on the replica check", func(_, src *Service) { src.Check = "/read-only?lag=1MB" }},
		{"a replica check that fails on replicas (/sync)", func(_, src *Service) { src.Check = "/sync" }},
		{"a write source", func(_, src *Service) { src.Check = "/primary" }},
		{"another backup selector", func(s, _ *Service) { s.BackupIsReplicas = false }},
		{"a source whose backup is not the primary", func(_, src *Service) { src.BackupIsPrimary = false }},
		{"another cluster", func(_, src *Service) { src.Cluster = "other" }},
		{"a source of fixed membership", func(_, src *Service) { src.RoleDependent = false }},
		{"other check timings", func(s, _ *Service) { s.DefaultServer = "inter 1s rise 1 fall 1" }},
		{"a member missing from the source", func(_, src *Service) { src.Candidates = src.Candidates[:2] }},
		{"another Patroni port", func(_, src *Service) {
			src.Candidates = cloneServers(src.Candidates)
			src.Candidates[1].CheckPort = 8009
		}},
		{"another address", func(_, src *Service) {
			src.Candidates = cloneServers(src.Candidates)
			src.Candidates[0].Address = "10.0.0.9"
		}},
		{"Patroni over TLS on one side", func(_, src *Service) {
			src.Candidates = cloneServers(src.Candidates)
			src.Candidates[2].CheckSSL = true
		}},
		{"a laid-out service", func(s, _ *Service) { s.Layout = LayoutTwins }},
		{"a laid-out source", func(_, src *Service) { src.Layout = LayoutTwins }},
	} {
		s, sr := off, rep
		tc.mod(&s, &sr)
		if CanTrackReplicas(&s, &sr) {
			t.Errorf("%s: tracks", tc.name)
		}
	}
	// The source is found whatever the order of the cluster's services.
	srcs := TrackSources([]Service{off, std, rep})
	if srcs[0] == nil || srcs[0].Name != rep.Name {
		t.Errorf("offline listed first: source %v", srcs[0])
	}
	for _, sel := range []string{"[? pg_role == `offline` || pg_offline_query ]", "[?pg_role=='offline'||pg_offline_query]"} {
		if !pigstyOfflineSelectors[strings.Join(strings.Fields(sel), "")] {
			t.Errorf("%q: not Pigsty's offline selector", sel)
		}
	}
	if pigstyOfflineBackups["[?pg_role==`replica`]"] {
		t.Error("a backup of every replica, pg_offline_query or not, taken for Pigsty's")
	}
}

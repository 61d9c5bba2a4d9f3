package services

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// laidOut builds pg-test's seed services over v and lays them out in
// twins, by service name.
func laidOut(t *testing.T, v *topology.View) (built, laid map[string]Service) {
	t.Helper()
	in, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Twins(in)
	if err != nil {
		t.Fatal(err)
	}
	built, laid = map[string]Service{}, map[string]Service{}
	for i := range in {
		built[in[i].Service], laid[out[i].Service] = in[i], out[i]
	}
	return built, laid
}

// TestTwinsTrackReplicaBackups: in Pigsty's replica service (`[]`, the
// primary and offline members as backup, /read-only) of a cluster with no
// offline member, each backup twin tracks the primary service's server of
// its member and is never disabled: a role change flips only the normal
// twins. The standby service (/sync, which fails on the primary) keeps
// flipped twins; so does the replica service of a cluster with an offline
// member.
func TestTwinsTrackReplicaBackups(t *testing.T) {
	members := func(third string) *topology.View {
		return view("pg-test", "", seedDefs(t),
			known(1, "10.10.10.11", "primary", "replica", false),
			known(2, "10.10.10.12", "replica", "primary", false),
			known(3, "10.10.10.13", third, third, false))
	}
	built, laid := laidOut(t, members("replica"))
	if !built["replica"].BackupIsPrimary || built["offline"].BackupIsPrimary || built["primary"].BackupIsPrimary {
		t.Errorf("BackupIsPrimary: replica %t offline %t primary %t, want true false false",
			built["replica"].BackupIsPrimary, built["offline"].BackupIsPrimary, built["primary"].BackupIsPrimary)
	}
	rep := laid["replica"]
	if rep.Layout != LayoutTwins || len(rep.Servers) != 6 {
		t.Fatalf("replica: layout %q, %d servers", rep.Layout, len(rep.Servers))
	}
	for _, sv := range rep.Servers {
		switch {
		case sv.Backup:
			want := "pg-test-primary/" + sv.Member
			if sv.Track != want || sv.Disabled || sv.CheckPort != 0 || sv.ForceUp || sv.ForceDown || sv.HoldDown || sv.Unconfirmed {
				t.Errorf("replica %s: %+v, want a tracker of %s, never disabled, no check nor intent of its own", sv.Name, sv, want)
			}
			if !strings.Contains(sv.Reason, "tracks its member's server in the primary service") {
				t.Errorf("replica %s: reason %q", sv.Name, sv.Reason)
			}
		default:
			if sv.Track != "" || sv.CheckPort != 8008 || sv.Disabled != (sv.Member == "pg-test-2") {
				t.Errorf("replica %s: %+v, want a checked normal twin, inactive only on the primary", sv.Name, sv)
			}
		}
	}
	for _, sv := range laid["standby"].Servers {
		if sv.Track != "" {
			t.Errorf("standby/%s tracks %s: its /sync check fails on the primary", sv.Name, sv.Track)
		}
	}
	for _, sv := range laid["offline"].Servers {
		if sv.Track != "" && (!sv.Backup || !strings.HasPrefix(sv.Track, "pg-test-replica/")) {
			t.Errorf("offline/%s tracks %s: only its backups may, and the replica service's normal twins (TestTwinsTrackOfflineBackups)", sv.Name, sv.Track)
		}
	}
	// Layout only: another leader gives the same servers but the
	// normal twins' states.
	_, after := laidOut(t, view("pg-test", "", seedDefs(t),
		known(1, "10.10.10.11", "primary", "primary", false),
		known(2, "10.10.10.12", "replica", "replica", false),
		known(3, "10.10.10.13", "replica", "replica", false)))
	for i, sv := range after["replica"].Servers {
		b := rep.Servers[i]
		if sv.Name != b.Name || sv.Track != b.Track || sv.Backup != b.Backup || sv.CheckPort != b.CheckPort {
			t.Errorf("replica %s: the switchover changed the file's server line: %+v -> %+v", sv.Name, b, sv)
		}
	}

	// An offline member: Pigsty's replica backup has it without it being
	// the primary, so no tracking in that cluster.
	built, laid = laidOut(t, members("offline"))
	if built["replica"].BackupIsPrimary {
		t.Error("BackupIsPrimary with an offline member")
	}
	for _, sv := range laid["replica"].Servers {
		if sv.Track != "" {
			t.Errorf("replica %s tracks %s with an offline member in the cluster", sv.Name, sv.Track)
		}
	}

	// A standby cluster: its leader's /primary check never passes, so
	// its replica backup stays a checked, flipped twin. Known by the
	// inventory (pg_upstream on the primary) or by Patroni
	// (standby_leader).
	standby := members("replica")
	standby.Members[0].Vars["pg_upstream"] = "10.10.10.99"
	if built, _ := laidOut(t, standby); built["replica"].BackupIsPrimary {
		t.Error("BackupIsPrimary in a standby cluster (pg_upstream on the primary)")
	}
	cascade := members("replica")
	cascade.Members[2].Vars["pg_upstream"] = "10.10.10.12"
	if built, _ := laidOut(t, cascade); !built["replica"].BackupIsPrimary {
		t.Error("a cascading replica's pg_upstream taken for a standby cluster")
	}
	standby = members("replica")
	standby.Members[1].Live = &patroni.Member{Name: "pg-test-2", Role: patroni.RoleStandbyLeader, State: "running"}
	built, laid = laidOut(t, standby)
	if built["replica"].BackupIsPrimary {
		t.Error("BackupIsPrimary with a standby_leader")
	}
	for _, sv := range laid["replica"].Servers {
		if sv.Track != "" {
			t.Errorf("replica %s tracks %s in a standby cluster", sv.Name, sv.Track)
		}
	}
}

// TestCanTrackBackupsRefuses: each condition on its own.
func TestCanTrackBackupsRefuses(t *testing.T) {
	v := view("pg-test", "pg-test-1", seedDefs(t),
		known(1, "10.10.10.11", "primary", "primary", false),
		known(2, "10.10.10.12", "replica", "replica", false))
	in, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	var src, rep Service
	for _, s := range in {
		switch s.Service {
		case "primary":
			src = s
		case "replica":
			rep = s
		}
	}
	if !CanTrackBackups(&rep, &src) {
		t.Fatal("Pigsty's replica and primary services: no tracking")
	}
	for _, tc := range []struct {
		name string
		mod  func(s, src *Service)
	}{
		{"a check that fails on the primary", func(s, _ *Service) { s.Check = "/replica" }},
		{"a write check", func(s, _ *Service) { s.Check = "/primary" }},
		{"another backup selector", func(s, _ *Service) { s.BackupIsPrimary = false }},
		{"another cluster", func(_, src *Service) { src.Cluster = "other" }},
		{"a role-dependent source", func(_, src *Service) { src.RoleDependent = true }},
		{"a read source", func(_, src *Service) { src.Check = "/read-only" }},
		{"a member missing from the source", func(_, src *Service) { src.Servers = src.Servers[:1] }},
		{"another Patroni port", func(_, src *Service) { src.Servers = cloneServers(src.Servers); src.Servers[1].CheckPort = 8009 }},
		{"another address", func(_, src *Service) { src.Servers = cloneServers(src.Servers); src.Servers[0].Address = "10.0.0.9" }},
		{"a source server that tracks", func(_, src *Service) {
			src.Servers = cloneServers(src.Servers)
			src.Servers[0].Track = "x/y"
		}},
		{"a laid-out service", func(s, _ *Service) { s.Layout = LayoutTwins }},
	} {
		s, sr := rep, src
		tc.mod(&s, &sr)
		if CanTrackBackups(&s, &sr) {
			t.Errorf("%s: tracks", tc.name)
		}
	}
	// The source is found whatever the order of the cluster's services.
	srcs := TrackSources([]Service{rep, src})
	if srcs[0] == nil || srcs[0].Name != src.Name {
		t.Errorf("replica listed before primary: source %v", srcs[0])
	}
	for _, sel := range []string{"[? pg_role == `primary` || pg_role == `offline` ]", "[?pg_role=='primary']", " [? pg_role == `primary`] "} {
		if !pigstyReplicaBackups[strings.Join(strings.Fields(sel), "")] {
			t.Errorf("%q: not Pigsty's replica backup", sel)
		}
	}
	if pigstyReplicaBackups["[?pg_role==`replica`]"] {
		t.Error("a replica selector taken for the primary")
	}
}

func cloneServers(s []Server) []Server { return append([]Server(nil), s...) }

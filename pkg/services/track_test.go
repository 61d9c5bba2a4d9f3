package services

import (
	"strings"
	"testing"
)

const pigstyDefaultServer = "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"

// pigstyWrite is Pigsty's primary (pgbouncer) or default (postgres) service
// of cluster c: every member, checked on /primary; member 2 is the primary,
// forced UP, member 1 the fenced old primary.
func pigstyWrite(c, svc string, dest int) Service {
	s := Service{Cluster: c, Name: c + "-" + svc, Service: svc, Check: "/primary", DestPort: dest, DefaultServer: pigstyDefaultServer}
	for i, a := range []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"} {
		s.Servers = append(s.Servers, Server{Name: c + "-" + string(rune('1'+i)), Address: a, Port: dest, CheckPort: 8008, Weight: 100,
			Selected: true, ForceUp: i == 1, ForceDown: i == 0, Writable: i == 1, Reason: "member"})
	}
	return s
}

func TestTwinsTrackPigstyDefault(t *testing.T) {
	in := []Service{pigstyWrite("a", "primary", 6432), {Cluster: "a", Name: "a-replica", Check: "/read-only"}, pigstyWrite("a", "default", 5432),
		pigstyWrite("b", "primary", 6432), pigstyWrite("b", "default", 5432)}
	out, err := Twins(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 3} {
		for _, sv := range out[i].Servers {
			if sv.Track != "" {
				t.Errorf("%s/%s tracks %s: only the default service tracks", out[i].Name, sv.Name, sv.Track)
			}
		}
	}
	for i, k := range map[int]int{2: 0, 4: 3} {
		d, src := out[i], in[k]
		for j, sv := range d.Servers {
			if sv.Track != tracked(src, j) {
				t.Errorf("%s/%s: track %q, want %q", d.Name, sv.Name, sv.Track, tracked(src, j))
			}
			if sv.CheckPort != 0 || sv.ForceUp || sv.ForceDown || sv.HoldDown || sv.Writable {
				t.Errorf("%s/%s: %+v: a tracker has no check nor health intent of its own", d.Name, sv.Name, sv)
			}
			if sv.Port != 5432 || sv.Address != src.Servers[j].Address || sv.Weight != 100 || !sv.Selected {
				t.Errorf("%s/%s: %+v: destination, weight and selection are its own", d.Name, sv.Name, sv)
			}
			if !strings.HasPrefix(sv.Reason, "tracks "+tracked(src, j)) {
				t.Errorf("%s/%s: reason %q", d.Name, sv.Name, sv.Reason)
			}
		}
	}
	if in[2].Servers[0].Track != "" || in[2].Servers[0].CheckPort != 8008 {
		t.Errorf("Twins modified its input: %+v", in[2].Servers[0])
	}
	// A layout is stable: Twins of it is itself.
	again, err := Twins(out)
	if err != nil || !Equal(&again[2], &out[2]) {
		t.Errorf("Twins of a layout changed the tracker: %v", err)
	}
}

func tracked(src Service, j int) string { return src.Name + "/" + src.Servers[j].Name }

// TestCanTrackRefuses: a default service tracks the primary service only
// where both behave the same in every state HAProxy can reach.
func TestCanTrackRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(s, src *Service)
	}{
		{"no shutdown-sessions on marked down", func(s, src *Service) {
			s.DefaultServer = strings.Replace(s.DefaultServer, " on-marked-down shutdown-sessions", "", 1)
			src.DefaultServer = s.DefaultServer
		}},
		{"other default-server options", func(s, _ *Service) { s.DefaultServer += " inter 1s" }},
		{"other check", func(s, _ *Service) { s.Check = "/leader" }},
		{"not a write check", func(s, src *Service) { s.Check, src.Check = "/replica", "/replica" }},
		{"another cluster", func(s, _ *Service) { s.Cluster = "b" }},
		{"role-dependent", func(s, _ *Service) { s.RoleDependent = true }},
		{"a member fewer", func(s, _ *Service) { s.Servers = s.Servers[:2] }},
		{"members in another order", func(s, _ *Service) { s.Servers[0], s.Servers[1] = s.Servers[1], s.Servers[0] }},
		{"another check port", func(s, _ *Service) { s.Servers[2].CheckPort = 8009 }},
		{"check over TLS", func(s, _ *Service) { s.Servers[2].CheckSSL = true }},
		{"another force-up", func(s, _ *Service) { s.Servers[2].ForceUp = true }},
		{"another fence", func(s, _ *Service) { s.Servers[1].ForceDown = true }},
		{"another hold", func(s, _ *Service) { s.Servers[0].HoldDown = true }},
		{"a backup server", func(s, _ *Service) { s.Servers[0].Backup = true }},
		{"a disabled server", func(s, _ *Service) { s.Servers[0].Disabled = true }},
		{"the source in maintenance", func(_, src *Service) { src.Servers[0].Disabled = true }},
	} {
		src, s := pigstyWrite("a", "primary", 6432), pigstyWrite("a", "default", 5432)
		if !CanTrack(&s, &src) {
			t.Fatalf("%s: Pigsty's default cannot track its primary", tc.name)
		}
		tc.mod(&s, &src)
		if CanTrack(&s, &src) {
			t.Errorf("%s: CanTrack = true", tc.name)
		}
		if srcs := TrackSources([]Service{src, s}); srcs[1] != nil {
			t.Errorf("%s: TrackSources chose %s", tc.name, srcs[1].Name)
		}
	}
}

// TestTrackSourcesPerCluster: the source is the first write service of the
// same cluster's run, never a service of the cluster before.
func TestTrackSourcesPerCluster(t *testing.T) {
	a := pigstyWrite("a", "primary", 6432)
	bDefault := pigstyWrite("b", "default", 5432)
	srcs := TrackSources([]Service{a, bDefault})
	if srcs[0] != nil || srcs[1] != nil {
		t.Errorf("sources %v, want none: the default of b has no primary of b before it", srcs)
	}
	in := []Service{pigstyWrite("a", "primary", 6432), pigstyWrite("a", "default", 5432), pigstyWrite("a", "extra", 5432)}
	srcs = TrackSources(in)
	if srcs[0] != nil || srcs[1] != &in[0] || srcs[2] != &in[0] {
		t.Errorf("sources %v, want the primary service for the two others", srcs)
	}
}

package target

import (
	"context"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

func srv(name, addr string, backup bool, weight int) services.Server {
	return services.Server{Name: name, Address: addr, Port: 6432, CheckPort: 8008, Weight: weight, Backup: backup}
}

func TestDiff(t *testing.T) {
	want := services.Service{Name: "pg-test-replica", IP: "*", Port: 5434, Check: "/read-only", Balance: "roundrobin", Maxconn: 5000,
		Servers: []services.Server{srv("pg-test-1", "10.0.0.1", false, 100), srv("pg-test-2", "10.0.0.2", true, 100)}}
	want.Servers[0].ForceUp = true // only acted on while the live server is down
	settings := SettingsOf(want)
	tests := []struct {
		name    string
		current map[string]*Backend
		kinds   []string
		runtime bool
	}{
		{name: "missing service", current: nil, kinds: []string{KindCreateService}},
		{name: "in sync", current: map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true, Settings: &settings,
			Servers: map[string]services.Server{"pg-test-1": srv("pg-test-1", "10.0.0.1", false, 100), "pg-test-2": srv("pg-test-2", "10.0.0.2", true, 100)}}}},
		{name: "switchover flips backup", current: map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true,
			Servers: map[string]services.Server{"pg-test-1": srv("pg-test-1", "10.0.0.1", true, 100), "pg-test-2": srv("pg-test-2", "10.0.0.2", false, 100)}}},
			kinds: []string{KindUpdateServer, KindUpdateServer}},
		{name: "weight only is runtime", current: map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true,
			Servers: map[string]services.Server{"pg-test-1": srv("pg-test-1", "10.0.0.1", false, 50), "pg-test-2": srv("pg-test-2", "10.0.0.2", true, 100)}}},
			kinds: []string{KindSetWeight}, runtime: true},
		{name: "added and removed", current: map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true,
			Servers: map[string]services.Server{"pg-test-1": srv("pg-test-1", "10.0.0.1", false, 100), "pg-test-3": srv("pg-test-3", "10.0.0.3", false, 100)}}},
			kinds: []string{KindAddServer, KindRemoveServer}},
		{name: "new primary still down is forced up", current: map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true,
			Servers: map[string]services.Server{"pg-test-1": {Name: "pg-test-1", Address: "10.0.0.1", Port: 6432, CheckPort: 8008, Weight: 100, Down: true},
				"pg-test-2": srv("pg-test-2", "10.0.0.2", true, 100)}}},
			kinds: []string{KindForceUp}, runtime: true},
		{name: "settings changed", current: map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true, Settings: &Settings{IP: "*", Port: 5434, Check: "/replica", Balance: "roundrobin", Maxconn: 5000},
			Servers: map[string]services.Server{"pg-test-1": srv("pg-test-1", "10.0.0.1", false, 100), "pg-test-2": srv("pg-test-2", "10.0.0.2", true, 100)}}},
			kinds: []string{KindUpdateService}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.current, []services.Service{want})
			checkKinds(t, got, tc.kinds, tc.runtime)
		})
	}
}

// TestDiffForceDown: the write fence is a runtime forced DOWN, emitted
// while HAProxy has the server not DOWN (again when something brought it
// UP), never a weight or a file change; a server in maintenance is left
// alone.
func TestDiffForceDown(t *testing.T) {
	want := services.Service{Name: "pg-test-primary", IP: "*", Port: 5433, Check: "/primary", Balance: "roundrobin", Maxconn: 5000,
		Servers: []services.Server{srv("pg-test-1", "10.0.0.1", false, 100), srv("pg-test-2", "10.0.0.2", false, 100)}}
	want.Servers[0].ForceDown = true
	cur := func(down bool, admin string, weight int) map[string]*Backend {
		s1 := srv("pg-test-1", "10.0.0.1", false, weight)
		s1.Down, s1.Admin = down, admin
		return map[string]*Backend{want.Name: {Name: want.Name, HasFrontend: true,
			Servers: map[string]services.Server{"pg-test-1": s1, "pg-test-2": srv("pg-test-2", "10.0.0.2", false, 100)}}}
	}
	tests := []struct {
		name    string
		current map[string]*Backend
		kinds   []string
		runtime bool
	}{
		{name: "UP: forced DOWN", current: cur(false, "", 100), kinds: []string{KindForceDown}, runtime: true},
		{name: "already DOWN: nothing", current: cur(true, "", 100)},
		{name: "in maintenance: nothing", current: cur(false, "maint", 100)},
		{name: "a weight 0 left by an older controller goes back, the fence stays", current: cur(false, "", 0),
			kinds: []string{KindSetWeight, KindForceDown}, runtime: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.current, []services.Service{want})
			checkKinds(t, got, tc.kinds, tc.runtime)
			for _, c := range got {
				if c.Kind == KindForceDown && (c.Server != "pg-test-1" || !c.Runtime) {
					t.Errorf("force_down %+v, want pg-test-1 at runtime", c)
				}
			}
		})
	}
	// A new leader not read-write yet (HoldDown): forced again though DOWN
	// (its checks may be rising); not when current asked for it already
	// (desired compared with desired).
	hold := want
	hold.Servers = append([]services.Server(nil), want.Servers...)
	hold.Servers[0].HoldDown = true
	if got := Diff(cur(true, "", 100), []services.Service{hold}); len(got) != 1 || got[0].Kind != KindForceDown {
		t.Errorf("HoldDown on a DOWN server: %+v, want one force_down", got)
	}
	asked := cur(true, "", 100)
	s1 := asked[want.Name].Servers["pg-test-1"]
	s1.HoldDown = true
	asked[want.Name].Servers["pg-test-1"] = s1
	if got := Diff(asked, []services.Service{hold}); len(got) != 0 {
		t.Errorf("HoldDown asked for already: %+v, want none", got)
	}
	down, up, rest := SplitForce([]Change{{Kind: KindSetWeight}, {Kind: KindForceUp}, {Kind: KindForceDown, Server: "a"}, {Kind: KindForceDown, Server: "b"}})
	if len(down) != 2 || down[0].Server != "a" || len(up) != 1 || len(rest) != 1 {
		t.Errorf("SplitForce: down %v up %v rest %v", down, up, rest)
	}
	if !WantsHealth(want) || WantsHealth(services.Service{Servers: []services.Server{srv("x", "10.0.0.9", false, 100)}}) {
		t.Error("WantsHealth: want true for a service with a forced DOWN server only")
	}
}

func checkKinds(t *testing.T, got []Change, want []string, runtime bool) {
	t.Helper()
	var kinds []string
	for _, c := range got {
		kinds = append(kinds, c.Kind)
	}
	if len(kinds) != len(want) {
		t.Fatalf("changes %v, want kinds %v", got, want)
	}
	for i := range kinds {
		if kinds[i] != want[i] {
			t.Fatalf("changes %v, want kinds %v", got, want)
		}
	}
	if RuntimeOnly(got) != runtime {
		t.Errorf("RuntimeOnly = %v, want %v", RuntimeOnly(got), runtime)
	}
}

type recorder struct{ got []string }

func (r *recorder) Name() string { return "r" }
func (r *recorder) Diff(_ context.Context, d []services.Service) ([]Change, error) {
	return nil, nil
}
func (r *recorder) Apply(_ context.Context, d []services.Service) (Result, error) {
	r.got = nil
	for _, s := range d {
		r.got = append(r.got, s.Name)
	}
	return Result{}, nil
}

func TestOnlyClusters(t *testing.T) {
	r := &recorder{}
	desired := []services.Service{{Cluster: "a", Name: "a-primary"}, {Cluster: "b", Name: "b-primary"}}
	if _, err := OnlyClusters(r, []string{"b"}).Apply(context.Background(), desired); err != nil {
		t.Fatal(err)
	}
	if len(r.got) != 1 || r.got[0] != "b-primary" {
		t.Errorf("filtered target got %v", r.got)
	}
	if OnlyClusters(r, nil) != Target(r) {
		t.Error("no clusters must mean every cluster")
	}
}

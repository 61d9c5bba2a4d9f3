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
			var kinds []string
			for _, c := range got {
				kinds = append(kinds, c.Kind)
			}
			if len(kinds) != len(tc.kinds) {
				t.Fatalf("changes %v, want kinds %v", got, tc.kinds)
			}
			for i := range kinds {
				if kinds[i] != tc.kinds[i] {
					t.Fatalf("changes %v, want kinds %v", got, tc.kinds)
				}
			}
			if RuntimeOnly(got) != tc.runtime {
				t.Errorf("RuntimeOnly = %v, want %v", RuntimeOnly(got), tc.runtime)
			}
		})
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

package target_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// diffTarget does what every driver's apply does before it changes
// anything: validate desired and diff it against what runs (here: what it
// was given last, as a driver's cached read), then takes it as applied.
type diffTarget struct{ cur map[string]*target.Backend }

func (d *diffTarget) Name() string { return "diff" }
func (d *diffTarget) Diff(_ context.Context, desired []services.Service) ([]target.Change, error) {
	return target.Diff(d.cur, desired), nil
}
func (d *diffTarget) Apply(_ context.Context, desired []services.Service) (target.Result, error) {
	if err := services.Validate(desired); err != nil {
		return target.Result{}, err
	}
	changes := target.Diff(d.cur, desired)
	for _, c := range changes {
		for _, s := range desired {
			if s.Name == c.Backend {
				d.cur[s.Name] = backendOf(s)
			}
		}
	}
	return target.Result{Changes: changes}, nil
}

func backendOf(s services.Service) *target.Backend {
	st := target.SettingsOf(s)
	b := &target.Backend{Name: s.Name, HasFrontend: true, Settings: &st, Servers: map[string]services.Server{}}
	for _, sv := range s.Servers {
		sv.Down = sv.ForceDown
		sv.Admin = services.AdminWord(s, sv)
		b.Servers[sv.Name] = sv
	}
	return b
}

// benchFleet is n clusters of 3 members with a write service and three
// role-dependent ones (Pigsty's four), in Pigsty's layout.
func benchFleet(n int) []services.Service {
	var out []services.Service
	for c := 0; c < n; c++ {
		cl := fmt.Sprintf("pg-b%04d", c)
		var cands []services.Server
		for m := 1; m <= 3; m++ {
			cands = append(cands, services.Server{Name: fmt.Sprintf("%s-%d", cl, m), Address: fmt.Sprintf("10.%d.%d.%d", c/250, c%250, m),
				Port: 6432, CheckPort: 8008, Weight: 100, Selected: true, Reason: "selected by []"})
		}
		for k, name := range []string{"primary", "replica", "default", "offline"} {
			s := services.Service{Cluster: cl, Name: cl + "-" + name, Service: name, IP: "*", Port: 5433 + k,
				Check: []string{"/primary", "/read-only", "/primary", "/replica"}[k], Balance: "roundrobin", Maxconn: 5000,
				DefaultServer: "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100",
				RoleDependent: name == "replica" || name == "offline"}
			if s.RoleDependent {
				s.Candidates = cands
				s.Servers = []services.Server{cands[0], cands[1], cands[2]}
				s.Servers[0].Backup = true
			} else {
				s.Servers = []services.Server{cands[0], cands[1], cands[2]}
			}
			out = append(out, s)
		}
	}
	return out
}

// BenchmarkTwinsApplyOneChange1000 is the target side of one apply at
// 1,000 clusters when one cluster's services changed: the twin layout,
// validation and the diff of the whole desired state (a driver's work
// before it changes anything), against a target in sync.
func BenchmarkTwinsApplyOneChange1000(b *testing.B) {
	desired := benchFleet(1000)
	tw, err := services.Twins(desired)
	if err != nil {
		b.Fatal(err)
	}
	dt := &diffTarget{cur: map[string]*target.Backend{}}
	for _, s := range tw {
		dt.cur[s.Name] = backendOf(s)
	}
	t := target.WithTwins(dt)
	ctx := context.Background()
	if _, err := t.Apply(ctx, desired); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next := make([]services.Service, len(desired))
		copy(next, desired)
		j := 4*((i*7)%1000) + 1 // one cluster's replica service: its backup moves
		s := next[j]
		s.Servers = append([]services.Server(nil), s.Servers...)
		s.Servers[0].Backup, s.Servers[1].Backup = s.Servers[1].Backup, s.Servers[0].Backup
		next[j] = s
		res, err := t.Apply(ctx, next)
		if err != nil || len(res.Changes) == 0 {
			b.Fatalf("apply: %d changes, %v", len(res.Changes), err)
		}
		desired = next
	}
}

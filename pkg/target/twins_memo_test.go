package target

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestTwinsMemoIsTwins runs random sequences of desired states through one
// twins target's layout and requires services.Twins of each, whole: services
// changed, added, dropped, reordered, named twice, and
// colliding twin names (an error).
func TestTwinsMemoIsTwins(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	for run := 0; run < 40; run++ {
		tw := &twins{}
		var desired []services.Service
		for c := 0; c < 6; c++ {
			for k := 0; k < 4; k++ {
				desired = append(desired, memoService(r, c, k))
			}
		}
		for step := 0; step < 60; step++ {
			desired = memoStep(r, desired)
			got, gerr := tw.layout(desired)
			want, werr := services.Twins(desired)
			if fmt.Sprint(gerr) != fmt.Sprint(werr) {
				t.Fatalf("run %d step %d: error %v, Twins %v", run, step, gerr, werr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("run %d step %d: layout differs from Twins", run, step)
			}
		}
	}
}

func memoService(r *rand.Rand, c, k int) services.Service {
	s := services.Service{Cluster: fmt.Sprintf("c%d", c), Name: fmt.Sprintf("c%d-s%d", c, k), Port: 5000 + k,
		Check: []string{"/primary", "/replica", "/read-only"}[k%3], RoleDependent: k > 0}
	for m := 0; m < 3; m++ {
		cand := services.Server{Name: fmt.Sprintf("c%d-%d", c, m), Address: "10.0.0.1", Port: 6432, Weight: 100}
		s.Candidates = append(s.Candidates, cand)
	}
	s.Servers = memoServers(r, s.Candidates)
	return s
}

func memoServers(r *rand.Rand, cands []services.Server) []services.Server {
	var out []services.Server
	for _, c := range cands {
		if r.Intn(3) == 0 {
			continue
		}
		sv := c
		sv.Backup, sv.ForceUp, sv.ForceDown = r.Intn(2) == 0, r.Intn(5) == 0, r.Intn(5) == 0
		sv.Reason = fmt.Sprint("why ", r.Intn(3))
		out = append(out, sv)
	}
	return out
}

// memoStep changes desired the ways a controller (or a test) may.
func memoStep(r *rand.Rand, desired []services.Service) []services.Service {
	next := append([]services.Service(nil), desired...)
	switch r.Intn(10) {
	case 0: // nothing changes
	case 1: // one server changed (a new list: desired is never modified)
		if i := r.Intn(len(next)); len(next[i].Servers) > 0 {
			next[i].Servers = append([]services.Server(nil), next[i].Servers...)
			next[i].Servers[0].Backup = !next[i].Servers[0].Backup
		}
	case 2: // a service dropped
		i := r.Intn(len(next))
		next = append(next[:i], next[i+1:]...)
	case 3: // reordered
		r.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
	case 4: // a name twice
		next = append(next, next[r.Intn(len(next))])
	case 5: // twin names collide
		i := r.Intn(len(next))
		s := next[i]
		s.Candidates = append(append([]services.Server(nil), s.Candidates...), services.Server{Name: s.Candidates[0].Name + services.BackupTwinSuffix})
		next[i] = s
	case 6: // a service field
		next[r.Intn(len(next))].Check = "/read-only"
	default: // new servers for some services (new slices)
		for n := r.Intn(5); n > 0; n-- {
			i := r.Intn(len(next))
			next[i].Servers = memoServers(r, next[i].Candidates)
		}
	}
	// Drop a collision again now and then, so that runs go on.
	for i := range next {
		if r.Intn(4) == 0 && len(next[i].Candidates) > 3 {
			next[i].Candidates = next[i].Candidates[:3]
		}
	}
	if len(next) < 4 {
		next = append(next, memoService(r, 9, len(next)))
	}
	return next
}

// fleet1000 is 1,000 clusters' 4 services (3 role-dependent).
func fleet1000() []services.Service {
	r := rand.New(rand.NewSource(1))
	out := make([]services.Service, 0, 4000)
	for c := 0; c < 1000; c++ {
		for k := 0; k < 4; k++ {
			out = append(out, memoService(r, c, k))
		}
	}
	return out
}

// BenchmarkTwinsLayoutOneChange1000: the twin layout an apply needs when
// one cluster's services changed among 1,000 (was services.Twins of all).
func BenchmarkTwinsLayoutOneChange1000(b *testing.B) {
	desired := fleet1000()
	b.Run("memo", func(b *testing.B) {
		tw := &twins{}
		r := rand.New(rand.NewSource(2))
		if _, err := tw.layout(desired); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			next := append([]services.Service(nil), desired...)
			j := r.Intn(len(next))
			next[j].Servers = memoServers(r, next[j].Candidates)
			if _, err := tw.layout(next); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) { // services.Twins of every service, as before
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := services.Twins(desired); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDiffInSync1000: Diff of 4,000 twin services against an HAProxy
// that has them (every apply's diff, nothing changed).
func BenchmarkDiffInSync1000(b *testing.B) {
	tw, err := services.Twins(fleet1000())
	if err != nil {
		b.Fatal(err)
	}
	cur := map[string]*Backend{}
	for i := range tw {
		tw[i].Servers = append([]services.Server(nil), tw[i].Servers...)
		for j := range tw[i].Servers {
			tw[i].Servers[j].ForceUp, tw[i].Servers[j].ForceDown = false, false
		}
	}
	for _, s := range tw {
		st := SettingsOf(s)
		bk := &Backend{Name: s.Name, HasFrontend: true, Settings: &st, Servers: map[string]services.Server{}}
		for _, sv := range s.Servers {
			sv.Down = sv.ForceDown
			sv.Admin = services.AdminWord(s, sv)
			bk.Servers[sv.Name] = sv
		}
		cur[s.Name] = bk
	}
	for name, diff := range map[string]func(map[string]*Backend, []services.Service) []Change{
		"now": Diff, "reference": referenceDiff} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if ch := diff(cur, tw); len(ch) > 0 {
					b.Fatalf("in sync, but %d changes: %v", len(ch), ch[0])
				}
			}
		})
	}
}

// failingTarget fails the applies fail says, and those with a name twice
// (as every driver does: services.Validate), and succeeds the others.
type failingTarget struct{ fail func() bool }

func (failingTarget) Name() string { return "failing" }
func (failingTarget) Diff(context.Context, []services.Service) ([]Change, error) {
	return nil, nil
}
func (f failingTarget) Apply(_ context.Context, desired []services.Service) (Result, error) {
	if f.fail() || services.Validate(desired) != nil {
		return Result{}, errors.New("refused")
	}
	return Result{}, nil
}

// twinKey is a server of a backend, as twins.applied was keyed.
type twinKey struct{ backend, server string }

// appliedMap is t.applied as the map by backend and server it was (checking
// that no backend lists a server twice, which that map could not have).
func (t *twins) appliedMap() map[twinKey]bool {
	out := map[twinKey]bool{}
	for b, list := range t.applied {
		for _, st := range list {
			k := twinKey{b, st.server}
			if _, dup := out[k]; dup {
				out[twinKey{b, st.server + " (listed twice)"}] = true
			}
			out[k] = st.disabled
			if d, ok := t.lastApplied(b, st.server); !ok || d != st.disabled {
				out[twinKey{b, st.server + " (lastApplied differs)"}] = true
			}
		}
	}
	return out
}

// The admin states a twins target remembers as applied (what tells a
// repair from a role change) are those of every server of the last
// successful apply's layout, as when every server was written per apply:
// random sequences with failed applies and dry runs (Diff) in between.
func TestTwinsAppliedIsLastSuccess(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	ctx := context.Background()
	for run := 0; run < 40; run++ {
		tw := &twins{Target: failingTarget{fail: func() bool { return r.Intn(3) == 0 }}}
		want := map[twinKey]bool{}
		var desired []services.Service
		for c := 0; c < 5; c++ {
			for k := 0; k < 4; k++ {
				desired = append(desired, memoService(r, c, k))
			}
		}
		for step := 0; step < 60; step++ {
			desired = memoStep(r, desired)
			if r.Intn(4) == 0 {
				_, _ = tw.Diff(ctx, desired)
				continue
			}
			_, err := tw.Apply(ctx, desired)
			if err == nil {
				laid, _ := services.Twins(desired)
				for _, s := range laid {
					if s.Layout != services.LayoutTwins {
						continue
					}
					for _, sv := range s.Servers {
						want[twinKey{s.Name, sv.Name}] = sv.Disabled
					}
				}
			}
			if got := tw.appliedMap(); len(want) > 0 && !reflect.DeepEqual(got, want) {
				var diff []string
				for k, v := range want {
					if g, ok := got[k]; !ok || g != v {
						diff = append(diff, fmt.Sprintf("%v: %v (have %v %v)", k, v, g, ok))
					}
				}
				for k := range got {
					if _, ok := want[k]; !ok {
						diff = append(diff, fmt.Sprintf("%v extra", k))
					}
				}
				t.Fatalf("run %d step %d: applied differs from the last successful layout: %v", run, step, diff)
			}
		}
	}
}

// TestTwinsAppliedKeepsEveryServer: a server that leaves a twin service
// keeps the state the last apply that had it left (as a map by backend and
// server kept it), and the others take the new apply's, in a backend's
// list as they would in that map.
func TestTwinsAppliedKeepsEveryServer(t *testing.T) {
	ctx := context.Background()
	svc := func(members ...string) services.Service {
		s := services.Service{Cluster: "c", Name: "c-replica", Service: "replica", IP: "*", Port: 5434, Check: "/read-only",
			Balance: "roundrobin", Maxconn: 5000, RoleDependent: true}
		for i, m := range members {
			sv := services.Server{Name: m, Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 6432, CheckPort: 8008, Weight: 100, Selected: true}
			s.Candidates = append(s.Candidates, sv)
			if i > 0 {
				s.Servers = append(s.Servers, sv) // the first is out of the service
			}
		}
		return s
	}
	tw := &twins{Target: failingTarget{fail: func() bool { return false }}}
	for _, d := range [][]services.Service{{svc("a", "b", "c")}, {svc("b", "c")}, {svc("c", "a")}} {
		if _, err := tw.Apply(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	want := map[twinKey]bool{}
	for _, d := range []services.Service{svc("a", "b", "c"), svc("b", "c"), svc("c", "a")} {
		laid, err := services.Twins([]services.Service{d})
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range laid[0].Servers {
			want[twinKey{laid[0].Name, sv.Name}] = sv.Disabled
		}
	}
	if got := tw.appliedMap(); !reflect.DeepEqual(got, want) {
		t.Fatalf("applied:\n got %v\nwant %v", got, want)
	}
	if d, ok := tw.lastApplied("c-replica", "b"); !ok || !d {
		t.Errorf("b (out of the service, disabled, when it left): %v %v", d, ok)
	}
	if d, ok := tw.lastApplied("c-replica", "a"); !ok || d {
		t.Errorf("a (back in the service at the last apply): %v %v", d, ok)
	}
}

package dataplaneapi

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// oldCurrent is the diff's view as readDeferred made it before curView:
// every desired backend found (but those st skips) made whole, with the
// admin states the Target's cache has.
func oldCurrent(tg *Target, st *state, desired []services.Service) map[string]*target.Backend {
	sn := st.snapshot
	out := map[string]*target.Backend{}
	for i, d := range desired {
		if st.skip != nil && st.skip[i] {
			continue
		}
		be, fe := sn.be[d.Name], sn.fe[d.Name]
		if be == nil {
			continue
		}
		cur := &target.Backend{Name: d.Name, HasFrontend: fe != nil, Servers: map[string]services.Server{}}
		dw := defaultWeight(be)
		for name, r := range sn.servers[d.Name] {
			cur.Servers[name] = r.view(dw)
		}
		if fe != nil {
			cur.Settings = settingsOf(d, fe, sn.bind[d.Name], be, sn.checks[d.Name], sn.dsText[d.Name])
		}
		out[d.Name] = cur
	}
	if twinLayout(desired) {
		tg.admin.mu.Lock()
		defer tg.admin.mu.Unlock()
		for _, d := range desired {
			b := out[d.Name]
			if d.Layout != services.LayoutTwins || b == nil {
				continue
			}
			for name, s := range b.Servers {
				s.Admin = tg.admin.states[d.Name][name]
				b.Servers[name] = s
			}
		}
	}
	return out
}

// TestCurViewAsBefore: the diff's view made one backend at a time (curView)
// is the view made whole before it, and diffs as it did, after reads of
// the twin and Pigsty layouts (services missing, servers added and
// removed, admin states read) and after the live health a read sets on
// random servers.
func TestCurViewAsBefore(t *testing.T) {
	for _, layout := range []string{"twins", "pigsty"} {
		t.Run(layout, func(t *testing.T) {
			srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(3))
			c, err := New(srv.URL(), Options{Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			tg := NewTarget(c, zaptest.NewLogger(t), TargetOptions{ReloadTimeout: 10 * time.Second, ReloadPollInterval: 5 * time.Millisecond})
			ctx := context.Background()
			mk := func(primary int) []services.Service {
				if layout == "twins" {
					return viewFleet(t, 12, func(i int) int { return 1 + (i+primary)%3 })
				}
				return limitFleet(12, primary)
			}
			if _, err := tg.Apply(ctx, mk(1)); err != nil {
				t.Fatal(err)
			}
			want := mk(2)
			// A service the file lacks, one server fewer, one more, a
			// weight and a check port changed.
			extra := want[0]
			extra.Name, extra.Port = "pg-extra", 7999
			want = append(want, extra)
			want[1].Servers = want[1].Servers[1:]
			add := want[2].Servers[0]
			add.Name, add.Address = "zz-new", "127.9.9.9"
			want[2].Servers = append(want[2].Servers, add)
			want[3].Servers[0].Weight = 7
			want[4].Servers[0].CheckPort = 9009
			rng := rand.New(rand.NewPCG(1, uint64(len(layout))))
			for round := 0; round < 3; round++ {
				st, err := tg.read(ctx, want, false)
				if err != nil {
					t.Fatal(err)
				}
				ref := oldCurrent(tg, st, want)
				admins := 0
				for _, cb := range ref {
					for _, s := range cb.Servers {
						if s.Admin != "" {
							admins++
						}
					}
				}
				if (admins > 0) != (layout == "twins") || len(ref) != len(want)-1 {
					t.Fatalf("round %d: %d backends read, %d admin states", round, len(ref), admins)
				}
				if got := st.current.all(); !reflect.DeepEqual(got, ref) {
					t.Fatalf("round %d: the view differs from the whole one:\n got %v\nwant %v", round, got, ref)
				}
				// Live health and admin states set on random servers, as
				// the reads do (a copy of the server, changed, put back).
				for b, cb := range ref {
					for name, s := range cb.Servers {
						if rng.IntN(3) != 0 {
							continue
						}
						s.Down, s.HoldDown = rng.IntN(2) == 0, rng.IntN(2) == 0
						if rng.IntN(4) == 0 {
							s.Admin = []string{"ready", "drain", "maint"}[rng.IntN(3)]
						}
						cb.Servers[name] = s
						got, ok := st.current.server(b, name)
						if !ok {
							t.Fatalf("server %s/%s not in the view", b, name)
						}
						got.Down, got.HoldDown, got.Admin = s.Down, s.HoldDown, s.Admin
						st.current.set(b, name, got)
						if again, _ := st.current.server(b, name); again != s {
							t.Fatalf("%s/%s: set %+v, read back %+v", b, name, s, again)
						}
					}
				}
				if _, ok := st.current.server("no-such-backend", "x"); ok {
					t.Fatal("a server of a backend not read")
				}
				if got := st.current.all(); !reflect.DeepEqual(got, ref) {
					t.Fatalf("round %d, after set: the view differs from the whole one", round)
				}
				// Forced servers, which Diff compares with the live health.
				for i := range want {
					for j := range want[i].Servers {
						s := &want[i].Servers[j]
						s.ForceUp, s.ForceDown, s.HoldDown = rng.IntN(4) == 0, rng.IntN(4) == 0, rng.IntN(4) == 0
					}
				}
				old, got := target.Diff(ref, want), st.current.diff(want)
				if !reflect.DeepEqual(got, old) {
					t.Fatalf("round %d: diff:\n got %v\nwant %v", round, got, old)
				}
				if len(old) == 0 {
					t.Fatalf("round %d: no change to compare", round)
				}
				sub := want[len(want)/2:]
				if got, old := st.current.diff(sub), target.Diff(ref, sub); !reflect.DeepEqual(got, old) {
					t.Fatalf("round %d: diff of a part:\n got %v\nwant %v", round, got, old)
				}
				for i := range want {
					for j := range want[i].Servers {
						s := &want[i].Servers[j]
						s.ForceUp, s.ForceDown, s.HoldDown = false, false, false
					}
				}
				t.Logf("round %d: %d backends, %d changes", round, len(ref), len(old))
			}
		})
	}
}

// all is the whole view as target.Diff takes it.
func (v curView) all() map[string]*target.Backend {
	out := make(map[string]*target.Backend, len(v))
	for b := range v {
		out[b] = v.backend(b)
	}
	return out
}

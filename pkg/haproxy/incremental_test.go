package haproxy

import (
	"context"
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// incFleet is n clusters of a write service (every member, the primary
// normal: `/primary`, no twins) and a replica service in the twin layout,
// from a state per cluster: the primary member (1-3), one weight, and the
// write service's forced health (a fenced old primary, a held or forced-up
// new one).
type incCluster struct {
	primary, weight      int
	fenced, held, forced int // member, 0: none
}

func incFleet(base int, cls []incCluster) []services.Service {
	var out []services.Service
	for c, st := range cls {
		prim := services.Service{Name: fmt.Sprintf("pg-i%d-primary", c), Service: "primary", IP: frontIP, Port: base + 2*c,
			Check: "/primary", Balance: "roundrobin", Maxconn: 100, DefaultServer: testDefaultServer}
		repl := services.Service{Name: fmt.Sprintf("pg-i%d-replica", c), Service: "replica", IP: frontIP, Port: base + 2*c + 1,
			Check: "/read-only", Balance: "roundrobin", Maxconn: 100, Layout: services.LayoutTwins, DefaultServer: testDefaultServer}
		for m := 1; m <= 3; m++ {
			name := fmt.Sprintf("pg-i%d-%d", c, m)
			addr := fmt.Sprintf("127.2.%d.%d", c/50, 10*(c%50/10)+m)
			w := 100
			if m == 3 {
				w = st.weight
			}
			sv := services.Server{Name: name, Member: name, Address: addr, Port: 6432, CheckPort: 8008, Weight: w}
			switch m {
			case st.fenced:
				sv.ForceDown = true
			case st.held:
				sv.ForceDown, sv.HoldDown = true, true
			case st.forced:
				sv.ForceUp = true
			}
			prim.Servers = append(prim.Servers, sv)
			isPrimary := m == st.primary
			repl.Servers = append(repl.Servers,
				services.Server{Name: name, Member: name, Address: addr, Port: 6432, CheckPort: 8008, Weight: w, Disabled: isPrimary},
				services.Server{Name: name + services.BackupTwinSuffix, Member: name, Address: addr, Port: 6432, CheckPort: 8008, Weight: w, Backup: true, Disabled: !isPrimary})
		}
		out = append(out, prim, repl)
	}
	return out
}

// Random applies on a real HAProxy: each one diffs only what changed since
// the last successful apply (and what wants live health), and the driver
// checks it against the full diff of the same snapshot (checkIncremental);
// a fresh driver's full read then finds nothing left to change but forced
// health. Between applies: an operator's `set server` (repaired by a full
// read only, by both diffs alike), a periodic full read, an apply that
// fails (the next diffs everything), a service's setting changed (reload).
func TestIncrementalSameAsFull(t *testing.T) {
	r := startRig(t)
	r.direct.checkIncremental = true
	ctx := context.Background()
	const n = 12
	base := 21000
	rng := rand.New(rand.NewSource(7))
	cls := make([]incCluster, n)
	for i := range cls {
		cls[i] = incCluster{primary: 1, weight: 100}
	}
	if _, err := r.direct.Apply(ctx, incFleet(base, cls)); err != nil {
		t.Fatal(err)
	}
	maxconn := 100
	drift := false // an operator's change not yet repaired (only a full read finds it)
	for step := 0; step < 60; step++ {
		for k := rng.Intn(4); k >= 0; k-- {
			c := &cls[rng.Intn(n)]
			switch rng.Intn(5) {
			case 0:
				c.primary = 1 + rng.Intn(3)
			case 1:
				c.weight = 50 * rng.Intn(3)
			case 2:
				c.fenced = rng.Intn(4)
			case 3:
				c.held = rng.Intn(4)
			case 4:
				c.forced = rng.Intn(4)
			}
		}
		desired := incFleet(base, cls)
		switch rng.Intn(12) {
		case 0:
			// An operator's runtime change.
			s := desired[2*rng.Intn(n)+1]
			sv := s.Servers[rng.Intn(len(s.Servers))]
			if _, err := r.rt.Exec(ctx, fmt.Sprintf("set server %s/%s state drain", s.Name, sv.Name)); err != nil {
				t.Fatal(err)
			}
			drift = true
		case 1:
			r.direct.forgetCache() // as a periodic full read
			drift = false
		case 2:
			// A reload (the state file it loads follows desired).
			drift = false
			maxconn++
			for i := range desired {
				desired[i].Maxconn = maxconn
			}
		case 3:
			// An apply that fails (validation), between two good ones.
			bad := append([]services.Service(nil), desired...)
			bad[0].Servers = append([]services.Server{{Name: "bad name", Address: "127.0.0.1", Port: 1}}, bad[0].Servers[1:]...)
			if _, err := r.direct.Apply(ctx, bad); err == nil || !target.IsRejected(err) {
				t.Fatalf("step %d: a bad server name: %v", step, err)
			}
		}
		for i := range desired {
			desired[i].Maxconn = maxconn
		}
		if _, err := r.direct.Apply(ctx, desired); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		// A second apply of the same desired: nothing but forced health.
		res, err := r.direct.Apply(ctx, desired)
		if err != nil {
			t.Fatalf("step %d, again: %v", step, err)
		}
		for _, c := range res.Changes {
			if c.Kind != target.KindForceDown && c.Kind != target.KindForceUp {
				t.Fatalf("step %d: applied again: %s %s/%s %s", step, c.Kind, c.Backend, c.Server, c.Detail)
			}
		}
		fresh := NewDirect(r.opts, nil)
		changes, err := fresh.Diff(ctx, desired)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			if c.Kind != target.KindForceDown && c.Kind != target.KindForceUp && !(drift && c.Kind == target.KindSetState) {
				t.Fatalf("step %d: a full read still finds %s %s/%s %s", step, c.Kind, c.Backend, c.Server, c.Detail)
			}
		}
	}
	if r.direct.incremental < 60 {
		t.Errorf("%d incremental diffs in 120 applies", r.direct.incremental)
	}
}

// checkChanged gives haproxycfg.Check's answer, on random changes to a
// valid desired state: server fields (bad names, addresses, ports), a
// service renamed to another's name, a bind moved onto another's, settings.
func TestCheckChangedIsCheck(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	cls := make([]incCluster, 20)
	for i := range cls {
		cls[i] = incCluster{primary: 1 + i%3, weight: 100}
	}
	prev := incFleet(22000, cls)
	if err := checkChanged(nil, prev); err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 2000; step++ {
		next := append([]services.Service(nil), prev...)
		for k := rng.Intn(3); k >= 0; k-- {
			i := rng.Intn(len(next))
			s := next[i]
			s.Servers = append([]services.Server(nil), s.Servers...)
			j := rng.Intn(len(s.Servers))
			switch rng.Intn(9) {
			case 0:
				s.Servers[j].Name = []string{"a b", "x", "pg-i0-1", ""}[rng.Intn(4)]
			case 1:
				s.Servers[j].Address = []string{"127.0.0.1", "not an ip", ""}[rng.Intn(3)]
			case 2:
				s.Servers[j].Port = []int{0, 1, 70000}[rng.Intn(3)]
			case 3:
				s.Name = next[rng.Intn(len(next))].Name
			case 4:
				s.Port = next[rng.Intn(len(next))].Port
			case 5:
				s.IP = []string{"", "127.0.0.31", frontIP}[rng.Intn(3)]
			case 6:
				s.Maxconn = rng.Intn(3) - 1
			case 7:
				s.Servers[j].Weight = rng.Intn(300) - 10
			case 8:
				s.Servers[j].Disabled = !s.Servers[j].Disabled
			}
			next[i] = s
		}
		got, want := checkChanged(prev, next), haproxycfg.Check(next)
		if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
			t.Fatalf("step %d: checkChanged %v, Check %v", step, got, want)
		}
		if got == nil && rng.Intn(2) == 0 {
			prev = next // as Apply keeps the last desired that passed
		}
	}
}

// mergeKept's shortcut (the file names what desired names, in order) gives
// what the map-based merge gives: random names, orders and lengths.
func TestMergeKeptSameAsReference(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	ref := func(desired, file []services.Service) []services.Service {
		named := map[string]bool{}
		for _, s := range desired {
			named[s.Name] = true
		}
		out := append([]services.Service(nil), desired...)
		for _, s := range file {
			if !named[s.Name] {
				out = append(out, s)
			}
		}
		return out
	}
	list := func() []services.Service {
		var out []services.Service
		for n := rng.Intn(5); n > 0; n-- {
			out = append(out, services.Service{Name: fmt.Sprint("s", rng.Intn(6)), Port: rng.Intn(3)})
		}
		return out
	}
	for i := 0; i < 5000; i++ {
		desired, file := list(), list()
		if rng.Intn(2) == 0 {
			file = append([]services.Service(nil), desired...)
			for j := range file {
				file[j].Port = 7 // the file's own copy
			}
		}
		got, want := mergeKept(desired, file), ref(desired, file)
		if len(got) == 0 && len(want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("mergeKept(%v, %v) = %v, want %v", desired, file, got, want)
		}
	}
}

package target_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// Pigsty's pg-test (3 members, pg-test-3 serves offline queries) and its
// default services.
const twinInventory = `
all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.12: { pg_seq: 2, pg_role: replica }
        10.10.10.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-test }
`

func twinState(leader string, members ...string) map[string]*patroni.ClusterState {
	st := &patroni.ClusterState{Scope: "pg-test", Leader: leader, Members: map[string]*patroni.Member{}}
	for _, nr := range members {
		name, rest, _ := strings.Cut(nr, ":")
		role, state, _ := strings.Cut(rest, ":")
		if state == "" {
			state = "running"
		}
		st.Members[name] = &patroni.Member{Name: name, Role: role, State: state, Timeline: 2}
	}
	return map[string]*patroni.ClusterState{"pg-test": st}
}

func twinServices(t *testing.T, dcs map[string]*patroni.ClusterState) []services.Service {
	t.Helper()
	inv, err := topology.Parse("inv.yml", []byte(twinInventory))
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Compute(inv, dcs, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tw, err := services.Twins(p.Clusters[0].Services)
	if err != nil {
		t.Fatal(err)
	}
	return tw
}

// active lists a service's servers as name(+B for backup)(+T for a
// tracker: its state is its tracked server's)(-off for disabled).
func active(s services.Service) string {
	var parts []string
	for _, sv := range s.Servers {
		w := sv.Name
		if sv.Backup {
			w += "+B"
		}
		if sv.Track != "" {
			w += "+T"
		}
		if sv.Disabled {
			w += "-off"
		}
		parts = append(parts, w)
	}
	return strings.Join(parts, " ")
}

func byName(svcs []services.Service, n string) services.Service {
	for _, s := range svcs {
		if s.Service == n {
			return s
		}
	}
	return services.Service{}
}

func TestTwinsLayout(t *testing.T) {
	before := twinServices(t, twinState("pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica"))
	after := twinServices(t, twinState("pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica"))
	for _, tc := range []struct {
		svc, layout, before, after string
	}{
		// primary and default: `[]` without backup, roles never change
		// membership: Pigsty's layout, untouched.
		{"primary", "", "pg-test-1 pg-test-2 pg-test-3", "pg-test-1 pg-test-2 pg-test-3"},
		{"default", "", "pg-test-1+T pg-test-2+T pg-test-3+T", "pg-test-1+T pg-test-2+T pg-test-3+T"},
		// replica: the primary is the backup. The backup twins track the
		// primary service's servers (UP exactly on the primary): only the
		// normal twins flip.
		{"replica", "twins",
			"pg-test-1-off pg-test-1.backup+B+T pg-test-2 pg-test-2.backup+B+T pg-test-3 pg-test-3.backup+B+T",
			"pg-test-1 pg-test-1.backup+B+T pg-test-2-off pg-test-2.backup+B+T pg-test-3 pg-test-3.backup+B+T"},
		// offline: pg-test-3 (pg_offline_query) normal, plain replicas backup,
		// the primary absent (both twins off).
		{"offline", "twins",
			"pg-test-1-off pg-test-1.backup+B-off pg-test-2-off pg-test-2.backup+B pg-test-3 pg-test-3.backup+B-off",
			"pg-test-1-off pg-test-1.backup+B pg-test-2-off pg-test-2.backup+B-off pg-test-3 pg-test-3.backup+B-off"},
	} {
		b, a := byName(before, tc.svc), byName(after, tc.svc)
		if b.Layout != tc.layout || a.Layout != tc.layout {
			t.Errorf("%s: layout %q/%q, want %q", tc.svc, b.Layout, a.Layout, tc.layout)
		}
		if g := active(b); g != tc.before {
			t.Errorf("%s before:\n got %s\nwant %s", tc.svc, g, tc.before)
		}
		if g := active(a); g != tc.after {
			t.Errorf("%s after:\n got %s\nwant %s", tc.svc, g, tc.after)
		}
	}
}

// current turns desired services into what a target reads back from an
// HAProxy running them: admin states from Disabled.
func current(svcs []services.Service) map[string]*target.Backend {
	cur := map[string]*target.Backend{}
	for _, s := range svcs {
		b := &target.Backend{Name: s.Name, HasFrontend: true, Servers: map[string]services.Server{}}
		for _, sv := range s.Servers {
			sv.Admin = "ready"
			if sv.Disabled {
				sv.Admin = "maint"
			}
			sv.ForceUp, sv.ForceDown, sv.Disabled, sv.Reason = false, false, false, ""
			b.Servers[sv.Name] = sv
		}
		cur[s.Name] = b
	}
	return cur
}

func TestTwinsSwitchoverIsRuntimeOnly(t *testing.T) {
	before := twinServices(t, twinState("pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica"))
	after := twinServices(t, twinState("pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica"))
	// Only the role-dependent services: the write services' force-up is
	// the controller's business and unchanged by twins.
	var ro []services.Service
	for _, s := range after {
		if s.Layout == services.LayoutTwins {
			ro = append(ro, s)
		}
	}
	changes := target.Diff(current(before), ro)
	if !target.RuntimeOnly(changes) {
		t.Fatalf("switchover needs a reload: %+v", changes)
	}
	ordered := target.OrderFlips(changes)
	var got []string
	for _, c := range ordered {
		got = append(got, fmt.Sprintf("%s %s/%s %s", c.Kind, c.Backend, c.Server, c.Detail))
	}
	want := []string{
		"set_state pg-test-replica/pg-test-1 maint -> ready",
		"set_state pg-test-offline/pg-test-1.backup maint -> ready",
		"set_state pg-test-replica/pg-test-2 ready -> drain",
		"set_state pg-test-offline/pg-test-2.backup ready -> drain",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flips:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// Every server set is the same before and after: names, backup flags.
	for _, s := range ro {
		var a, b []string
		for _, sv := range s.Servers {
			a = append(a, fmt.Sprintf("%s/%t", sv.Name, sv.Backup))
		}
		for _, sv := range byName(before, s.Service).Servers {
			b = append(b, fmt.Sprintf("%s/%t", sv.Name, sv.Backup))
		}
		sort.Strings(a)
		sort.Strings(b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: server set changed: %v -> %v", s.Name, b, a)
		}
	}
	// Applied: nothing left to do.
	if again := target.Diff(current(after), ro); len(again) != 0 {
		t.Errorf("after the flips: %+v", again)
	}
}

func TestTwinsNeverActivateUnconfirmed(t *testing.T) {
	// Failover: pg-test-1 is gone from the DCS, pg-test-3 is stopped.
	// (The replica service's backup twins track the primary service's
	// servers: its force-up, fence and hold, never an admin flip.)
	svcs := twinServices(t, twinState("pg-test-2", "pg-test-2:primary", "pg-test-3:replica:stopped"))
	got := active(byName(svcs, "replica"))
	want := "pg-test-1-off pg-test-1.backup+B+T pg-test-2-off pg-test-2.backup+B+T pg-test-3-off pg-test-3.backup+B+T"
	if got != want {
		t.Errorf("replica:\n got %s\nwant %s", got, want)
	}
	got = active(byName(svcs, "offline"))
	want = "pg-test-1-off pg-test-1.backup+B-off pg-test-2-off pg-test-2.backup+B-off pg-test-3-off pg-test-3.backup+B-off"
	if got != want {
		t.Errorf("offline:\n got %s\nwant %s", got, want)
	}
	// Newer Patroni: replicas "streaming" / "in archive recovery" are alive.
	svcs = twinServices(t, twinState("pg-test-1", "pg-test-1:primary", "pg-test-2:replica:streaming", "pg-test-3:replica:in archive recovery"))
	if got := active(byName(svcs, "replica")); got != "pg-test-1-off pg-test-1.backup+B+T pg-test-2 pg-test-2.backup+B+T pg-test-3 pg-test-3.backup+B+T" {
		t.Errorf("replica with streaming replicas: %s", got)
	}
	if got := active(byName(svcs, "offline")); got != "pg-test-1-off pg-test-1.backup+B-off pg-test-2-off pg-test-2.backup+B pg-test-3 pg-test-3.backup+B-off" {
		t.Errorf("offline with streaming replicas: %s", got)
	}
	// Without live data (no DCS: inventory roles), the view is followed.
	svcs = twinServices(t, nil)
	if got := active(byName(svcs, "replica")); got != "pg-test-1-off pg-test-1.backup+B+T pg-test-2 pg-test-2.backup+B+T pg-test-3 pg-test-3.backup+B+T" {
		t.Errorf("replica without DCS: %s", got)
	}
}

func TestTwinsAdminRepairAndUnknown(t *testing.T) {
	svcs := twinServices(t, twinState("pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica"))
	rep := byName(svcs, "replica")
	cur := current([]services.Service{rep})
	// An operator drained an active twin, and one server's state was not read.
	sv := cur[rep.Name].Servers["pg-test-2"]
	sv.Admin = "drain"
	cur[rep.Name].Servers["pg-test-2"] = sv
	sv = cur[rep.Name].Servers["pg-test-3.backup"]
	sv.Admin = ""
	cur[rep.Name].Servers["pg-test-3.backup"] = sv
	// maint where drain is wanted is inactive all the same: no flip.
	changes := target.Diff(cur, []services.Service{rep})
	if len(changes) != 1 || changes[0].Server != "pg-test-2" || changes[0].Detail != "drain -> ready" {
		t.Errorf("changes = %+v, want pg-test-2 drain -> ready only", changes)
	}
	if services.InactiveState(byName(svcs, "primary")) != "maint" || services.InactiveState(rep) != "drain" {
		t.Error("inactive states: want maint for write services, drain for read services")
	}
}

func TestTwinsNameCollision(t *testing.T) {
	s := services.Service{Name: "x-replica", RoleDependent: true, Candidates: []services.Server{{Name: "a"}, {Name: "a.backup"}}}
	if _, err := services.Twins([]services.Service{s}); err == nil || !strings.Contains(err.Error(), "same name") {
		t.Errorf("err = %v, want a name collision", err)
	}
}

// fakeTarget diffs desired against its own admin states and applies them.
type fakeTarget struct{ cur map[string]*target.Backend }

func (f *fakeTarget) Name() string { return "fake" }
func (f *fakeTarget) Diff(_ context.Context, desired []services.Service) ([]target.Change, error) {
	return target.Diff(f.cur, desired), nil
}
func (f *fakeTarget) Apply(ctx context.Context, desired []services.Service) (target.Result, error) {
	ch, _ := f.Diff(ctx, desired)
	f.cur = current(desired)
	return target.Result{Changes: ch}, nil
}

func TestTwinsReportsRepairs(t *testing.T) {
	inv, err := topology.Parse("inv.yml", []byte(twinInventory))
	if err != nil {
		t.Fatal(err)
	}
	desired := func(dcs map[string]*patroni.ClusterState) []services.Service {
		p, err := plan.Compute(inv, dcs, plan.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return p.Clusters[0].Services
	}
	before := desired(twinState("pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica"))
	after := desired(twinState("pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica"))
	tw, _ := services.Twins(before)
	f := &fakeTarget{cur: current(tw)}
	tg := target.WithTwins(f)
	ctx := context.Background()
	if res, err := tg.Apply(ctx, before); err != nil || len(res.Changes) != 0 {
		t.Fatalf("first apply: %+v %v", res, err)
	}
	// An operator puts an active twin in maintenance: repaired, reported.
	sv := f.cur["pg-test-replica"].Servers["pg-test-3"]
	sv.Admin = "maint"
	f.cur["pg-test-replica"].Servers["pg-test-3"] = sv
	res, err := tg.Apply(ctx, before)
	if err != nil || len(res.Changes) != 1 || res.Changes[0].Kind != target.KindRepairState || !strings.Contains(res.Changes[0].Detail, "repaired") {
		t.Fatalf("repair: %+v %v", res, err)
	}
	// A switchover: set_state, not repairs.
	res, err = tg.Apply(ctx, after)
	if err != nil || len(res.Changes) == 0 {
		t.Fatalf("switchover: %+v %v", res, err)
	}
	for _, c := range res.Changes {
		if c.Kind != target.KindSetState {
			t.Errorf("switchover change %+v, want set_state", c)
		}
	}
}

package dataplaneapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestHoldOwnership (Pigsty's layout, the double): the controller owns
// drain on a write service's server of the read-write leader only. A drain
// found there (a controller that died mid-hold) is lifted by the first
// apply, which reads each such backend once; an operator's maint on the
// leader and a drain on a replica are left alone; a hold drains the new
// leader in one PUT with its forced DOWN, and the release readies it.
func TestHoldOwnership(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	writable := func(svcs []services.Service, member string) []services.Service {
		return force(svcs, member, func(sv *services.Server) { sv.Writable = true })
	}
	f.apply(t, cluster("pg-o", 1, 3, 1))
	f.srv.SetAdminState("pg-o-primary", "pg-o-1", "drain") // left by a controller that died mid-hold
	f.srv.SetAdminState("pg-o-default", "pg-o-1", "maint") // an operator's
	f.srv.SetAdminState("pg-o-primary", "pg-o-3", "drain") // an operator's, on a replica
	admin := func(b, s string) string {
		r, err := f.c.GetRuntimeServer(ctx, b, s)
		if err != nil {
			t.Fatal(err)
		}
		return r.AdminState
	}
	desired := writable(cluster("pg-o", 1, 3, 1), "pg-o-1")
	res := f.apply(t, desired)
	if got := kinds(res.Changes); got != "set_state pg-o-primary/pg-o-1" || !strings.Contains(res.Changes[0].Detail, "drain -> ready") {
		t.Fatalf("restart with a leftover drain: %s (%+v), want the leader's drain lifted only", got, res.Changes)
	}
	for _, c := range []struct{ b, s, want string }{
		{"pg-o-primary", "pg-o-1", "ready"}, {"pg-o-default", "pg-o-1", "maint"}, {"pg-o-primary", "pg-o-3", "drain"},
	} {
		if got := admin(c.b, c.s); got != c.want {
			t.Errorf("%s/%s: %s, want %s", c.b, c.s, got, c.want)
		}
	}
	// Read once per leadership: the next apply reads nothing.
	f.srv.ResetRequests()
	if res := f.apply(t, desired); len(res.Changes) != 0 || runtimeGets(f.srv.Requests()) != 0 {
		t.Errorf("again: %s, %d runtime GETs; want nothing", kinds(res.Changes), runtimeGets(f.srv.Requests()))
	}

	// A switchover: pg-o-2 held (drained with its forced DOWN), then
	// read-write (forced UP and readied in one PUT).
	held := force(cluster("pg-o", 1, 3, 2), "pg-o-2", func(sv *services.Server) { sv.ForceDown, sv.HoldDown = true, true })
	res = f.apply(t, held)
	downs := 0
	for _, c := range res.Changes {
		if c.Kind == "force_down" && c.Server == "pg-o-2" && strings.Contains(c.Detail, "held (drain) until read-write") {
			downs++
		}
	}
	if downs != 2 {
		t.Fatalf("hold: %s, want pg-o-2 held in the primary and default services", kinds(res.Changes))
	}
	var bodies []string
	for _, w := range f.srv.Writes() {
		if strings.HasPrefix(w.Path, "/runtime/servers/pg-o-2") {
			bodies = append(bodies, string(w.Body))
		}
	}
	if len(bodies) == 0 || bodies[len(bodies)-1] != `{"admin_state":"drain","operational_state":"down"}` {
		t.Errorf("hold PUTs: %v, want {drain, down}", bodies)
	}
	if got := admin("pg-o-primary", "pg-o-2"); got != "drain" {
		t.Errorf("held: %s, want drain", got)
	}
	f.srv.ResetRequests()
	up := writable(force(cluster("pg-o", 1, 3, 2), "pg-o-2", func(sv *services.Server) { sv.ForceUp = true }), "pg-o-2")
	f.srv.SetOperationalState("pg-o-primary", "pg-o-2", "down")
	f.srv.SetOperationalState("pg-o-default", "pg-o-2", "down")
	res = f.apply(t, up)
	for _, b := range []string{"pg-o-primary", "pg-o-default"} {
		r, err := f.c.GetRuntimeServer(ctx, b, "pg-o-2")
		if err != nil {
			t.Fatal(err)
		}
		if r.AdminState != "ready" || r.OperationalState != "up" {
			t.Errorf("released %s/pg-o-2: %s/%s, want ready/up (changes %s)", b, r.AdminState, r.OperationalState, kinds(res.Changes))
		}
	}
	for _, w := range f.srv.Writes() {
		if strings.HasPrefix(w.Path, "/runtime/servers/pg-o-2") && string(w.Body) != `{"admin_state":"ready","operational_state":"up"}` {
			t.Errorf("release PUT %s %s, want one {ready, up} per write service", w.Path, w.Body)
		}
	}
}

// TestHoldCheckSkipsCreatedBackends: the leftover-drain check reads only
// backends the running HAProxy had before this process: a write backend
// the controller creates holds no drain, so the first change after a start
// that created the fleet reads none of them (it read every write backend:
// 2,000 GETs in the first switchover at 1,000 clusters), while a backend
// that was there is read once.
func TestHoldCheckSkipsCreatedBackends(t *testing.T) {
	f := newFixture(t)
	writable := func(svcs []services.Service, member string) []services.Service {
		return force(svcs, member, func(sv *services.Server) { sv.Writable = true })
	}
	var fleet []services.Service
	for i := 0; i < 5; i++ {
		fleet = append(fleet, writable(cluster(fmt.Sprintf("pg-c%d", i), 10+i, 3, 1), fmt.Sprintf("pg-c%d-1", i))...)
	}
	f.apply(t, fleet) // creates every backend
	f.srv.ResetRequests()
	// One cluster's change (a weight) after the start: no runtime GET.
	changed := append([]services.Service(nil), fleet...)
	changed[0].Servers = append([]services.Server(nil), changed[0].Servers...)
	changed[0].Servers[1].Weight = 50
	f.apply(t, changed)
	if g := runtimeGets(f.srv.Requests()); g != 0 {
		t.Errorf("first change after creating the fleet: %d runtime GETs, want 0: %v", g, paths(f.srv.Requests()))
	}

	// A new process in front of the same HAProxy: its backends were there,
	// so each write backend's leader is read once, then never again.
	c, err := dataplaneapi.New(f.srv.URL(), dataplaneapi.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := &fixture{srv: f.srv, c: c, tg: dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
		ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond})}
	g.srv.ResetRequests()
	g.apply(t, changed)
	if got := runtimeGets(g.srv.Requests()); got == 0 {
		t.Errorf("a restarted controller read no write backend: a drain left by a crash would stay")
	}
	g.srv.ResetRequests()
	g.apply(t, changed)
	if got := runtimeGets(g.srv.Requests()); got != 0 {
		t.Errorf("second apply of the restarted controller: %d runtime GETs, want 0", got)
	}
}

// TestHoldForceUpLiftsLeftoverDrain: a new primary forced UP whose server a
// crashed controller left drained is readied by its force-up (the answer
// tells the drain; a second PUT readies it). In the Pigsty layout its
// backend is read for its health anyway; with twin targets (the running
// process known: the force-up goes blind) the leftover-drain check does
// not read it either: no GET of the write backends at all.
func TestHoldForceUpLiftsLeftoverDrain(t *testing.T) {
	t.Run("twins", func(t *testing.T) {
		h := newTwinsHarness(t, 3)
		base := fleetTwins(t, 1, func(int) int { return 1 })
		h.apply(t, "create", base)
		h.apply(t, "settle", base)
		for _, b := range []string{"pg-f000-primary", "pg-f000-default"} {
			h.srv.SetAdminState(b, "pg-f000-2", "drain") // left by a controller that died mid-hold
			h.srv.SetOperationalState(b, "pg-f000-2", "down")
		}
		promoted := force(fleetTwins(t, 1, func(int) int { return 2 }), "pg-f000-2", func(sv *services.Server) { sv.Writable, sv.ForceUp = true, true })
		h.apply(t, "promotion", promoted)
		for _, r := range h.srv.Requests() {
			if b := r.Query.Get("backend"); r.Method == "GET" && r.Path == "/runtime/servers" && (b == "pg-f000-primary" || b == "pg-f000-default") {
				t.Errorf("the promotion read %s: the force-up's own answer tells its admin state (%v)", b, paths(h.srv.Requests()))
			}
		}
		c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []string{"pg-f000-primary", "pg-f000-default"} {
			r, err := c.GetRuntimeServer(context.Background(), b, "pg-f000-2")
			if err != nil {
				t.Fatal(err)
			}
			if r.AdminState != "ready" || r.OperationalState != "up" {
				t.Errorf("%s/pg-f000-2 after its force-up: %s/%s, want ready/up", b, r.AdminState, r.OperationalState)
			}
		}
	})
	t.Run("pigsty", testHoldForceUpLiftsLeftoverDrainPigsty)
}

func testHoldForceUpLiftsLeftoverDrainPigsty(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.apply(t, cluster("pg-u", 1, 3, 1))
	f.srv.SetAdminState("pg-u-primary", "pg-u-2", "drain") // left by a controller that died mid-hold
	f.srv.SetOperationalState("pg-u-primary", "pg-u-2", "down")
	promoted := force(cluster("pg-u", 1, 3, 2), "pg-u-2", func(sv *services.Server) { sv.Writable, sv.ForceUp = true, true })
	res := f.apply(t, promoted)
	ups := 0
	for _, c := range res.Changes {
		if c.Kind == "force_up" && c.Backend == "pg-u-primary" && c.Server == "pg-u-2" {
			ups++
		}
	}
	if ups != 1 {
		t.Fatalf("promotion: %s, want pg-u-2 forced UP in pg-u-primary", kinds(res.Changes))
	}
	r, err := f.c.GetRuntimeServer(ctx, "pg-u-primary", "pg-u-2")
	if err != nil {
		t.Fatal(err)
	}
	if r.AdminState != "ready" || r.OperationalState != "up" {
		t.Errorf("new primary after its force-up: %s/%s, want ready/up", r.AdminState, r.OperationalState)
	}
}

// TestHoldNotLiftedByAnApplyWithoutItsCluster: an apply may be given part
// of the fleet (the controller's bisection after a rejection, a cluster
// held back): a held new leader of a cluster it leaves out stays drained
// (no PUT to that cluster at all), and the apply with its cluster, once
// desired no longer holds it, releases it.
func TestHoldNotLiftedByAnApplyWithoutItsCluster(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	x := cluster("pg-x", 1, 3, 1)
	f.apply(t, append(append([]services.Service(nil), x...), cluster("pg-y", 2, 3, 1)...))
	heldY := force(cluster("pg-y", 2, 3, 2), "pg-y-2", func(sv *services.Server) { sv.ForceDown, sv.HoldDown = true, true })
	f.apply(t, append(append([]services.Service(nil), x...), heldY...))
	admin := func(b string) string {
		t.Helper()
		r, err := f.c.GetRuntimeServer(ctx, b, "pg-y-2")
		if err != nil {
			t.Fatal(err)
		}
		return r.AdminState
	}
	for _, b := range []string{"pg-y-primary", "pg-y-default"} {
		if got := admin(b); got != "drain" {
			t.Fatalf("%s/pg-y-2 held: %s, want drain", b, got)
		}
	}

	f.srv.ResetRequests()
	res := f.apply(t, cluster("pg-x", 1, 3, 1))
	if len(res.Changes) != 0 {
		t.Errorf("apply of pg-x only: %s, want nothing", kinds(res.Changes))
	}
	for _, w := range f.srv.Writes() {
		if strings.HasPrefix(w.Query.Get("backend"), "pg-y-") {
			t.Errorf("apply of pg-x only wrote to pg-y: %s %s?backend=%s %s", w.Method, w.Path, w.Query.Get("backend"), w.Body)
		}
	}
	for _, b := range []string{"pg-y-primary", "pg-y-default"} {
		if got := admin(b); got != "drain" {
			t.Errorf("%s/pg-y-2 after an apply of pg-x only: %s, want drain (still held)", b, got)
		}
	}

	// Read-write: the apply with pg-y releases it.
	readied := force(cluster("pg-y", 2, 3, 2), "pg-y-2", func(sv *services.Server) { sv.Writable = true })
	f.apply(t, append(append([]services.Service(nil), x...), readied...))
	for _, b := range []string{"pg-y-primary", "pg-y-default"} {
		if got := admin(b); got != "ready" {
			t.Errorf("%s/pg-y-2 released: %s, want ready", b, got)
		}
	}
}

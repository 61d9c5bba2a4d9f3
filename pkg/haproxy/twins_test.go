package haproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// twinCluster builds what target.WithTwins hands the driver for a fake
// cluster: the primary service as Pigsty has it, the replica service in the
// twin layout (each member normal + backup twin; the primary's backup twin
// and the replicas' normal twins active).
func twinCluster(primaryPort, replicaPort int, ms ...*member) []services.Service {
	prim := services.Service{Name: "pg-t-primary", Service: "primary", IP: frontIP, Port: primaryPort, Check: "/primary",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: testDefaultServer}
	repl := services.Service{Name: "pg-t-replica", Service: "replica", IP: frontIP, Port: replicaPort, Check: "/read-only",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: testDefaultServer, Layout: services.LayoutTwins}
	for _, m := range ms {
		prim.Servers = append(prim.Servers, m.server(100, false))
		isPrimary := m.role.Load() == "primary"
		n := m.server(100, false)
		n.Member, n.Disabled = m.name, isPrimary
		b := m.server(100, true)
		b.Name, b.Member, b.Disabled = m.name+services.BackupTwinSuffix, m.name, !isPrimary
		repl.Servers = append(repl.Servers, n, b)
	}
	return []services.Service{prim, repl}
}

// admins reads `show servers state` of one backend: server -> ready/drain/maint.
func (r *rig) admins(t testing.TB, backend string) map[string]string {
	t.Helper()
	text, err := r.rt.ShowServersState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseServersState(text)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range st {
		if s.Backend == backend {
			out[s.Server] = AdminWord(s.AdminSt)
		}
	}
	return out
}

func wantAdmins(t testing.TB, r *rig, want map[string]string) {
	t.Helper()
	got := r.admins(t, "pg-t-replica")
	for k, w := range want {
		if got[k] != w {
			t.Errorf("admin state of pg-t-replica/%s = %q, want %q (all: %v)", k, got[k], w, got)
		}
	}
}

// TestTwinsDirect: a switchover in the twin layout is runtime admin states
// only (the master's reload counter does not move), never leaves the
// replica backend without an active server, is read back, an operator's
// `set server` is repaired, and a reload for an inventory change keeps the
// live roles (no stale twin resurrected).
func TestTwinsDirect(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.31", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.32", "replica")
	m3 := newMember(t, "pg-t-3", "127.0.0.33", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)

	res, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2, m3))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Reloaded {
		t.Fatalf("initial apply: %+v, want a reload", res)
	}
	cfg, _ := os.ReadFile(r.opts.ConfigPath)
	if !strings.Contains(string(cfg), "server pg-t-2.backup 127.0.0.32") || !strings.Contains(string(cfg), " backup disabled\n") {
		t.Fatalf("file lacks the disabled backup twins:\n%s", cfg)
	}
	wantAdmins(t, r, map[string]string{"pg-t-1": "maint", "pg-t-1.backup": "ready", "pg-t-2": "ready", "pg-t-2.backup": "maint", "pg-t-3": "ready", "pg-t-3.backup": "maint"})
	r.waitStatus(t, map[string]bool{"pg-t-replica/pg-t-2": true, "pg-t-replica/pg-t-3": true, "pg-t-replica/pg-t-1.backup": true})
	if again, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2, m3)); err != nil || len(again.Changes) != 0 {
		t.Fatalf("second apply = %+v, %v; want nothing to do", again, err)
	}

	t.Run("switchover is runtime only", func(t *testing.T) {
		reloads := r.reloads(t)
		d := startDialer(addr(frontIP, rp))
		defer d.Stop()
		eventually(t, 5*time.Second, "traffic through the replica service", func() string {
			if d.ok.Load() < 20 {
				return fmt.Sprintf("%d connections", d.ok.Load())
			}
			return ""
		})
		m1.setRole("replica")
		m2.setRole("primary")
		full := r.direct.Reads().Full
		start := time.Now()
		res, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2, m3))
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reloaded || !target.RuntimeOnly(res.Changes) {
			t.Errorf("switchover: %+v, want runtime changes only", res)
		}
		if got := kinds(res.Changes); got != "set_state:pg-t-replica/pg-t-1 set_state:pg-t-replica/pg-t-1.backup set_state:pg-t-replica/pg-t-2 set_state:pg-t-replica/pg-t-2.backup" {
			t.Errorf("changes = %s", got)
		}
		if n := r.reloads(t); n != reloads {
			t.Errorf("master reload counter %d -> %d, want no reload", reloads, n)
		}
		if got := r.direct.Reads().Full; got != full {
			t.Errorf("the switchover read the whole running HAProxy (%d full reads)", got-full)
		}
		wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-1.backup": "drain", "pg-t-2": "drain", "pg-t-2.backup": "ready", "pg-t-3": "ready"})
		t.Logf("switchover applied in %s", took)
		// New connections avoid the new primary: pg-t-2 (drained, and its
		// backup twin is only used when no replica is up).
		was := m2.accepted.Load()
		okBefore := d.ok.Load()
		eventually(t, 5*time.Second, "traffic after the switchover", func() string {
			if d.ok.Load() < okBefore+30 {
				return fmt.Sprintf("%d connections", d.ok.Load()-okBefore)
			}
			return ""
		})
		d.Stop()
		if got := m2.accepted.Load() - was; got > 1 {
			t.Errorf("the new primary took %d reads after the switchover", got)
		}
		if f := d.failed.Load(); f != 0 {
			t.Errorf("%d failed connections through the replica service", f)
		}
		cfg, _ := os.ReadFile(r.opts.ConfigPath)
		if !strings.Contains(string(cfg), "server pg-t-2 127.0.0.32:") || !strings.Contains(string(cfg), fmt.Sprintf("server pg-t-2 127.0.0.32:%d check port %d weight 100 disabled\n", m2.port, m2.restPort)) {
			t.Errorf("file's disabled keywords not in step with the roles:\n%s", cfg)
		}
	})

	t.Run("an operator's set server is repaired", func(t *testing.T) {
		if err := r.rt.SetState(ctx, "pg-t-replica", "pg-t-1", "maint"); err != nil {
			t.Fatal(err)
		}
		if err := r.rt.SetState(ctx, "pg-t-replica", "pg-t-3.backup", "ready"); err != nil {
			t.Fatal(err)
		}
		// Found by the periodic full read (FullReadEvery).
		r.direct.expireCache()
		changes, err := r.direct.Diff(ctx, twinCluster(pp, rp, m1, m2, m3))
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(changes); got != "set_state:pg-t-replica/pg-t-1 set_state:pg-t-replica/pg-t-3.backup" {
			t.Errorf("diff = %s", got)
		}
		res, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2, m3))
		if err != nil || res.Reloaded || len(res.Changes) != 2 {
			t.Fatalf("repair = %+v, %v", res, err)
		}
		wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-3.backup": "drain"})
	})

	t.Run("a reload not made by the driver is read at once", func(t *testing.T) {
		if err := r.rt.SetState(ctx, "pg-t-replica", "pg-t-3.backup", "ready"); err != nil {
			t.Fatal(err)
		}
		// Outside the driver: no server-state dump, the new worker takes
		// the file's states (and whatever the last dump held).
		if _, err := r.rt.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		full := r.direct.Reads().Full
		want := twinCluster(pp, rp, m1, m2, m3)
		if _, err := r.direct.Apply(ctx, want); err != nil {
			t.Fatal(err)
		}
		if got := r.direct.Reads().Full; got != full+1 {
			t.Errorf("full reads %d -> %d after a new worker, want one", full, got)
		}
		wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-2.backup": "ready", "pg-t-3": "ready"})
		for _, name := range []string{"pg-t-1.backup", "pg-t-2", "pg-t-3.backup"} {
			if a := r.admins(t, "pg-t-replica")[name]; a == "ready" {
				t.Errorf("%s is %s after the repair", name, a)
			}
		}
		if again, err := r.direct.Apply(ctx, want); err != nil || len(again.Changes) != 0 {
			t.Errorf("after the repair = %+v, %v; want nothing to do", again, err)
		}
	})

	t.Run("a reload keeps the live roles", func(t *testing.T) {
		reloads := r.reloads(t)
		m4 := newMember(t, "pg-t-4", "127.0.0.34", "replica")
		res, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2, m3, m4))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Reloaded || r.reloads(t) != reloads+1 {
			t.Errorf("inventory change: %+v, counter %d -> %d, want one reload", res, reloads, r.reloads(t))
		}
		wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-1.backup": "maint", "pg-t-2": "maint", "pg-t-2.backup": "ready",
			"pg-t-3": "ready", "pg-t-3.backup": "maint", "pg-t-4": "ready", "pg-t-4.backup": "maint"})
		if again, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2, m3, m4)); err != nil || len(again.Changes) != 0 {
			t.Errorf("after the reload = %+v, %v; want nothing to do", again, err)
		}
	})
}

// TestPipeline: many commands over one prompt-mode connection, each answer
// in its place (an error in the middle is reported, the rest still run).
func TestPipeline(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.31", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.32", "replica")
	if _, err := r.direct.Apply(ctx, twinCluster(freePort(t, frontIP), freePort(t, frontIP), m1, m2)); err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for i := 0; i < 500; i++ {
		cmds = append(cmds, "set server pg-t-replica/pg-t-2.backup state drain", "set server pg-t-replica/pg-t-2.backup state maint")
	}
	cmds = append(cmds, "set server pg-t-replica/nope state ready", "show servers state pg-t-replica")
	out, err := r.rt.Pipeline(ctx, cmds)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(cmds) {
		t.Fatalf("%d answers for %d commands", len(out), len(cmds))
	}
	for i := 0; i < 1000; i++ {
		if out[i] != "" {
			t.Fatalf("answer %d = %q, want empty", i, out[i])
		}
	}
	if !strings.Contains(out[1000], "No such server") {
		t.Errorf("answer to an unknown server = %q", out[1000])
	}
	if !strings.Contains(out[1001], "pg-t-2.backup") {
		t.Errorf("show servers state answer = %q", out[1001])
	}
	err = r.rt.SetStates(ctx, []Flip{{"pg-t-replica", "pg-t-1", "ready"}, {"pg-t-replica", "nope", "drain"}})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("SetStates with an unknown server: %v", err)
	}
}

// expireCache makes the next read a full one, as FullReadEvery elapsing does.
func (d *Direct) expireCache() {
	d.cache.mu.Lock()
	d.cache.fullAt = time.Time{}
	d.cache.mu.Unlock()
}

// TestTwinsEarlyFlips: in an apply that reads the live health of write
// services (a write fence, a new primary forced UP), the flips of the
// services that take no writes go out while that health is read, and only
// theirs: a write service's twins (maint) and its fences and force-ups go
// in the apply's own order. Everything is read back and kept in the cache
// (no full read), and the next apply finds nothing to do.
func TestTwinsEarlyFlips(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.41", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.42", "replica")
	pp, rp, wp := freePort(t, frontIP), freePort(t, frontIP), freePort(t, frontIP)
	// The twins follow primary; the members' REST APIs (their checks) stay
	// as they are, so the fence finds the old primary UP.
	desired := func(primary, fence, up string) []services.Service {
		svcs := twinCluster(pp, rp, m1, m2)
		for i := range svcs[1].Servers {
			sv := &svcs[1].Servers[i]
			sv.Disabled = (sv.Member == primary) != sv.Backup
		}
		// A write service with role-dependent membership: twins in maint.
		w := svcs[1]
		w.Name, w.Service, w.Port, w.Check = "pg-t-writer", "writer", wp, "/primary"
		w.Servers = append([]services.Server(nil), w.Servers...)
		for i := range svcs[0].Servers {
			sv := &svcs[0].Servers[i]
			sv.ForceDown, sv.ForceUp = sv.Name == fence, sv.Name == up
		}
		for i := range w.Servers {
			sv := &w.Servers[i]
			// Only the primary's normal twin is active; the fence and the
			// force-up ride on a member's active twin.
			sv.Disabled = sv.Member != primary || sv.Backup
			sv.ForceDown, sv.ForceUp = !sv.Disabled && sv.Member == fence, !sv.Disabled && sv.Member == up
		}
		return append(svcs, w)
	}
	if _, err := r.direct.Apply(ctx, desired("pg-t-1", "", "")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.direct.Apply(ctx, desired("pg-t-1", "", "")); err != nil || len(res.Changes) != 0 {
		t.Fatalf("second apply: %+v %v, want nothing to do", res, err)
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-writer/pg-t-1": true})
	full := r.direct.Reads().Full
	// A failover: pg-t-1 fenced, pg-t-2 the new primary forced UP (its
	// checks pass from now on, pg-t-1's fail once it is fenced).
	m2.setRole("primary")
	res, err := r.direct.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2"))
	m1.setRole("replica")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(r.direct.earlyFlipped, " ")
	if want := "pg-t-replica/pg-t-1 pg-t-replica/pg-t-2.backup pg-t-replica/pg-t-1.backup pg-t-replica/pg-t-2"; got != want {
		t.Errorf("early flips %q, want %q (readies first, the replica service only)", got, want)
	}
	if res.Reloaded || !target.RuntimeOnly(res.Changes) || res.ForcedDown.IsZero() {
		t.Errorf("failover: %+v, want runtime changes with a fence", res)
	}
	for _, k := range []string{"set_state:pg-t-replica/pg-t-1", "set_state:pg-t-writer/pg-t-1", "set_state:pg-t-writer/pg-t-2", "force_down:pg-t-primary/pg-t-1"} {
		if !strings.Contains(kinds(res.Changes), k) {
			t.Errorf("changes %s lack %s", kinds(res.Changes), k)
		}
	}
	wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-1.backup": "drain", "pg-t-2": "drain", "pg-t-2.backup": "ready"})
	if got := r.admins(t, "pg-t-writer"); got["pg-t-2"] != "ready" || got["pg-t-1"] != "maint" || got["pg-t-1.backup"] != "maint" || got["pg-t-2.backup"] != "maint" {
		t.Errorf("writer admin states %v", got)
	}
	st := r.stat(t)
	if row := st["pg-t-primary/pg-t-1"]; !strings.HasPrefix(row.Status, "DOWN") {
		t.Errorf("fenced old primary: %q, want DOWN", row.Status)
	}
	if row := st["pg-t-primary/pg-t-2"]; row.Status != "UP" {
		t.Errorf("new primary: %q, want UP", row.Status)
	}
	if n := r.direct.Reads().Full; n != full {
		t.Errorf("%d full reads in the failover", n-full)
	}
	if again, err := r.direct.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2")); err != nil || len(again.Changes) != 0 {
		t.Errorf("apply again: %s %v, want nothing to do (the early flips kept in the cache)", kinds(again.Changes), err)
	}
	if n := r.direct.Reads().Full; n != full {
		t.Errorf("%d full reads after the failover", n-full)
	}
}

// holder is a member's second listener (standing for PostgreSQL behind
// Pigsty's default service) that keeps every connection open until the
// peer closes it, and reports each close.
func holder(t testing.TB, ip string) (port int, closed chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	closed = make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
				closed <- struct{}{}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, closed
}

// TestTwinsTrackDirect: in the twin layout Pigsty's default service tracks
// the primary service (services.TrackSources): its servers run no check of
// their own and follow the primary service's servers through the new
// primary's force-up and the old primary's write fence, sessions cut, with
// no command for the default backend. The reload that turns checking
// servers into trackers, and any later reload, leaves them in the state of
// the servers they track (a tracker started DOWN under an UP server would
// stay DOWN for good).
func TestTwinsTrackDirect(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-k-1", "127.0.0.71", "primary")
	m2 := newMember(t, "pg-k-2", "127.0.0.72", "replica")
	m3 := newMember(t, "pg-k-3", "127.0.0.73", "replica")
	pgPort := map[*member]int{}
	closed := map[*member]chan struct{}{}
	for _, m := range []*member{m1, m2, m3} {
		pgPort[m], closed[m] = holder(t, m.ip)
	}
	pp, dp := freePort(t, frontIP), freePort(t, frontIP)
	// Slow checks: the forced states hold for the test's length.
	const slow = "inter 30s fastinter 30s downinter 30s rise 3 fall 3 on-marked-down shutdown-sessions"
	write := func(fence, up string, ms ...*member) []services.Service {
		mk := func(svc string, port int) services.Service {
			s := services.Service{Cluster: "pg-k", Name: "pg-k-" + svc, Service: svc, IP: frontIP, Port: port, Check: "/primary",
				Balance: "roundrobin", Maxconn: 500, DefaultServer: slow}
			for _, m := range ms {
				sv := m.server(100, false)
				if svc == "default" {
					sv.Port = pgPort[m]
				}
				sv.ForceDown, sv.ForceUp = m.name == fence, m.name == up
				s.Servers = append(s.Servers, sv)
			}
			return s
		}
		return []services.Service{mk("primary", pp), mk("default", dp)}
	}
	laidOut := func(in []services.Service) []services.Service {
		out, err := services.Twins(in)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	status := func(key string) string { return r.stat(t)[key].Status }
	wantStatus := func(step string, want map[string]string) {
		t.Helper()
		for k, w := range want {
			if got := status(k); !strings.HasPrefix(got, w) {
				t.Errorf("%s: %s is %q, want %s", step, k, got, w)
			}
		}
	}

	// Pigsty's layout first: both services check; the primary forced UP
	// (its slow checks would take 90 s).
	if _, err := r.direct.Apply(ctx, write("", "", m1, m2, m3)); err != nil {
		t.Fatal(err)
	}
	if res, err := r.direct.Apply(ctx, write("", "pg-k-1", m1, m2, m3)); err != nil || kinds(res.Changes) != "force_up:pg-k-primary/pg-k-1 force_up:pg-k-default/pg-k-1" {
		t.Fatalf("force-up in Pigsty's layout: %v %v, want one per write service", kinds(res.Changes), err)
	}
	wantStatus("pigsty layout", map[string]string{"pg-k-primary/pg-k-1": "UP", "pg-k-default/pg-k-1": "UP", "pg-k-default/pg-k-2": "DOWN"})

	// The twin layout: the default's servers become trackers (a reload).
	desired := laidOut(write("", "pg-k-1", m1, m2, m3))
	res, err := r.direct.Apply(ctx, desired)
	if err != nil || !res.Reloaded {
		t.Fatalf("to trackers: %+v %v, want a reload", res, err)
	}
	cfg, _ := os.ReadFile(r.opts.ConfigPath)
	if !strings.Contains(string(cfg), fmt.Sprintf("server pg-k-1 127.0.0.71:%d track pg-k-primary/pg-k-1 weight 100\n", pgPort[m1])) {
		t.Fatalf("file lacks the tracker:\n%s", cfg)
	}
	wantStatus("after the reload to trackers", map[string]string{"pg-k-default/pg-k-1": "UP", "pg-k-default/pg-k-2": "DOWN", "pg-k-default/pg-k-3": "DOWN"})
	if again, err := r.direct.Apply(ctx, desired); err != nil || len(again.Changes) != 0 {
		t.Fatalf("second apply = %+v, %v; want nothing to do", again, err)
	}

	// A session through the default service to the primary.
	c, err := net.Dial("tcp", addr(frontIP, dp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}

	// Switchover: pg-k-1 fenced (its checks still pass), pg-k-2 forced UP.
	reloads := r.reloads(t)
	res, err = r.direct.Apply(ctx, laidOut(write("pg-k-1", "pg-k-2", m1, m2, m3)))
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(res.Changes); got != "force_down:pg-k-primary/pg-k-1 force_up:pg-k-primary/pg-k-2" || res.Reloaded || r.reloads(t) != reloads {
		t.Errorf("switchover: %s (reloaded %v): want the fence and the force-up of the primary service only, at runtime", got, res.Reloaded)
	}
	wantStatus("switchover", map[string]string{"pg-k-default/pg-k-1": "DOWN", "pg-k-default/pg-k-2": "UP"})
	select {
	case <-closed[m1]:
	case <-time.After(10 * time.Second):
		t.Error("the session through the default service to the fenced primary is still open")
	}

	// A reload the driver did not make (as `systemctl reload haproxy`),
	// from a state file another tool wrote with both trackers out of step:
	// pg-k-2's DOWN under its UP primary (the default service without its
	// primary), pg-k-1's UP under its fenced one (writes to a replica).
	// HAProxy keeps them so; the driver's next apply reads the new worker
	// whole and resyncs them.
	dump, err := r.rt.ShowServersState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(dump, "\n"), "\n")
	byKey := map[string][]string{}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		byKey[f[stBeName]+"/"+f[stSrvName]] = f
	}
	for tracker, from := range map[string]string{"pg-k-default/pg-k-2": "pg-k-primary/pg-k-1", "pg-k-default/pg-k-1": "pg-k-primary/pg-k-2"} {
		f, src := byKey[tracker], byKey[from]
		if f == nil || src == nil {
			t.Fatalf("dump lacks %s or %s:\n%s", tracker, from, dump)
		}
		f[stOpState], f[stCheckStatus], f[stCheckResult], f[stCheckHealth] = src[stOpState], src[stCheckStatus], src[stCheckResult], src[stCheckHealth]
	}
	var sf strings.Builder
	sf.WriteString(lines[0] + "\n" + lines[1] + "\n")
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		sf.WriteString(strings.Join(byKey[f[stBeName]+"/"+f[stSrvName]], " ") + "\n")
	}
	if err := os.WriteFile(r.opts.ServerStateFile, []byte(sf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.rt.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	trap := map[string]string{"pg-k-default/pg-k-1": "UP", "pg-k-primary/pg-k-1": "DOWN", "pg-k-default/pg-k-2": "DOWN", "pg-k-primary/pg-k-2": "UP"}
	eventually(t, 10*time.Second, "the new worker with the trackers out of step", func() string {
		for k, w := range trap {
			if got := status(k); !strings.HasPrefix(got, w) {
				return fmt.Sprintf("%s is %q", k, got)
			}
		}
		return ""
	})
	res, err = r.direct.Apply(ctx, laidOut(write("pg-k-1", "pg-k-2", m1, m2, m3)))
	if err != nil {
		t.Fatal(err)
	}
	var resynced []string
	for _, c := range res.Changes {
		if c.Kind == target.KindResyncTracker {
			resynced = append(resynced, c.Backend+"/"+c.Server)
		}
	}
	if got := strings.Join(resynced, " "); got != "pg-k-default/pg-k-1 pg-k-default/pg-k-2" || res.Reloaded {
		t.Errorf("after the outside reload: resynced %q (changes %s, reloaded %v), want both default trackers at runtime", got, kinds(res.Changes), res.Reloaded)
	}
	wantStatus("after the resync", map[string]string{"pg-k-default/pg-k-1": "DOWN", "pg-k-default/pg-k-2": "UP"})
	if again, err := r.direct.Apply(ctx, laidOut(write("pg-k-1", "pg-k-2", m1, m2, m3))); err != nil || len(again.Changes) != 0 {
		t.Errorf("after the resync = %s, %v; want nothing to do", kinds(again.Changes), err)
	}
	// A full read that caught a tracked server changing state while
	// `show stat` was written (here: made up) shows a tracker out of step
	// that is not; read again, it is left alone (a resync would cut its
	// sessions).
	snap, err := r.direct.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sv := snap.current["pg-k-default"].Servers["pg-k-2"]
	sv.Down = true
	snap.current["pg-k-default"].Servers["pg-k-2"] = sv
	if found := trackersOutOfStep(snap.current, laidOut(write("pg-k-1", "pg-k-2", m1, m2, m3))); len(found) != 1 {
		t.Fatalf("the made-up read: %s, want pg-k-2's tracker out of step", kinds(found))
	}
	if got, err := r.direct.withTrackerResyncs(ctx, snap, laidOut(write("pg-k-1", "pg-k-2", m1, m2, m3)), nil); err != nil || len(got) != 0 {
		t.Errorf("a tracker in step, read out of step once: %s, %v; want no resync", kinds(got), err)
	}

	// An inventory change (a fourth member): the reload keeps the
	// trackers where their tracked servers are.
	m4 := newMember(t, "pg-k-4", "127.0.0.74", "replica")
	pgPort[m4], closed[m4] = holder(t, m4.ip)
	res, err = r.direct.Apply(ctx, laidOut(write("pg-k-1", "pg-k-2", m1, m2, m3, m4)))
	if err != nil || !res.Reloaded {
		t.Fatalf("grow: %+v %v, want a reload", res, err)
	}
	wantStatus("after the reload", map[string]string{"pg-k-primary/pg-k-1": "DOWN", "pg-k-default/pg-k-1": "DOWN",
		"pg-k-primary/pg-k-2": "UP", "pg-k-default/pg-k-2": "UP", "pg-k-default/pg-k-4": "DOWN"})
}

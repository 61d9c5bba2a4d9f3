package haproxy

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

const frontIP = "127.0.0.30"

// cluster builds the primary and replica services of a fake cluster the way
// pkg/services does: every member in both, the primary as backup in replica.
func cluster(primaryPort, replicaPort int, weights map[string]int, ms ...*member) []services.Service {
	prim := services.Service{Name: "pg-t-primary", Service: "primary", IP: frontIP, Port: primaryPort, Check: "/primary",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: testDefaultServer}
	repl := services.Service{Name: "pg-t-replica", Service: "replica", IP: frontIP, Port: replicaPort, Check: "/read-only",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: testDefaultServer}
	for _, m := range ms {
		w := 100
		if v, ok := weights[m.name]; ok {
			w = v
		}
		prim.Servers = append(prim.Servers, m.server(w, false))
		repl.Servers = append(repl.Servers, m.server(w, m.role.Load() == "primary"))
	}
	return []services.Service{prim, repl}
}

func kinds(cs []target.Change) string {
	var k []string
	for _, c := range cs {
		k = append(k, c.Kind+":"+c.Backend+"/"+c.Server)
	}
	return strings.Join(k, " ")
}

// TestDirectLifecycle drives one real HAProxy through the cases the
// controller meets, in order: each step starts from the previous one's state.
func TestDirectLifecycle(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.31", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.32", "replica")
	m3 := newMember(t, "pg-t-3", "127.0.0.33", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	weights := map[string]int{}

	t.Run("initial apply creates services", func(t *testing.T) {
		desired := cluster(pp, rp, weights, m1, m2, m3)
		res, err := r.direct.Apply(ctx, desired)
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(res.Changes); got != "create_service:pg-t-primary/ create_service:pg-t-replica/" {
			t.Errorf("changes = %s", got)
		}
		if !res.Reloaded || res.ReloadResult != "succeeded" || res.ReloadID != "1" {
			t.Errorf("result = %+v, want reloaded, succeeded, reload id 1", res)
		}
		if res.StatePreserved == nil || !*res.StatePreserved {
			t.Errorf("StatePreserved = %v, want true", res.StatePreserved)
		}
		r.waitStatus(t, map[string]bool{
			"pg-t-primary/pg-t-1": true, "pg-t-primary/pg-t-2": false, "pg-t-primary/pg-t-3": false,
			"pg-t-replica/pg-t-1": true, "pg-t-replica/pg-t-2": true, "pg-t-replica/pg-t-3": true,
		})
		again, err := r.direct.Apply(ctx, desired)
		if err != nil || len(again.Changes) != 0 || again.Reloaded {
			t.Errorf("second apply = %+v, %v; want no changes, no reload", again, err)
		}
	})

	t.Run("switchover flips backup flags", func(t *testing.T) {
		m1.setRole("replica")
		m2.setRole("primary")
		before := r.reloads(t)
		res, err := r.direct.Apply(ctx, cluster(pp, rp, weights, m1, m2, m3))
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(res.Changes); got != "update_server:pg-t-replica/pg-t-1 update_server:pg-t-replica/pg-t-2" {
			t.Errorf("changes = %s", got)
		}
		if !res.Reloaded || r.reloads(t) != before+1 {
			t.Errorf("want one reload: result %+v, counter %d -> %d", res, before, r.reloads(t))
		}
		st := r.stat(t)
		if !st["pg-t-replica/pg-t-2"].Backup || st["pg-t-replica/pg-t-1"].Backup {
			t.Errorf("replica backend backup flags: pg-t-1 %v pg-t-2 %v, want false/true",
				st["pg-t-replica/pg-t-1"].Backup, st["pg-t-replica/pg-t-2"].Backup)
		}
		r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": false, "pg-t-primary/pg-t-2": true})
	})

	t.Run("weight only applies at runtime without reload", func(t *testing.T) {
		before := r.reloads(t)
		weights["pg-t-3"] = 50
		res, err := r.direct.Apply(ctx, cluster(pp, rp, weights, m1, m2, m3))
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(res.Changes); got != "set_weight:pg-t-primary/pg-t-3 set_weight:pg-t-replica/pg-t-3" {
			t.Errorf("changes = %s", got)
		}
		if res.Reloaded || r.reloads(t) != before {
			t.Errorf("reloaded: result %+v, counter %d -> %d", res, before, r.reloads(t))
		}
		if w := r.stat(t)["pg-t-replica/pg-t-3"].Weight; w != 50 {
			t.Errorf("show stat weight = %d, want 50", w)
		}
		cfg, _ := os.ReadFile(r.opts.ConfigPath)
		if !strings.Contains(string(cfg), "server pg-t-3 127.0.0.33") || !strings.Contains(string(cfg), "weight 50") {
			t.Errorf("config file does not carry weight 50:\n%s", cfg)
		}
	})

	t.Run("servers added and removed, new server starts down", func(t *testing.T) {
		m4 := newMember(t, "pg-t-4", "127.0.0.34", "replica")
		before := r.reloads(t)
		res, err := r.direct.Apply(ctx, cluster(pp, rp, weights, m1, m2, m4))
		if err != nil {
			t.Fatal(err)
		}
		want := "add_server:pg-t-primary/pg-t-4 remove_server:pg-t-primary/pg-t-3 add_server:pg-t-replica/pg-t-4 remove_server:pg-t-replica/pg-t-3"
		if got := kinds(res.Changes); got != want {
			t.Errorf("changes = %s, want %s", got, want)
		}
		st := r.stat(t)
		if _, ok := st["pg-t-primary/pg-t-3"]; ok {
			t.Error("pg-t-3 still in pg-t-primary")
		}
		// No state line existed for pg-t-4: FixServersState starts it DOWN
		// instead of HAProxy's UP 1/3 in a primary service.
		if row := st["pg-t-primary/pg-t-4"]; row.Up() {
			t.Errorf("new server pg-t-4 in primary is %q right after the reload, want DOWN", row.Status)
		}
		if r.reloads(t) != before+1 {
			t.Errorf("reload counter %d -> %d, want +1", before, r.reloads(t))
		}
		r.waitStatus(t, map[string]bool{"pg-t-replica/pg-t-4": true, "pg-t-primary/pg-t-4": false})
		m3 = m4
	})

	t.Run("changed port follows the config", func(t *testing.T) {
		// HAProxy 2.6 restores srv_port from the state file over the config;
		// FixServersState rewrites it.
		m5 := newMember(t, "pg-t-4", "127.0.0.35", "replica")
		res, err := r.direct.Apply(ctx, cluster(pp, rp, weights, m1, m2, m5))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Reloaded {
			t.Fatalf("want a reload, got %+v", res)
		}
		if row := r.stat(t)["pg-t-replica/pg-t-4"]; row.Addr != m5.ip || row.Port != m5.port {
			t.Errorf("pg-t-4 at %s:%d, want %s:%d", row.Addr, row.Port, m5.ip, m5.port)
		}
		m3 = m5
		changes, err := r.direct.Diff(ctx, cluster(pp, rp, weights, m1, m2, m5))
		if err != nil || len(changes) != 0 {
			t.Errorf("diff after apply = %v, %v; want none", changes, err)
		}
	})

	t.Run("bad config is rejected and the old one keeps serving", func(t *testing.T) {
		before := r.reloads(t)
		oldCfg, _ := os.ReadFile(r.opts.ConfigPath)
		bad := cluster(pp, rp, weights, m1, m2, m3)
		bad[0].DefaultServer = testDefaultServer + " no-such-option 1"
		_, err := r.direct.Apply(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), "no-such-option") {
			t.Fatalf("err = %v, want haproxy -c's message naming no-such-option", err)
		}
		if r.reloads(t) != before {
			t.Errorf("reload counter moved %d -> %d", before, r.reloads(t))
		}
		if cfg, _ := os.ReadFile(r.opts.ConfigPath); string(cfg) != string(oldCfg) {
			t.Error("config file changed after a rejected apply")
		}
		d := startDialer(addr(frontIP, pp))
		eventually(t, 5*time.Second, "connections through the old config", func() string {
			if d.ok.Load() < 5 {
				return "fewer than 5 connections served"
			}
			return ""
		})
		d.Stop()
	})
}

// TestReloadHazard checks that reloads never route connections of a
// primary-like service to servers whose checks fail: health states survive
// the reload through the server-state file, and new servers start DOWN.
func TestReloadHazard(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-h-1", "127.0.0.41", "primary")
	m2 := newMember(t, "pg-h-2", "127.0.0.42", "replica")
	m3 := newMember(t, "pg-h-3", "127.0.0.43", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	mk := func(ms ...*member) []services.Service {
		s := cluster(pp, rp, nil, ms...)
		s[0].Name, s[1].Name = "pg-h-primary", "pg-h-replica"
		// Slower checks than elsewhere: a fresh worker that trusted
		// unchecked servers would route to them for a whole interval.
		for i := range s {
			s[i].DefaultServer = "inter 500ms fastinter 200ms downinter 500ms rise 2 fall 2 on-marked-down shutdown-sessions"
		}
		return s
	}
	if _, err := r.direct.Apply(ctx, mk(m1, m2)); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(t, map[string]bool{"pg-h-primary/pg-h-1": true, "pg-h-primary/pg-h-2": false})
	m2base := m2.accepted.Load()

	d := startDialer(addr(frontIP, pp))
	defer d.Stop()
	for i, desired := range [][]services.Service{mk(m1, m2, m3), mk(m1, m2), mk(m1, m2, m3)} {
		res, err := r.direct.Apply(ctx, desired)
		if err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
		if !res.Reloaded {
			t.Fatalf("apply %d did not reload: %+v", i, res)
		}
		st := r.stat(t)
		for _, k := range []string{"pg-h-primary/pg-h-2", "pg-h-primary/pg-h-3"} {
			if row, ok := st[k]; ok && row.Up() {
				t.Errorf("apply %d: %s is %q right after the reload, want DOWN", i, k, row.Status)
			}
		}
	}
	// Keep dialing after the last reload through the window in which a
	// fresh worker would trust unchecked servers (several check intervals).
	after := d.ok.Load() + d.failed.Load()
	eventually(t, 10*time.Second, "dialing after the reloads", func() string {
		if d.ok.Load()+d.failed.Load() < after+200 {
			return "fewer than 200 attempts since the last reload"
		}
		return ""
	})
	d.Stop()
	if n := m2.accepted.Load() - m2base + m3.accepted.Load(); n != 0 {
		t.Errorf("%d connections through the primary service reached replicas", n)
	}
	if d.ok.Load() == 0 {
		t.Errorf("no connection reached the primary (%d failed)", d.failed.Load())
	}
	t.Logf("primary served %d connections, %d failed, across 3 reloads", d.ok.Load(), d.failed.Load())
}

// TestForceUp: a new primary whose health checks have not risen yet (slow
// checks here) is marked UP at once when desired says ForceUp, without a
// reload; a second apply changes nothing.
func TestForceUp(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m := newMember(t, "pg-f-1", "127.0.0.57", "primary")
	svc := services.Service{Name: "pg-f-primary", Service: "primary", IP: frontIP, Port: freePort(t, frontIP), Check: "/primary",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: "inter 30s fastinter 30s downinter 30s rise 3 fall 3"}
	svc.Servers = []services.Server{m.server(100, false)}
	if _, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil {
		t.Fatal(err)
	}
	// A new server starts DOWN until its checks rise: with 30 s checks, long.
	if row := r.stat(t)["pg-f-primary/pg-f-1"]; row.Up() {
		t.Fatalf("new server is %q before any check", row.Status)
	}
	reloads := r.reloads(t)
	svc.Servers[0].ForceUp = true
	res, err := r.direct.Apply(ctx, []services.Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(res.Changes); got != "force_up:pg-f-primary/pg-f-1" || res.Reloaded || r.reloads(t) != reloads {
		t.Errorf("changes %s, reloaded %v (reloads %d -> %d): want one force_up, no reload", got, res.Reloaded, reloads, r.reloads(t))
	}
	if row := r.stat(t)["pg-f-primary/pg-f-1"]; row.Status != "UP" {
		t.Errorf("after force up: %q, want UP", row.Status)
	}
	if again, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || len(again.Changes) != 0 {
		t.Errorf("second apply: %+v %v, want no change", again.Changes, err)
	}
}

// TestForceUpWithReload: a force-up in the same apply as a change that needs
// a reload is done first (a reload takes hundreds of milliseconds) and the
// server-state file carries it into the new worker.
func TestForceUpWithReload(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-g-1", "127.0.0.58", "primary")
	m2 := newMember(t, "pg-g-2", "127.0.0.59", "replica")
	svc := services.Service{Name: "pg-g-primary", Service: "primary", IP: frontIP, Port: freePort(t, frontIP), Check: "/primary",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: "inter 30s fastinter 30s downinter 30s rise 3 fall 3"}
	svc.Servers = []services.Server{m1.server(100, false), m2.server(100, false)}
	if _, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil {
		t.Fatal(err)
	}
	if row := r.stat(t)["pg-g-primary/pg-g-1"]; row.Up() {
		t.Fatalf("new server is %q before any check", row.Status)
	}
	reloads := r.reloads(t)
	svc.Servers[0].ForceUp = true
	svc.Servers[1].Backup = true // needs a reload
	res, err := r.direct.Apply(ctx, []services.Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(res.Changes); !strings.Contains(got, "force_up:pg-g-primary/pg-g-1") || !res.Reloaded || r.reloads(t) <= reloads {
		t.Errorf("changes %s, reloaded %v: want a force_up and a reload", got, res.Reloaded)
	}
	if row := r.stat(t)["pg-g-primary/pg-g-1"]; row.Status != "UP" {
		t.Errorf("after force up and reload: %q, want UP in the new worker", row.Status)
	}
}

// TestForceDown: the write fence marks the old primary DOWN at runtime
// although its checks pass (no weight: `get weight` stays 100, the file is
// not reloaded), a second apply changes nothing, something that brings it UP
// is undone by the next apply, and a reload while it is fenced (a backup
// flag in the same apply) starts the new worker with it DOWN. Once the
// fence is gone nothing is forced: the server is left to its checks.
func TestForceDown(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-d-1", "127.0.0.61", "primary")
	m2 := newMember(t, "pg-d-2", "127.0.0.62", "replica")
	svc := services.Service{Name: "pg-d-primary", Service: "primary", IP: frontIP, Port: freePort(t, frontIP), Check: "/primary",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: "inter 30s fastinter 30s downinter 30s rise 3 fall 3"}
	svc.Servers = []services.Server{m1.server(100, false), m2.server(100, false)}
	if _, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil {
		t.Fatal(err)
	}
	// UP on our word (its slow checks would take 90 s).
	svc.Servers[0].ForceUp = true
	if _, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil {
		t.Fatal(err)
	}
	if row := r.stat(t)["pg-d-primary/pg-d-1"]; row.Status != "UP" {
		t.Fatalf("after force up: %q", row.Status)
	}
	svc.Servers[0].ForceUp = false
	reloads := r.reloads(t)
	before, err := os.Stat(r.direct.opts.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	svc.Servers[0].ForceDown = true
	res, err := r.direct.Apply(ctx, []services.Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	// Health is not in the file: a fence alone does not rewrite it.
	if after, err := os.Stat(r.direct.opts.ConfigPath); err != nil || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the fence rewrote %s (%v)", r.direct.opts.ConfigPath, err)
	}
	if got := kinds(res.Changes); got != "force_down:pg-d-primary/pg-d-1" || res.Reloaded || r.reloads(t) != reloads || res.ForcedDown.IsZero() {
		t.Errorf("changes %s, reloaded %v (reloads %d -> %d), forced down at %v: want one force_down at runtime", got, res.Reloaded, reloads, r.reloads(t), res.ForcedDown)
	}
	row := r.stat(t)["pg-d-primary/pg-d-1"]
	if !strings.HasPrefix(row.Status, "DOWN") || row.Weight != 100 {
		t.Errorf("after force down: %q weight %d, want DOWN at weight 100", row.Status, row.Weight)
	}
	if again, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || len(again.Changes) != 0 {
		t.Errorf("second apply: %+v %v, want no change", again.Changes, err)
	}
	// Something brings it UP while fenced: forced DOWN again.
	if out, err := r.rt.Exec(ctx, "set server pg-d-primary/pg-d-1 health up"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set server health up: %q %v", out, err)
	}
	res, err = r.direct.Apply(ctx, []services.Service{svc})
	if got := kinds(res.Changes); err != nil || got != "force_down:pg-d-primary/pg-d-1" {
		t.Errorf("apply after an operator's health up: %s %v, want the force_down again", got, err)
	}
	// A reload while fenced: the new worker has it DOWN from the start.
	svc.Servers[1].Backup = true
	res, err = r.direct.Apply(ctx, []services.Service{svc})
	if err != nil || !res.Reloaded {
		t.Fatalf("backup flip: %+v %v, want a reload", res, err)
	}
	if row := r.stat(t)["pg-d-primary/pg-d-1"]; !strings.HasPrefix(row.Status, "DOWN") {
		t.Errorf("after the reload: %q, want DOWN in the new worker", row.Status)
	}
	if again, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || len(again.Changes) != 0 {
		t.Errorf("apply after the reload: %+v %v, want no change", again.Changes, err)
	}
	// Lifted: nothing forced either way.
	svc.Servers[0].ForceDown = false
	if res, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || len(res.Changes) != 0 {
		t.Errorf("lift: %+v %v, want no change (left to the checks)", res.Changes, err)
	}
}

// TestForceUpOnce: a new primary is forced UP once per promotion: found
// DOWN again while desired still forces it (its checks failed since, or an
// operator set it), it is left DOWN; once desired stops forcing it, the
// next promotion forces it UP again.
func TestForceUpOnce(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m := newMember(t, "pg-o-1", "127.0.0.63", "primary")
	svc := services.Service{Name: "pg-o-primary", Service: "primary", IP: frontIP, Port: freePort(t, frontIP), Check: "/primary",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: "inter 30s fastinter 30s downinter 30s rise 3 fall 3"}
	svc.Servers = []services.Server{m.server(100, false)}
	if _, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil {
		t.Fatal(err)
	}
	svc.Servers[0].ForceUp = true
	if res, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || kinds(res.Changes) != "force_up:pg-o-primary/pg-o-1" {
		t.Fatalf("promotion: %v %v, want one force_up", res.Changes, err)
	}
	// A check failure after it (set by hand here: the checks are slow).
	if out, err := r.rt.Exec(ctx, "set server pg-o-primary/pg-o-1 health down"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set server health down: %q %v", out, err)
	}
	if res, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || len(res.Changes) != 0 {
		t.Errorf("apply after a later failure: %v %v, want none (left to the checks)", res.Changes, err)
	}
	if diff, err := r.direct.Diff(ctx, []services.Service{svc}); err != nil || len(diff) != 0 {
		t.Errorf("diff after a later failure: %v %v, want none", diff, err)
	}
	if row := r.stat(t)["pg-o-primary/pg-o-1"]; !strings.HasPrefix(row.Status, "DOWN") {
		t.Errorf("after the failure: %q, want DOWN", row.Status)
	}
	// The promotion is over (desired stops forcing), then another one.
	svc.Servers[0].ForceUp = false
	if _, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil {
		t.Fatal(err)
	}
	svc.Servers[0].ForceUp = true
	if res, err := r.direct.Apply(ctx, []services.Service{svc}); err != nil || kinds(res.Changes) != "force_up:pg-o-primary/pg-o-1" {
		t.Errorf("next promotion: %v %v, want one force_up", res.Changes, err)
	}
	if row := r.stat(t)["pg-o-primary/pg-o-1"]; row.Status != "UP" {
		t.Errorf("after the next promotion: %q, want UP", row.Status)
	}
}

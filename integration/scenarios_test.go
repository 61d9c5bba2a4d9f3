//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/integration/harness"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// scenarioRig is the one environment every scenario shares: starting
// Patroni clusters is the slow part, so they run in order on the same stack.
type scenarioRig struct {
	top     *testing.T
	ctx     context.Context
	env     *harness.Env
	haproxy *haproxyRig
	cfg     func() *config.Config
	ctl     *controllerRun
	res     *results
	addrs   map[string]string // member -> address

	// writes through pg-test's primary service during scenarios 1-3, and the
	// spans in which Patroni actions may make them fail.
	writer  *writer
	windows []window
	// sessions used after reloads; each goes through a service the reload's
	// cause does not touch.
	sessionUses int
}

const (
	testIP = "127.0.0.10"
	duoIP  = "127.0.0.20"
	// failMargin is how long after convergence write failures still count
	// as the Patroni action's.
	failMargin = 2 * time.Second
)

// TestScenarios runs the end-to-end scenarios of the controller against
// real software: etcd, Patroni 3.0.2 (pg-test with 3 members, pg-duo with
// 2), PostgreSQL 15, pgbouncer, a master-worker HAProxy 2.6 driven
// directly, and the controller in-process (app.Serve). Assertions are on
// real traffic through the services. It needs root; CI's integration job
// runs it.
func TestScenarios(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	pgTest := fastCluster()
	pgDuo := harness.DuoCluster()
	pgDuo.TTL, pgDuo.LoopWait, pgDuo.RetryTimeout = 10, 2, 3
	setupStart := time.Now()
	env := startEnv(t, ctx, pgTest, pgDuo)
	r := &scenarioRig{top: t, ctx: ctx, env: env, res: &results{}, addrs: env.MemberAddrs()}
	t.Cleanup(func() {
		if path := os.Getenv("PGSVC_RESULTS"); path != "" {
			if err := os.WriteFile(path, []byte(r.res.markdown()), 0o644); err != nil {
				t.Errorf("write results: %v", err)
			} else {
				t.Logf("results written to %s", path)
			}
		}
	})
	r.res.add("setup", "patroni clusters up (5 members)", "%s", dur(time.Since(setupStart)))

	inv := filepath.Join(t.TempDir(), "pigsty.yml")
	if err := env.WriteInventory(inv); err != nil {
		t.Fatal(err)
	}
	r.haproxy = startHAProxy(t, ctx, inv)
	r.cfg = func() *config.Config { return scenarioConfig(inv, env, r.haproxy) }
	ctl, err := startController(t, r.cfg())
	if err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl
	for _, c := range [][2]string{{"pg-test", "pg-test-1"}, {"pg-duo", "pg-duo-1"}} {
		if err := createWritesTable(ctx, env, c[1]); err != nil {
			t.Fatal(err)
		}
	}

	convStart := time.Now()
	if err := r.waitInitial(); err != nil {
		t.Fatal(err)
	}
	r.res.add("setup", "initial convergence (controller ready, traffic right)", "%s", dur(time.Since(convStart)))

	// A long-lived session on pg-duo's primary, unaffected by pg-test's
	// events, opened before any of them.
	duoSess, err := openSession(ctx, svcAddr(duoIP, portPrimary))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { duoSess.close() }()
	if _, err := duoSess.use(ctx); err != nil {
		t.Fatal(err)
	}
	r.writer = startWriter(svcAddr(testIP, portPrimary), 100*time.Millisecond)
	defer r.writer.stop()

	// Scenarios 3 and 5 need pg-test as scenario 1 left it; after a failure
	// there they are skipped rather than run on a stack in an unknown state.
	ok := t.Run("1 switchover of 3-member pg-test", func(t *testing.T) { r.switchover3(t, duoSess) })
	ok = t.Run("2 switchover of 2-member pg-duo closes the offline gap", func(t *testing.T) {
		duoSess.close()
		duoSess = r.switchoverDuo(t)
	}) && ok
	ok = t.Run("3 kill -9 failover of pg-test's primary", func(t *testing.T) {
		if !ok {
			t.Skip("an earlier scenario failed: the shared stack is in an unknown state")
		}
		r.failover(t, duoSess)
	}) && ok
	t.Run("4 writes through the primary service: none misrouted, none lost outside Patroni windows", func(t *testing.T) { r.checkWrites(t) })
	t.Run("5 controller restart and etcd restart", func(t *testing.T) {
		if !ok {
			t.Skip("an earlier scenario failed: the shared stack is in an unknown state")
		}
		r.restarts(t)
	})
	// Before the Data Plane API scenarios: measured on the direct driver.
	t.Run("6 Patroni-speed: 5 switchovers and 3 kill -9 failovers under 20 ms writes", func(t *testing.T) {
		if !ok {
			t.Skip("an earlier scenario failed: the shared stack is in an unknown state")
		}
		r.speedRuns(t)
	})
	// Scenario 7 runs once per real Data Plane API build (CI: ../shared/bin
	// through the Makefile): 2.9.x speaks /v2, 3.x /v3; the controller detects which.
	for _, api := range []struct{ name, env, want string }{
		{"v2", "DATAPLANEAPI_BIN", "2.9.x"},
		{"v3", "DATAPLANEAPI_V3_BIN", "3.x"},
	} {
		t.Run("7 switchover through a real Data Plane API "+api.name, func(t *testing.T) {
			bin := os.Getenv(api.env)
			if bin == "" {
				t.Skip(api.env + " not set: no Data Plane API " + api.want + " build is available here (CI sets it from ../shared/bin " +
					"through the Makefile); pkg/dataplaneapi's double-backed tests cover that driver. " +
					"Set " + api.env + "=/path/to/dataplaneapi (" + api.want + ") to run this scenario")
			}
			if !ok {
				t.Skip("an earlier scenario failed: the shared stack is in an unknown state")
			}
			r.dataPlaneAPI(t, bin, api.name)
		})
	}
}

// ------------------------------------------------------------------ checks

func (r *scenarioRig) status() (controller.Status, error) { return r.ctl.status(r.ctx) }

// clusterRight reports whether HAProxy serves cluster correctly for leader:
// the controller is ready with that leader, only the leader is up in the
// primary backend, a fresh primary-service connection lands on it
// read-write, the
// leader is a backup of the replica backend and fresh replica-service
// connections never land on it.
func (r *scenarioRig) clusterRight(cluster, ip, leader string) (bool, string) {
	st, err := r.status()
	if err != nil {
		return false, err.Error()
	}
	if ok, why := readyWithLeader(st, cluster, leader); !ok {
		return false, why
	}
	if ok, why := r.haproxy.onlyUp(r.ctx, cluster+"-primary", leader); !ok {
		return false, why
	}
	row, ok, why := r.haproxy.server(r.ctx, cluster+"-replica", leader)
	if !ok {
		return false, why
	}
	if !row.Backup {
		return false, fmt.Sprintf("%s is not a backup of %s-replica yet", leader, cluster)
	}
	a, err := probe(r.ctx, svcAddr(ip, portPrimary))
	if err != nil {
		return false, "primary service: " + err.Error()
	}
	if a.InRecovery || a.Addr != r.addrs[leader] {
		return false, fmt.Sprintf("primary service answered on %s (in recovery %v), want %s", a.Addr, a.InRecovery, r.addrs[leader])
	}
	as, err := probeN(r.ctx, svcAddr(ip, portReplica), 6)
	if err != nil {
		return false, "replica service: " + err.Error()
	}
	for _, a := range as {
		if a.Addr == r.addrs[leader] || !a.InRecovery {
			return false, fmt.Sprintf("replica service answered on %s (in recovery %v): %v", a.Addr, a.InRecovery, addrCounts(as))
		}
	}
	return true, ""
}

// offlineAnswers reports whether the offline service answers on a replica.
func (r *scenarioRig) offlineAnswers(ip string) (answer, bool, string) {
	a, err := probe(r.ctx, svcAddr(ip, portOffline))
	if err != nil {
		return a, false, "offline service: " + err.Error()
	}
	if !a.InRecovery {
		return a, false, fmt.Sprintf("offline service answered on %s, not in recovery", a.Addr)
	}
	return a, true, ""
}

func (r *scenarioRig) waitInitial() error {
	for _, c := range []struct{ cluster, ip, leader string }{{"pg-test", testIP, "pg-test-1"}, {"pg-duo", duoIP, "pg-duo-1"}} {
		err := waitFor(r.ctx, 90*time.Second, c.cluster+" initial convergence", func() (bool, string) {
			if ok, why := r.clusterRight(c.cluster, c.ip, c.leader); !ok {
				return false, why
			}
			_, ok, why := r.offlineAnswers(c.ip)
			return ok, why
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// reportApply adds the controller's first apply for cluster after start.
// It returns the apply's time (zero when there was none).
func (r *scenarioRig) reportApply(t *testing.T, scenario, cluster string, start time.Time) time.Time {
	st, err := r.status()
	if err != nil {
		t.Errorf("status: %v", err)
		return time.Time{}
	}
	e, ok := firstApply(st, cluster, start)
	if !ok {
		r.res.add(scenario, "controller applied", "no apply for %s in the history", cluster)
		return time.Time{}
	}
	r.res.add(scenario, "controller applied (from action; DCS event to apply end)", "%s; %s (reloaded %v)",
		dur(e.At.Sub(start)), dur(e.Convergence), e.Reloaded)
	return e.At
}

// reportLeader adds when the leader key moved and how long patronictl ran.
// It returns when the key moved (zero when unknown).
func (r *scenarioRig) reportLeader(t *testing.T, sc string, lw *leaderWatch, start time.Time, old string, sw harness.SwitchoverResult) time.Time {
	t.Helper()
	l, moved, err := lw.wait(start)
	if err != nil {
		t.Errorf("leader watch: %v", err)
		return time.Time{}
	}
	r.res.add(sc, "leader key moved", "%s -> %s in %s (patronictl ran %s)", old, l, dur(moved), dur(sw.Command))
	return start.Add(moved)
}

// useSession uses a long-lived session and fails the test if it broke.
func (r *scenarioRig) useSession(t *testing.T, s *session, after string) {
	t.Helper()
	if _, err := s.use(r.ctx); err != nil {
		t.Errorf("after %s: %v", after, err)
		return
	}
	r.sessionUses++
}

func other(members []harness.MemberSpec, not ...string) string {
	for _, m := range members {
		skip := false
		for _, n := range not {
			skip = skip || m.Name == n
		}
		if !skip {
			return m.Name
		}
	}
	return ""
}

// ---------------------------------------------------------------- scenarios

// switchover3: after a switchover of pg-test, replica-service connections
// never land on the new primary and the old primary serves reads.
func (r *scenarioRig) switchover3(t *testing.T, duoSess *session) {
	const sc = "1 switchover pg-test"
	old := r.leader(t, "pg-test")
	cand := other(r.env.Members("pg-test"), old, "pg-test-3")
	st0, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	lw := watchLeader(r.ctx, r.env, "pg-test", old, time.Minute)
	start := time.Now()
	sw, err := r.env.Switchover(r.ctx, "pg-test", old, cand)
	if err != nil {
		r.windows = append(r.windows, window{Label: sc, Start: start, End: time.Now()})
		t.Fatal(err)
	}
	leaderAt := r.reportLeader(t, sc, lw, start, old, sw)
	err = waitFor(r.ctx, 90*time.Second, "pg-test served right after the switchover", func() (bool, string) {
		return r.clusterRight("pg-test", testIP, cand)
	})
	served := time.Now()
	w := window{Label: sc, Start: start, End: served, LeaderAt: leaderAt}
	if err != nil {
		r.windows = append(r.windows, w)
		t.Fatal(err)
	}
	w.AppliedAt = r.reportApply(t, sc, "pg-test", start)
	r.windows = append(r.windows, w)
	r.res.add(sc, "HAProxy serving correctly", "%s", dur(served.Sub(start)))

	// 30 fresh connections, then more rounds until the old primary has
	// answered too (it may come back slowly: rise 3, slowstart 30s).
	seen := map[string]int{}
	onNew := 0
	err = waitFor(r.ctx, 90*time.Second, "old primary "+old+" serves reads through the replica service", func() (bool, string) {
		as, err := probeN(r.ctx, svcAddr(testIP, portReplica), 30)
		for _, a := range as {
			seen[a.Addr]++
			if a.Addr == r.addrs[cand] || !a.InRecovery {
				onNew++
			}
		}
		if err != nil {
			return false, err.Error()
		}
		return seen[r.addrs[old]] > 0, fmt.Sprintf("answers so far %v", seen)
	})
	r.res.add(sc, "replica-service connections on the new primary", "%d of %d (by server %v)", onNew, sum(seen), seen)
	if onNew != 0 {
		t.Errorf("%d replica-service connections landed on the new primary %s: %v", onNew, cand, seen)
	}
	if err != nil {
		t.Error(err)
	} else {
		r.res.add(sc, "old primary serving reads", "%s after the action", dur(time.Since(start)))
	}
	a, ok, why := r.offlineAnswers(testIP)
	if !ok {
		t.Errorf("offline service: %s", why)
	} else {
		r.res.add(sc, "offline service answers", "on %s (in recovery)", a.Addr)
	}
	st1, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	if n := reloads(st1) - reloads(st0); n < 1 {
		t.Errorf("no HAProxy reload recorded for the switchover")
	}
	r.useSession(t, duoSess, "the reload for pg-test's switchover (session on pg-duo's primary)")

	hctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	if err := r.env.WaitHealthy(hctx, "pg-test"); err != nil {
		t.Fatal(err)
	}
}

// switchoverDuo: in a 2-member cluster the offline service loses its only
// server in a switchover; the controller makes the demoted primary its
// backup, so it answers again. Returns a new long-lived session on pg-duo's
// (new) primary for the next scenario.
func (r *scenarioRig) switchoverDuo(t *testing.T) *session {
	const sc = "2 switchover pg-duo"
	testSess, err := openSession(r.ctx, svcAddr(testIP, portPrimary))
	if err != nil {
		t.Fatal(err)
	}
	defer testSess.close()
	r.useSession(t, testSess, "opening (session on pg-test's primary)")
	old := r.leader(t, "pg-duo")
	cand, start := r.switchOver(t, sc, "pg-duo", old)
	var got answer
	err = waitFor(r.ctx, 90*time.Second, "pg-duo's offline service answers on "+old, func() (bool, string) {
		if ok, why := r.clusterRight("pg-duo", duoIP, cand); !ok {
			return false, why
		}
		a, ok, why := r.offlineAnswers(duoIP)
		if !ok {
			return false, why
		}
		got = a
		return a.Addr == r.addrs[old], fmt.Sprintf("offline answered on %s", a.Addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.reportApply(t, sc, "pg-duo", start)
	r.res.add(sc, "offline service answers again", "%s after the action, on %s", dur(time.Since(start)), got.Addr)
	r.useSession(t, testSess, "the reload for pg-duo's switchover (session on pg-test's primary)")

	hctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	if err := r.env.WaitHealthy(hctx, "pg-duo"); err != nil {
		t.Fatal(err)
	}
	s, err := openSession(r.ctx, svcAddr(duoIP, portPrimary))
	if err != nil {
		t.Fatal(err)
	}
	r.useSession(t, s, "opening (session on pg-duo's new primary)")
	return s
}

// failover: kill -9 of pg-test's primary; the primary service follows the
// new leader, the others answer; then the old primary rejoins.
func (r *scenarioRig) failover(t *testing.T, duoSess *session) {
	const sc = "3 kill -9 failover pg-test"
	old := r.leader(t, "pg-test")
	lw := watchLeader(r.ctx, r.env, "pg-test", old, 90*time.Second)
	start := time.Now()
	if err := r.env.KillMember(old); err != nil {
		r.windows = append(r.windows, window{Label: sc, Start: start, End: time.Now()})
		t.Fatalf("kill %s: %v", old, err)
	}
	next, moved, err := lw.wait(start)
	if err != nil {
		r.windows = append(r.windows, window{Label: sc, Start: start, End: time.Now()})
		t.Fatal(err)
	}
	r.res.add(sc, "leader key moved", "%s -> %s in %s", old, next, dur(moved))
	err = waitFor(r.ctx, 90*time.Second, "pg-test served right after the failover", func() (bool, string) {
		if ok, why := r.clusterRight("pg-test", testIP, next); !ok {
			return false, why
		}
		_, ok, why := r.offlineAnswers(testIP)
		return ok, why
	})
	served := time.Now()
	w := window{Label: sc, Start: start, End: served, LeaderAt: start.Add(moved)}
	if err != nil {
		r.windows = append(r.windows, w)
		t.Fatal(err)
	}
	w.AppliedAt = r.reportApply(t, sc, "pg-test", start)
	r.windows = append(r.windows, w)
	r.res.add(sc, "HAProxy serving correctly", "%s", dur(served.Sub(start)))
	// The default service (straight to Postgres, same /primary check)
	// follows too.
	err = waitFor(r.ctx, 30*time.Second, "default service on "+next, func() (bool, string) {
		a, err := probe(r.ctx, svcAddr(testIP, portDefault))
		if err != nil {
			return false, err.Error()
		}
		return !a.InRecovery && a.Addr == r.addrs[next], fmt.Sprintf("default service answered on %s (in recovery %v)", a.Addr, a.InRecovery)
	})
	if err != nil {
		t.Error(err)
	}
	r.useSession(t, duoSess, "the reload for pg-test's failover (session on pg-duo's primary)")

	// The old primary rejoins (pg_rewind) as a replica.
	rejoin := time.Now()
	if err := r.env.RestartMember(r.ctx, old); err != nil {
		t.Fatalf("restart %s: %v", old, err)
	}
	hctx, hcancel := context.WithTimeout(r.ctx, 4*time.Minute)
	defer hcancel()
	if err := r.env.WaitHealthy(hctx, "pg-test"); err != nil {
		t.Fatal(err)
	}
	err = waitFor(r.ctx, 90*time.Second, old+" serves reads again", func() (bool, string) {
		if ok, why := r.clusterRight("pg-test", testIP, next); !ok {
			return false, why
		}
		row, ok, why := r.haproxy.server(r.ctx, "pg-test-replica", old)
		if !ok {
			return false, why
		}
		if row.Backup || !row.Up() {
			return false, fmt.Sprintf("%s in pg-test-replica: %s backup=%v", old, row.Status, row.Backup)
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	r.res.add(sc, "old primary rejoined and serving reads", "%s after restart", dur(time.Since(rejoin)))
	r.useSession(t, duoSess, "pg-test's rejoin (session on pg-duo's primary)")
}

// checkWrites: no write through pg-test's primary service ever reached a
// read-only server (SQLSTATE 25006), inside or outside the Patroni windows;
// writes failed only inside them (action start to HAProxy serving the new
// leader, +failMargin); every controller reload outside them (pg-duo's
// switchover, the rejoin) cost no write.
//
// Without the controller's write fence, 3 of 7 runs sent one write to the
// demoting primary 0.6-0.8 s into the switchover (it goes read-only before
// HAProxy's checks, fall 3, mark it down); the fence forces it DOWN (and
// cuts its sessions) as soon as Patroni says it stops PostgreSQL.
func (r *scenarioRig) checkWrites(t *testing.T) {
	const sc = "4 writes during 1-3"
	recs := r.writer.stop()
	s := countWrites(recs, r.windows, failMargin)
	r.res.add(sc, "writes ok / misrouted (25006) / failed", "%d / %d / %d", s.OK, s.Misrouted, s.Failed)
	r.res.add(sc, "misrouted / failed outside Patroni windows (+2s), incl. every other reload", "%d / %d", s.MisroutedOutside, s.FailedOutside)
	for _, w := range r.windows {
		var failed, misrouted []string
		for _, rec := range recs {
			if rec.Err == "" || !w.covers(rec, failMargin) {
				continue
			}
			at := "+" + dur(rec.At.Sub(w.Start))
			if rec.Misrouted {
				misrouted = append(misrouted, at+" on "+r.memberOf(rec.Addr))
			} else {
				failed = append(failed, at)
			}
		}
		ctx := ""
		if !w.LeaderAt.IsZero() {
			ctx += "; leader key moved +" + dur(w.LeaderAt.Sub(w.Start))
		}
		if !w.AppliedAt.IsZero() {
			ctx += "; controller applied +" + dur(w.AppliedAt.Sub(w.Start))
		}
		ctx += "; serving +" + dur(w.End.Sub(w.Start))
		r.res.add(sc, "in "+w.Label, "failed %d%s, misrouted %d%s%s", len(failed), span(failed), len(misrouted), span(misrouted), ctx)
		if len(misrouted) > 0 {
			t.Errorf("%d writes reached a read-only server during %s at %v%s", len(misrouted), w.Label, misrouted, ctx)
		}
	}
	r.res.add(sc, "long-lived session uses across reloads", "%d, none failed", r.sessionUses)
	if s.OK < 100 {
		t.Errorf("only %d successful writes: the writer did not run", s.OK)
	}
	for _, rec := range s.Outside {
		what := "failed"
		if rec.Misrouted {
			what = "reached a read-only server"
		}
		t.Errorf("write at %s %s outside any Patroni window (server %q): %s", rec.At.Format("15:04:05.000"), what, rec.Addr, rec.Err)
	}
}

// span is " (first..last)" of offsets, "" when none.
func span(offs []string) string {
	switch len(offs) {
	case 0:
		return ""
	case 1:
		return " (" + offs[0] + ")"
	}
	return " (" + offs[0] + ".." + offs[len(offs)-1] + ")"
}

// restarts: the services keep serving while the controller is down and
// converge when it is back; with etcd down the controller says stale and
// leaves HAProxy alone, and is ready again when etcd is back.
func (r *scenarioRig) restarts(t *testing.T) {
	const sc = "5 controller/etcd restart"
	if err := r.ctl.stop(); err != nil {
		t.Fatal(err)
	}
	old := r.leader(t, "pg-test")
	cand, start := r.switchOver(t, sc, "pg-test", old, "pg-test-3")
	err := waitFor(r.ctx, 90*time.Second, "primary service follows "+cand+" by health checks alone", func() (bool, string) {
		if ok, why := r.haproxy.onlyUp(r.ctx, "pg-test-primary", cand); !ok {
			return false, why
		}
		a, err := probe(r.ctx, svcAddr(testIP, portPrimary))
		if err != nil {
			return false, err.Error()
		}
		return !a.InRecovery && a.Addr == r.addrs[cand], fmt.Sprintf("primary service answered on %s", a.Addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.res.add(sc, "primary service follows the switchover with the controller down", "%s", dur(time.Since(start)))
	as, err := probeN(r.ctx, svcAddr(testIP, portReplica), 20)
	if err != nil {
		t.Errorf("replica service with the controller down: %v", err)
	}
	r.res.add(sc, "replica-service connections on the new primary, controller down", "%d of %d", addrCounts(as)[r.addrs[cand]], len(as))

	restart := time.Now()
	ctl, err := startController(r.top, r.cfg())
	if err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl
	err = waitFor(r.ctx, 90*time.Second, "restarted controller converges", func() (bool, string) {
		return r.clusterRight("pg-test", testIP, cand)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.res.add(sc, "restarted controller converged", "%s after its start", dur(time.Since(restart)))
	hctx, cancel := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel()
	if err := r.env.WaitHealthy(hctx, "pg-test"); err != nil {
		t.Fatal(err)
	}

	// etcd down: stale, HAProxy untouched, traffic flows.
	before, err := r.haproxy.layout(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopAt := time.Now()
	if err := r.env.StopEtcd(r.ctx); err != nil {
		t.Fatal(err)
	}
	var stale string
	err = waitFor(r.ctx, 60*time.Second, "status says stale", func() (bool, string) {
		st, err := r.status()
		if err != nil {
			return false, err.Error()
		}
		for _, d := range st.DCS {
			if d.Stale != "" && !st.Ready {
				stale = d.Stale
				return true, ""
			}
		}
		return false, fmt.Sprintf("ready %v, dcs %+v", st.Ready, st.DCS)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.res.add(sc, "status stale after etcd stopped", "%s (%s)", dur(time.Since(stopAt)), stale)
	for _, ip := range []string{testIP, duoIP} {
		err = waitFor(r.ctx, 30*time.Second, "replica service of "+ip+" answers with etcd down", func() (bool, string) {
			as, err := probeN(r.ctx, svcAddr(ip, portReplica), 3)
			if err != nil {
				return false, err.Error()
			}
			return true, fmt.Sprint(addrCounts(as))
		})
		if err != nil {
			t.Error(err)
		}
	}
	after, err := r.haproxy.layout(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("HAProxy backends changed while etcd was down:\nbefore %v\nafter  %v", before, after)
	}
	st, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range st.History {
		if e.At.After(stopAt) && e.Kind == "applied" {
			t.Errorf("controller applied while etcd was down: %+v", e)
		}
	}
	r.res.add(sc, "HAProxy backends while etcd down", "unchanged (%d servers), traffic flows", len(after))

	startAt := time.Now()
	if err := r.env.StartEtcd(r.ctx); err != nil {
		t.Fatal(err)
	}
	var leader string
	err = waitFor(r.ctx, 2*time.Minute, "status fresh and ready after etcd restart", func() (bool, string) {
		l, err := r.env.Leader(r.ctx, "pg-test")
		if err != nil || l == "" {
			return false, fmt.Sprintf("pg-test leader %q, %v", l, err)
		}
		st, err := r.status()
		if err != nil {
			return false, err.Error()
		}
		for _, d := range st.DCS {
			if d.Stale != "" {
				return false, d.Stale
			}
		}
		leader = l
		return readyWithLeader(st, "pg-test", l)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.res.add(sc, "ready again after etcd started", "%s (pg-test leader %s)", dur(time.Since(startAt)), leader)
	hctx2, cancel2 := context.WithTimeout(r.ctx, 3*time.Minute)
	defer cancel2()
	for _, c := range []string{"pg-test", "pg-duo"} {
		if err := r.env.WaitHealthy(hctx2, c); err != nil {
			t.Fatal(err)
		}
	}
	err = waitFor(r.ctx, 90*time.Second, "pg-test served right after etcd restart", func() (bool, string) {
		l, err := r.env.Leader(r.ctx, "pg-test")
		if err != nil {
			return false, err.Error()
		}
		return r.clusterRight("pg-test", testIP, l)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// memberOf names the member at addr (addr itself when unknown).
func (r *scenarioRig) memberOf(addr string) string {
	for m, a := range r.addrs {
		if a == addr {
			return m
		}
	}
	return addr
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// dataPlaneAPI hands the same HAProxy to a real Data Plane API (its reload
// script dumps server state, then reloads through the master socket), runs
// the controller with the API as its only target, and checks a switchover
// end to end with real traffic.
func (r *scenarioRig) dataPlaneAPI(t *testing.T, bin, version string) {
	sc := "7 switchover via Data Plane API " + version
	if err := r.ctl.stop(); err != nil {
		t.Fatal(err)
	}
	base := dpapitest.StartReal(t, dpapitest.Real{Bin: bin, Dir: t.TempDir(), ConfigPath: r.haproxy.Config,
		HAProxyBin: "/usr/sbin/haproxy", StatsSocket: r.haproxy.StatsSocket, MasterSocket: r.haproxy.MasterSocket,
		StateFile: r.haproxy.StateFile})
	cfg := r.cfg()
	cfg.Direct = nil
	cfg.DataPlaneAPI = []config.DataPlaneAPI{{URL: base}}
	ctl, err := startController(r.top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl
	old := r.leader(t, "pg-test")
	if err := waitFor(r.ctx, 90*time.Second, "pg-test served right through the API", func() (bool, string) {
		return r.clusterRight("pg-test", testIP, old)
	}); err != nil {
		t.Fatal(err)
	}
	cand, start := r.switchOver(t, sc, "pg-test", old)
	if err := waitFor(r.ctx, 90*time.Second, "pg-test served right after the switchover via the API", func() (bool, string) {
		return r.clusterRight("pg-test", testIP, cand)
	}); err != nil {
		t.Fatal(err)
	}
	r.res.add(sc, "HAProxy serving correctly", "%s", dur(time.Since(start)))
	r.reportApply(t, sc, "pg-test", start)
	st, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	if tg := st.Targets[0]; !tg.InSync || tg.StatePreserved == nil || !*tg.StatePreserved || tg.ReloadResult != "succeeded" {
		t.Errorf("Data Plane API target: %+v", tg)
	}
}

// leader returns cluster's current leader from the DCS.
func (r *scenarioRig) leader(t *testing.T, cluster string) string {
	t.Helper()
	old, err := r.env.Leader(r.ctx, cluster)
	if err != nil || old == "" {
		t.Fatalf("leader = %q, %v", old, err)
	}
	return old
}

// switchOver runs `patronictl switchover` from old to another member (not
// one of not), reports when the leader key moved, and returns the candidate
// and when the action started.
func (r *scenarioRig) switchOver(t *testing.T, sc, cluster, old string, not ...string) (string, time.Time) {
	t.Helper()
	cand := other(r.env.Members(cluster), append([]string{old}, not...)...)
	lw := watchLeader(r.ctx, r.env, cluster, old, time.Minute)
	start := time.Now()
	sw, err := r.env.Switchover(r.ctx, cluster, old, cand)
	if err != nil {
		t.Fatal(err)
	}
	r.reportLeader(t, sc, lw, start, old, sw)
	return cand, start
}

//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// readSession is a long-lived connection through a read service.
type readSession struct {
	svc  string
	conn *pgx.Conn
	addr string // where it landed
}

func openRead(ctx context.Context, svc, hostport string) (*readSession, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, svcDSN(hostport))
	if err != nil {
		return nil, fmt.Errorf("session to %s: %w", svc, err)
	}
	s := &readSession{svc: svc, conn: conn}
	s.addr, err = s.use(ctx)
	return s, err
}

func (s *readSession) use(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var addr string
	err := s.conn.QueryRow(cctx, "select host(inet_server_addr())").Scan(&addr)
	return addr, err
}

// admins reads the runtime admin states of one backend's servers.
func (r *haproxyRig) admins(ctx context.Context, backend string) (map[string]string, error) {
	text, err := r.RT.ShowServersState(ctx)
	if err != nil {
		return nil, err
	}
	st, err := haproxy.ParseServersState(text)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range st {
		if s.Backend == backend {
			out[s.Server] = haproxy.AdminWord(s.AdminSt)
		}
	}
	return out, nil
}

// TestTwinsSwitchover: the controller with `layout: twins` (direct driver)
// on real etcd, Patroni 3.0.2, PostgreSQL 15, pgbouncer and HAProxy 2.6.
// A switchover of pg-test is applied with runtime admin states only (the
// master's reload counter does not move), writes through the primary
// service are never misrouted, replica-service connections never land on
// the new primary, and long-lived sessions through the read services to the
// member whose role did not change survive the switchover. Then a kill -9
// of the new primary: the failover is applied without a reload either, and
// no write is misrouted.
//
// The direct driver runs it on a pg-test without pg_offline_query, so the
// offline service's backup twins track the replica service's normal twins
// (never flipped: checked to follow the roles); the API drivers on the
// demo's pg-test, whose offline twins are flipped.
func TestTwinsSwitchover(t *testing.T) {
	t.Run("direct", func(t *testing.T) { twinsSwitchover(t, "", "") })
	// Through each real Data Plane API build (runtime server endpoints).
	for _, api := range []struct{ name, env, want string }{
		{"v2", "DATAPLANEAPI_BIN", "2.9.x"},
		{"v3", "DATAPLANEAPI_V3_BIN", "3.x"},
	} {
		t.Run("dataplaneapi "+api.name, func(t *testing.T) {
			bin := os.Getenv(api.env)
			if bin == "" {
				t.Skip(api.env + " not set: no Data Plane API " + api.want + " build here; pkg/dataplaneapi's TestRealTwins covers " +
					"the driver when it is set. Set " + api.env + "=/path/to/dataplaneapi (" + api.want + ") to run this scenario")
			}
			twinsSwitchover(t, bin, api.name)
		})
	}
}

func twinsSwitchover(t *testing.T, apiBin, apiName string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pgTest := fastCluster()
	pgTest.NoOfflineQuery = apiBin == ""
	env := startEnv(t, ctx, pgTest)
	r := &scenarioRig{top: t, ctx: ctx, env: env, res: &results{}, addrs: env.MemberAddrs()}
	inv := filepath.Join(t.TempDir(), "pigsty.yml")
	if err := env.WriteInventory(inv); err != nil {
		t.Fatal(err)
	}
	r.haproxy = startHAProxy(t, ctx, inv)
	cfg := scenarioConfig(inv, env, r.haproxy)
	cfg.Direct[0].Layout = "twins"
	if apiBin != "" {
		base := dpapitest.StartReal(t, dpapitest.Real{Bin: apiBin, Dir: t.TempDir(), ConfigPath: r.haproxy.Config,
			HAProxyBin: "/usr/sbin/haproxy", StatsSocket: r.haproxy.StatsSocket, MasterSocket: r.haproxy.MasterSocket,
			StateFile: r.haproxy.StateFile})
		cfg.Direct = nil
		cfg.DataPlaneAPI = []config.DataPlaneAPI{{URL: base, Layout: "twins"}}
		t.Logf("driver: Data Plane API %s", apiName)
	}
	ctl, err := startController(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl
	if err := createWritesTable(ctx, env, "pg-test-1"); err != nil {
		t.Fatal(err)
	}

	// twinsRight: the controller is ready with leader, only it is up in the
	// primary backend, its backup twin is the active one in the replica
	// backend, and replica-service connections never land on it.
	// A dead member (its member key gone) has both twins inactive. The
	// backup twins track the primary backend's servers: active is admin
	// ready and UP (the tracked server's health), never flipped.
	twinsRight := func(leader string, dead ...string) (bool, string) {
		st, err := r.status()
		if err != nil {
			return false, err.Error()
		}
		if ok, why := readyWithLeader(st, "pg-test", leader); !ok {
			return false, why
		}
		if ok, why := r.haproxy.onlyUp(ctx, "pg-test-primary", leader); !ok {
			return false, why
		}
		adm, err := r.haproxy.admins(ctx, "pg-test-replica")
		if err != nil {
			return false, err.Error()
		}
		if len(adm) != 2*len(pgTest.Members) {
			return false, fmt.Sprintf("replica backend has %d servers, want %d twins: %v", len(adm), 2*len(pgTest.Members), adm)
		}
		rows, err := r.haproxy.servers(ctx, "pg-test-replica")
		if err != nil {
			return false, err.Error()
		}
		status := map[string]string{}
		for _, row := range rows {
			status[row.Name] = row.Status
		}
		for _, m := range pgTest.Members {
			n, b := adm[m.Name], adm[m.Name+".backup"]
			bs := status[m.Name+".backup"]
			bActive := b == "ready" && strings.HasPrefix(bs, "UP")
			if slices.Contains(dead, m.Name) {
				if n == "ready" || bActive {
					return false, fmt.Sprintf("dead member %s: normal twin %s, backup twin %s %s", m.Name, n, b, bs)
				}
				continue
			}
			if m.Name == leader && (n == "ready" || !bActive) {
				return false, fmt.Sprintf("leader %s: normal twin %s, backup twin %s %s", leader, n, b, bs)
			}
			if m.Name != leader && (n != "ready" || bActive) {
				return false, fmt.Sprintf("replica %s: normal twin %s, backup twin %s %s", m.Name, n, b, bs)
			}
		}
		as, err := probeN(ctx, svcAddr(testIP, portReplica), 6)
		if err != nil {
			return false, "replica service: " + err.Error()
		}
		for _, a := range as {
			if a.Addr == r.addrs[leader] || !a.InRecovery {
				return false, fmt.Sprintf("replica service answered on %s (in recovery %v)", a.Addr, a.InRecovery)
			}
		}
		if pgTest.NoOfflineQuery {
			// The offline service's backup twins track the replica
			// service's normal twins: active exactly on the live
			// replicas, with no flip of their own.
			off, err := r.haproxy.admins(ctx, "pg-test-offline")
			if err != nil {
				return false, err.Error()
			}
			for _, m := range pgTest.Members {
				want := m.Name != leader && !slices.Contains(dead, m.Name)
				if got := off[m.Name+".backup"] == "ready"; got != want {
					return false, fmt.Sprintf("offline backup twin of %s: admin %s, want active %v (all: %v)", m.Name, off[m.Name+".backup"], want, off)
				}
			}
		}
		_, ok, why := r.offlineAnswers(testIP)
		return ok, why
	}
	if err := waitFor(ctx, 90*time.Second, "initial convergence in the twin layout", func() (bool, string) { return twinsRight("pg-test-1") }); err != nil {
		t.Fatal(err)
	}
	if text, err := os.ReadFile(r.haproxy.Config); err != nil {
		t.Fatal(err)
	} else if tracks := strings.Contains(string(text), "track pg-test-replica/pg-test-2 "); tracks != pgTest.NoOfflineQuery {
		t.Fatalf("offline backup twins tracking the replica service: %v, want %v:\n%s", tracks, pgTest.NoOfflineQuery, text)
	}

	// Long-lived sessions through every read service (several through the
	// replica service so both replicas hold some), and the default service.
	var sessions []*readSession
	defer func() {
		for _, s := range sessions {
			_ = s.conn.Close(context.Background())
		}
	}()
	for _, sv := range []struct {
		name string
		port int
		n    int
	}{{"replica", portReplica, 6}, {"offline", portOffline, 2}, {"default", portDefault, 1}} {
		for i := 0; i < sv.n; i++ {
			s, err := openRead(ctx, sv.name, svcAddr(testIP, sv.port))
			if err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, s)
		}
	}
	r.writer = startWriter(svcAddr(testIP, portPrimary), 100*time.Millisecond)
	defer r.writer.stop()
	st0, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	proc0, err := r.haproxy.RT.ShowProc(ctx)
	if err != nil {
		t.Fatal(err)
	}

	const sc = "twins switchover pg-test"
	old, cand := "pg-test-1", "pg-test-2"
	start := time.Now()
	if _, err := env.Switchover(ctx, "pg-test", old, cand); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 90*time.Second, "pg-test served right after the switchover", func() (bool, string) { return twinsRight(cand) }); err != nil {
		t.Fatal(err)
	}
	r.windows = append(r.windows, window{Label: sc, Start: start, End: time.Now()})
	t.Logf("served right %s after the switchover began", dur(time.Since(start)))

	proc1, err := r.haproxy.RT.ShowProc(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st1, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	if proc1.Reloads != proc0.Reloads || reloads(st1) != reloads(st0) {
		t.Errorf("switchover reloaded HAProxy: master counter %d -> %d, controller reloads %d -> %d",
			proc0.Reloads, proc1.Reloads, reloads(st0), reloads(st1))
	}

	// Sessions to the member whose role did not change (pg-test-3) survive.
	survivors := 0
	for _, s := range sessions {
		_, err := s.use(ctx)
		unchanged := s.addr == r.addrs["pg-test-3"]
		t.Logf("session through %s on %s: after the switchover err=%v", s.svc, r.memberOf(s.addr), err)
		if unchanged && err != nil {
			t.Errorf("session through %s on %s (role unchanged) broke: %v", s.svc, r.memberOf(s.addr), err)
		}
		if unchanged && err == nil {
			survivors++
		}
	}
	if survivors == 0 {
		t.Errorf("no session landed on pg-test-3: nothing shown about survivors")
	}

	// kill -9 of the new primary: the failover is applied at runtime too,
	// and no write reaches a read-only server.
	const fsc = "twins kill -9 failover pg-test"
	lw := watchLeader(ctx, env, "pg-test", cand, 90*time.Second)
	fstart := time.Now()
	if err := env.KillMember(cand); err != nil {
		t.Fatalf("kill %s: %v", cand, err)
	}
	next, moved, err := lw.wait(fstart)
	if err != nil {
		r.windows = append(r.windows, window{Label: fsc, Start: fstart, End: time.Now()})
		t.Fatal(err)
	}
	err = waitFor(ctx, 90*time.Second, "pg-test served right after the kill -9 failover", func() (bool, string) { return twinsRight(next, cand) })
	r.windows = append(r.windows, window{Label: fsc, Start: fstart, End: time.Now(), LeaderAt: fstart.Add(moved)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of %s: leader key on %s after %s, served right after %s", cand, next, dur(moved), dur(time.Since(fstart)))
	proc2, err := r.haproxy.RT.ShowProc(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	if proc2.Reloads != proc0.Reloads || reloads(st2) != reloads(st0) {
		t.Errorf("kill -9 failover reloaded HAProxy: master counter %d -> %d, controller reloads %d -> %d",
			proc0.Reloads, proc2.Reloads, reloads(st0), reloads(st2))
	}

	recs := r.writer.stop()
	ws := countWrites(recs, r.windows, failMargin)
	t.Logf("writes ok %d, misrouted %d, failed %d (outside the switchover: %d/%d)", ws.OK, ws.Misrouted, ws.Failed, ws.MisroutedOutside, ws.FailedOutside)
	if ws.Misrouted != 0 {
		t.Errorf("%d writes reached a read-only server", ws.Misrouted)
	}
	if ws.FailedOutside != 0 {
		t.Errorf("%d writes failed outside the switchover", ws.FailedOutside)
	}
	if ws.OK < 20 {
		t.Errorf("only %d successful writes: the writer did not run", ws.OK)
	}
}

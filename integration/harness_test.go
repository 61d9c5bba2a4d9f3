//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/integration/harness"
)

// startEnv starts a harness env for t in a fresh base dir under /var/tmp
// (t.TempDir's 0700 parents are not traversable by postgres) and registers
// its Stop; on failure the tail of every Patroni log is printed.
func startEnv(t *testing.T, ctx context.Context, clusters ...harness.ClusterSpec) *harness.Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (Postgres and pgbouncer run as user postgres via setpriv); runs in CI's integration job and on the lab machines")
	}
	base, err := os.MkdirTemp("/var/tmp", "pgsvc-it-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keeping %s for inspection", base)
			return
		}
		_ = os.RemoveAll(base)
	})
	env, err := harness.Start(ctx, harness.Config{BaseDir: base, Clusters: clusters}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, cl := range clusters {
				for _, m := range cl.Members {
					b, _ := os.ReadFile(filepath.Join(base, m.Name, "patroni.log"))
					lines := strings.Split(string(b), "\n")
					if len(lines) > 40 {
						lines = lines[len(lines)-40:]
					}
					t.Logf("%s patroni.log tail:\n%s", m.Name, strings.Join(lines, "\n"))
				}
			}
		}
		if err := env.Stop(); err != nil {
			t.Errorf("cleanup stop: %v", err)
		}
	})
	return env
}

func fastCluster() harness.ClusterSpec {
	cl := harness.TestCluster()
	// Short DCS timings so a kill -9 failover takes seconds, not a minute.
	cl.TTL, cl.LoopWait, cl.RetryTimeout = 10, 2, 3
	return cl
}

// queryMember connects as dbuser_meta and reports whether the server is in
// recovery and which address it answers on.
func queryMember(ctx context.Context, dsn string) (inRecovery bool, addr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var user, db string
	err = conn.QueryRow(ctx, "SELECT current_user, current_database(), pg_is_in_recovery(), host(inet_server_addr())").
		Scan(&user, &db, &inRecovery, &addr)
	if err == nil && (user != harness.MetaUser || db != harness.MetaDB) {
		err = &unexpected{user: user, db: db}
	}
	return inRecovery, addr, err
}

type unexpected struct{ user, db string }

func (u *unexpected) Error() string { return "connected as " + u.user + " to " + u.db }

func TestHarnessLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 13*time.Minute)
	defer cancel()
	cl := fastCluster()
	env := startEnv(t, ctx, cl)

	leader, err := env.Leader(ctx, cl.Name)
	if err != nil || leader != "pg-test-1" {
		t.Fatalf("initial leader = %q, %v; want pg-test-1 (first member bootstraps)", leader, err)
	}

	t.Run("connect to every member directly and through pgbouncer", func(t *testing.T) {
		for _, m := range cl.Members {
			for _, port := range []int{harness.PgPort, harness.PgbouncerPort} {
				inRec, addr, err := queryMember(ctx, env.MetaDSN(m.Name, port))
				if err != nil {
					t.Errorf("%s:%d: %v", m.Name, port, err)
					continue
				}
				if want := m.Name != leader; inRec != want || addr != m.Addr {
					t.Errorf("%s:%d: in recovery %v on %s, want %v on %s", m.Name, port, inRec, addr, want, m.Addr)
				}
			}
		}
	})

	t.Run("switchover moves the leader key", func(t *testing.T) {
		res, err := env.Switchover(ctx, cl.Name, "pg-test-1", "pg-test-2")
		if err != nil {
			t.Fatalf("switchover: %v", err)
		}
		t.Logf("patronictl %v, leader key moved after %v", res.Command, res.LeaderMoved)
		if l, err := env.Leader(ctx, cl.Name); err != nil || l != "pg-test-2" {
			t.Fatalf("leader after switchover = %q, %v; want pg-test-2", l, err)
		}
		hctx, hcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer hcancel()
		if err := env.WaitHealthy(hctx, cl.Name); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("kill -9 of the primary fails over", func(t *testing.T) {
		old, err := env.Leader(ctx, cl.Name)
		if err != nil || old == "" {
			t.Fatalf("leader = %q, %v", old, err)
		}
		start := time.Now()
		if err := env.KillMember(old); err != nil {
			t.Fatalf("kill %s: %v", old, err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer wcancel()
		next, err := env.WaitLeader(wctx, cl.Name, old)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("leader %s -> %s in %v after kill -9", old, next, time.Since(start))
		if err := env.RestartMember(ctx, old); err != nil {
			t.Fatalf("restart %s: %v", old, err)
		}
		hctx, hcancel := context.WithTimeout(ctx, 4*time.Minute)
		defer hcancel()
		if err := env.WaitHealthy(hctx, cl.Name); err != nil {
			t.Fatalf("after restarting %s (pg_rewind): %v", old, err)
		}
		inRec, _, err := queryMember(ctx, env.MetaDSN(old, harness.PgbouncerPort))
		if err != nil || !inRec {
			t.Fatalf("%s through pgbouncer after rejoin: in recovery %v, %v; want a replica", old, inRec, err)
		}
	})

	t.Run("etcd restart on the same data dir", func(t *testing.T) {
		if err := env.StopEtcd(ctx); err != nil {
			t.Fatalf("stop etcd: %v", err)
		}
		if _, err := env.Leader(ctx, cl.Name); err == nil {
			t.Fatal("leader read succeeded while etcd is stopped")
		}
		if err := env.StartEtcd(ctx); err != nil {
			t.Fatalf("start etcd: %v", err)
		}
		// Patroni may demote for a moment when it cannot renew the leader
		// lease (no failsafe mode); either way a leader must come back.
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer wcancel()
		l, err := env.WaitLeader(wctx, cl.Name, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := env.WaitHealthy(wctx, cl.Name); err != nil {
			t.Fatal(err)
		}
		t.Logf("leader after etcd restart: %s", l)
	})

	t.Run("stop leaves no process behind", func(t *testing.T) {
		procs := env.Processes()
		// etcd, 3 Patroni, 3 pgbouncer, 3 postmasters.
		if len(procs) != 10 {
			t.Errorf("processes before stop = %v, want 10", procs)
		}
		if err := env.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		for _, p := range procs {
			if harness.Alive(p.PID) {
				t.Errorf("%s (pid %d) still alive after Stop", p.Name, p.PID)
			}
		}
		if err := env.Stop(); err != nil {
			t.Errorf("second stop: %v", err)
		}
		if left := env.Processes(); len(left) != 0 {
			t.Errorf("processes after stop = %v", left)
		}
		// Also catch anything the harness did not record, e.g. a second
		// postmaster: every one of our processes names the base dir.
		if left := processesNaming(env.Config().BaseDir); len(left) != 0 {
			t.Errorf("processes still naming %s: %v", env.Config().BaseDir, left)
		}
	})
}

// processesNaming lists live (non-zombie) PIDs whose command line contains s.
func processesNaming(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) && harness.Alive(pid) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func TestHarnessDuo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl := harness.DuoCluster()
	cl.TTL, cl.LoopWait, cl.RetryTimeout = 10, 2, 3
	env := startEnv(t, ctx, cl)

	t.Run("inventory marks the replica offline-capable", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "inventory.yml")
		if err := env.WriteInventory(path); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"127.0.0.21: { pg_seq: 1, pg_role: primary }",
			"127.0.0.22: { pg_seq: 2, pg_role: replica, pg_offline_query: true }",
			"pg_cluster: pg-duo",
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("inventory lacks %q:\n%s", want, b)
			}
		}
	})

	t.Run("switchover and back", func(t *testing.T) {
		for _, step := range [][2]string{{"pg-duo-1", "pg-duo-2"}, {"pg-duo-2", "pg-duo-1"}} {
			if _, err := env.Switchover(ctx, cl.Name, step[0], step[1]); err != nil {
				t.Fatal(err)
			}
			hctx, hcancel := context.WithTimeout(ctx, 3*time.Minute)
			err := env.WaitHealthy(hctx, cl.Name)
			hcancel()
			if err != nil {
				t.Fatal(err)
			}
			inRec, _, err := queryMember(ctx, env.MetaDSN(step[0], harness.PgbouncerPort))
			if err != nil || !inRec {
				t.Fatalf("old leader %s through pgbouncer: in recovery %v, %v; want a replica", step[0], inRec, err)
			}
		}
	})
}

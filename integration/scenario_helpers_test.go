//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/integration/harness"
	"github.com/pgsvc/pgsvc/pkg/app"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// Service ports of Pigsty's default services (bound on each cluster's ServiceIP).
const (
	portPrimary = 5433
	portReplica = 5434
	portDefault = 5436
	portOffline = 5438
)

// pollEvery is how often the scenario waits re-check their condition.
const pollEvery = 200 * time.Millisecond

// svcDSN is a pgx URL for dbuser_meta on a service address. Services may end
// at pgbouncer in transaction mode, so every query uses the simple protocol.
func svcDSN(hostport string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable&connect_timeout=3&default_query_exec_mode=simple_protocol",
		harness.MetaUser, harness.MetaPassword, hostport, harness.MetaDB)
}

func svcAddr(ip string, port int) string { return fmt.Sprintf("%s:%d", ip, port) }

// answer is what one fresh connection through a service saw.
type answer struct {
	InRecovery bool
	Addr       string
}

// probe opens a fresh connection to hostport and asks the server whether it
// is in recovery and which address it answers on. Through pgbouncer's
// transaction pooling one simple-protocol statement is one transaction, so
// both values come from the same server.
func probe(ctx context.Context, hostport string) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, svcDSN(hostport))
	if err != nil {
		return answer{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var a answer
	err = conn.QueryRow(ctx, "select pg_is_in_recovery(), host(inet_server_addr())").Scan(&a.InRecovery, &a.Addr)
	return a, err
}

// probeN opens n fresh connections in turn and returns their answers; the
// first error ends it.
func probeN(ctx context.Context, hostport string, n int) ([]answer, error) {
	out := make([]answer, 0, n)
	for i := 0; i < n; i++ {
		a, err := probe(ctx, hostport)
		if err != nil {
			return out, fmt.Errorf("connection %d to %s: %w", i+1, hostport, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// addrCounts summarizes answers as "addr(ro|rw)=count" sorted.
func addrCounts(as []answer) map[string]int {
	m := map[string]int{}
	for _, a := range as {
		m[a.Addr]++
	}
	return m
}

// waitFor polls cond every pollEvery until it reports true or timeout
// passes; cond's string says why it is not there yet and ends up in the error.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %v (last: %s)", what, timeout, last)
		case <-time.After(pollEvery):
		}
	}
}

// ---------------------------------------------------------------- HAProxy

// haproxyRig is the test's master-worker HAProxy and the files the direct
// driver owns.
type haproxyRig struct {
	Dir, Config, StatsSocket, MasterSocket, StateFile, PIDFile string
	Proc                                                       *haproxy.Process
	RT                                                         *haproxy.Runtime
}

// startHAProxy renders the inventory-role plan (what HAProxy would serve
// before the controller ever ran) into the controller's config file and
// starts HAProxy on it. Stop is registered with t.Cleanup.
func startHAProxy(t *testing.T, ctx context.Context, inventory string) *haproxyRig {
	t.Helper()
	dir := t.TempDir()
	r := &haproxyRig{
		Dir: dir, Config: filepath.Join(dir, "haproxy.cfg"), StatsSocket: filepath.Join(dir, "admin.sock"),
		MasterSocket: filepath.Join(dir, "master.sock"), StateFile: filepath.Join(dir, "server-state"),
		PIDFile: filepath.Join(dir, "haproxy.pid"),
	}
	inv, err := topology.Load(inventory)
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	p, err := plan.Compute(inv, nil, plan.Options{})
	if err != nil {
		t.Fatalf("inventory plan: %v", err)
	}
	var svcs []services.Service
	for _, c := range p.Clusters {
		svcs = append(svcs, c.Services...)
	}
	cfg := haproxycfg.Render(svcs, haproxycfg.Options{StatsSocket: r.StatsSocket, ServerStateFile: r.StateFile,
		Maxconn: 8000, NoStrictLimits: true})
	if err := os.WriteFile(r.Config, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	proc, err := haproxy.StartProcess(sctx, "haproxy", r.Config, r.MasterSocket, r.PIDFile)
	if err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	r.Proc = proc
	r.RT = &haproxy.Runtime{Socket: r.StatsSocket, MasterSocket: r.MasterSocket}
	t.Cleanup(func() {
		if err := proc.Stop(); err != nil {
			t.Errorf("stop haproxy: %v", err)
		}
	})
	return r
}

// servers returns the server rows of one backend.
func (r *haproxyRig) servers(ctx context.Context, backend string) ([]haproxy.StatRow, error) {
	rows, err := r.RT.ShowStat(ctx)
	if err != nil {
		return nil, err
	}
	var out []haproxy.StatRow
	for _, row := range rows {
		if row.Type == haproxy.TypeServer && row.Proxy == backend {
			out = append(out, row)
		}
	}
	return out, nil
}

// layout is every server of every backend as "backend/server[ backup]",
// sorted: the membership the controller decides, without health states.
func (r *haproxyRig) layout(ctx context.Context) ([]string, error) {
	rows, err := r.RT.ShowStat(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, row := range rows {
		if row.Type != haproxy.TypeServer {
			continue
		}
		s := row.Proxy + "/" + row.Name
		if row.Backup {
			s += " backup"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// describe is a one-line view of a backend's servers for error messages.
func describe(rows []haproxy.StatRow) string {
	var parts []string
	for _, r := range rows {
		b := ""
		if r.Backup {
			b = ",bck"
		}
		parts = append(parts, fmt.Sprintf("%s=%s%s", r.Name, r.Status, b))
	}
	return strings.Join(parts, " ")
}

// onlyUp reports whether exactly want is up in backend.
func (r *haproxyRig) onlyUp(ctx context.Context, backend, want string) (bool, string) {
	rows, err := r.servers(ctx, backend)
	if err != nil {
		return false, err.Error()
	}
	var up []string
	for _, row := range rows {
		if row.Up() {
			up = append(up, row.Name)
		}
	}
	if len(up) == 1 && up[0] == want {
		return true, ""
	}
	return false, fmt.Sprintf("%s: want only %s up: %s", backend, want, describe(rows))
}

// server returns one server row of backend; false and why when absent.
func (r *haproxyRig) server(ctx context.Context, backend, name string) (haproxy.StatRow, bool, string) {
	rows, err := r.servers(ctx, backend)
	if err != nil {
		return haproxy.StatRow{}, false, err.Error()
	}
	for _, row := range rows {
		if row.Name == name {
			return row, true, ""
		}
	}
	return haproxy.StatRow{}, false, fmt.Sprintf("%s has no server %s: %s", backend, name, describe(rows))
}

// ------------------------------------------------------------- controller

// controllerRun is one in-process controller (app.Serve).
type controllerRun struct {
	cancel context.CancelFunc
	done   chan error
	Addr   string
}

// scenarioConfig is the controller configuration for the rig.
func scenarioConfig(inventory string, env *harness.Env, r *haproxyRig) *config.Config {
	cfg := &config.Config{
		Inventory: inventory,
		Listen:    "127.0.0.1:0",
		Etcd:      config.Etcd{Endpoints: env.EtcdEndpoints()},
		Direct: []config.Direct{{
			ConfigPath: r.Config, StatsSocket: r.StatsSocket, MasterSocket: r.MasterSocket,
			ServerStateFile: r.StateFile, HAProxyBin: "haproxy", Maxconn: 8000, NoStrictLimits: true,
		}},
	}
	cfg.Controller.Debounce.Duration = 20 * time.Millisecond
	// The watcher probes etcd every 2 s; 5 s says "stale" soon after etcd
	// stops without flapping while it runs.
	cfg.Controller.StaleAfter.Duration = 5 * time.Second
	cfg.Controller.HistorySize = 1000
	cfg.ApplyDefaults()
	return cfg
}

// startController runs app.Serve until stop or the end of top (the
// top-level test, so a controller started inside a subtest outlives it).
func startController(top *testing.T, cfg *config.Config) (*controllerRun, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &controllerRun{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	log := zaptest.NewLogger(top, zaptest.Level(zap.InfoLevel)).Named("controller")
	go func() { c.done <- app.Serve(ctx, cfg, log, ready) }()
	top.Cleanup(func() {
		if err := c.stop(); err != nil {
			top.Errorf("cleanup: %v", err)
		}
	})
	select {
	case c.Addr = <-ready:
		return c, nil
	case err := <-c.done:
		c.cancel = nil
		return nil, fmt.Errorf("controller: %w", err)
	case <-time.After(30 * time.Second):
		_ = c.stop()
		return nil, errors.New("controller did not listen within 30s")
	}
}

// stop cancels Serve and waits for it; stopping twice is fine.
func (c *controllerRun) stop() error {
	if c == nil || c.cancel == nil {
		return nil
	}
	c.cancel()
	c.cancel = nil
	select {
	case err := <-c.done:
		if err != nil {
			return fmt.Errorf("controller Serve: %w", err)
		}
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("controller Serve did not return within 20s of cancel")
	}
}

var statusClient = &http.Client{Timeout: 3 * time.Second}

// status fetches GET /status.
func (c *controllerRun) status(ctx context.Context) (controller.Status, error) {
	var st controller.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// clusterLeader is the leader the controller's plan has for cluster.
func clusterLeader(st controller.Status, cluster string) string {
	for _, c := range st.Clusters {
		if c.Name == cluster {
			return c.Leader
		}
	}
	return ""
}

// readyWithLeader reports whether the controller is ready, every target in
// sync, and its plan has leader for cluster.
func readyWithLeader(st controller.Status, cluster, leader string) (bool, string) {
	if !st.Ready {
		return false, fmt.Sprintf("not ready: %v", st.NotReady)
	}
	for _, tg := range st.Targets {
		if !tg.InSync {
			return false, fmt.Sprintf("target %s %s (%s)", tg.Name, tg.State, tg.LastError)
		}
	}
	if l := clusterLeader(st, cluster); l != leader {
		return false, fmt.Sprintf("plan leader of %s is %q, want %q", cluster, l, leader)
	}
	return true, ""
}

// firstApply returns the first successful apply after since that changed
// one of cluster's backends.
func firstApply(st controller.Status, cluster string, since time.Time) (controller.Event, bool) {
	for _, e := range st.History {
		if e.Kind != "applied" || e.At.Before(since) {
			continue
		}
		for _, ch := range e.Changes {
			if strings.HasPrefix(ch.Backend, cluster+"-") {
				return e, true
			}
		}
	}
	return controller.Event{}, false
}

// reloads counts the applies in the history that reloaded HAProxy.
func reloads(st controller.Status) int {
	n := 0
	for _, e := range st.History {
		if e.Kind == "applied" && e.Reloaded {
			n++
		}
	}
	return n
}

// ----------------------------------------------------------------- writer

// writeRec is one write attempt through the primary service.
type writeRec struct {
	At        time.Time
	Took      time.Duration
	Addr      string
	Misrouted bool // SQLSTATE 25006: the server was read-only
	Err       string
}

// writer inserts a row through a primary service over a fresh connection
// every interval (so each write is routed by HAProxy anew) until stopped.
type writer struct {
	hostport string
	mu       sync.Mutex
	recs     []writeRec
	cancel   context.CancelFunc
	done     chan struct{}
}

const writesTable = "pgsvc_scenario_writes"

func startWriter(hostport string, every time.Duration) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{hostport: hostport, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; ; n++ {
			rec := w.write(ctx, n)
			if ctx.Err() != nil {
				return
			}
			w.mu.Lock()
			w.recs = append(w.recs, rec)
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *writer) write(ctx context.Context, n int) writeRec {
	rec := writeRec{At: time.Now()}
	defer func() { rec.Took = time.Since(rec.At) }()
	cctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, svcDSN(w.hostport))
	if err == nil {
		defer conn.Close(context.WithoutCancel(cctx))
		err = conn.QueryRow(cctx, "insert into "+writesTable+" (n) values ($1) returning host(inet_server_addr())", n).Scan(&rec.Addr)
	}
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "25006" {
			rec.Misrouted = true
			// A read still works there: say which server took the write.
			if qerr := conn.QueryRow(cctx, "select host(inet_server_addr())").Scan(&rec.Addr); qerr != nil {
				rec.Addr = "?"
			}
		}
		rec.Err = err.Error()
	}
	rec.Took = time.Since(rec.At)
	return rec
}

// stop ends the loop and returns every record.
func (w *writer) stop() []writeRec {
	w.cancel()
	<-w.done
	return w.snapshot()
}

func (w *writer) snapshot() []writeRec {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]writeRec(nil), w.recs...)
}

// window is a span in which a Patroni action may make writes fail: from the
// action's start to HAProxy serving the new leader. LeaderAt and AppliedAt
// (zero when unknown) place the leader key's move and the controller's
// apply in it.
type window struct {
	Label               string
	Start, End          time.Time
	LeaderAt, AppliedAt time.Time
}

func (w window) covers(r writeRec, margin time.Duration) bool {
	end := r.At.Add(r.Took)
	return !end.Before(w.Start) && !r.At.After(w.End.Add(margin))
}

// writeStats counts records; Outside are the failed or misrouted writes no
// window covers.
type writeStats struct {
	OK, Misrouted, Failed           int
	MisroutedOutside, FailedOutside int
	Outside                         []writeRec
}

func countWrites(recs []writeRec, windows []window, margin time.Duration) writeStats {
	var s writeStats
	for _, r := range recs {
		if r.Err == "" {
			s.OK++
			continue
		}
		if r.Misrouted {
			s.Misrouted++
		} else {
			s.Failed++
		}
		inside := false
		for _, w := range windows {
			if w.covers(r, margin) {
				inside = true
				break
			}
		}
		if inside {
			continue
		}
		s.Outside = append(s.Outside, r)
		if r.Misrouted {
			s.MisroutedOutside++
		} else {
			s.FailedOutside++
		}
	}
	return s
}

// ---------------------------------------------------------------- session

// session is a long-lived connection through a service, used after reloads
// to show that existing sessions survive them.
type session struct {
	hostport string
	conn     *pgx.Conn
	uses     int
}

func openSession(ctx context.Context, hostport string) (*session, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, svcDSN(hostport))
	if err != nil {
		return nil, fmt.Errorf("session to %s: %w", hostport, err)
	}
	return &session{hostport: hostport, conn: conn}, nil
}

// use writes one row on the session and returns the server address.
func (s *session) use(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var addr string
	err := s.conn.QueryRow(cctx, "insert into "+writesTable+" (n) values ($1) returning host(inet_server_addr())", -1-s.uses).Scan(&addr)
	if err != nil {
		return "", fmt.Errorf("long-lived session to %s (use %d): %w", s.hostport, s.uses+1, err)
	}
	s.uses++
	return addr, nil
}

func (s *session) close() {
	if s != nil && s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = s.conn.Close(ctx)
	}
}

// createWritesTable creates the writers' table on a cluster's leader,
// directly (not through a service).
func createWritesTable(ctx context.Context, env *harness.Env, leader string) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, env.MetaDSN(leader, harness.PgPort))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", leader, err)
	}
	defer conn.Close(context.WithoutCancel(cctx))
	_, err = conn.Exec(cctx, "create table if not exists "+writesTable+" (id bigserial primary key, n int, at timestamptz default now())")
	if err != nil {
		return fmt.Errorf("create %s on %s: %w", writesTable, leader, err)
	}
	return nil
}

// ---------------------------------------------------------------- results

// results collects the RESULT lines of every scenario for the summary file.
type results struct {
	mu   sync.Mutex
	rows [][3]string // scenario, measure, value
}

// add prints one RESULT line (to stdout, so it starts the line) and keeps it.
func (r *results) add(scenario, measure, format string, a ...any) {
	v := fmt.Sprintf(format, a...)
	fmt.Printf("RESULT %s | %s | %s\n", scenario, measure, v)
	r.mu.Lock()
	r.rows = append(r.rows, [3]string{scenario, measure, v})
	r.mu.Unlock()
}

// dur formats a measured duration for the table.
func dur(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// markdown renders the summary table.
func (r *results) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("# pgsvc end-to-end scenarios\n\n")
	fmt.Fprintf(&b, "Measured %s on real etcd, Patroni 3.0.2, PostgreSQL 15, pgbouncer and HAProxy 2.6 "+
		"(ttl 10, loop_wait 2, retry_timeout 3; direct HAProxy driver).\n\n", time.Now().UTC().Format(time.RFC3339))
	b.WriteString("| scenario | measure | value |\n| --- | --- | --- |\n")
	for _, row := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row[0], row[1], strings.ReplaceAll(row[2], "|", "\\|"))
	}
	return b.String()
}

// ------------------------------------------------------------ leader watch

// leaderWatch records when a cluster's leader key first names a member other
// than the one it had when the watch started. patronictl returns well after
// the key moved, so its run time is no measure of that.
type leaderWatch struct {
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{}
	leader string
	at     time.Time
	err    error
}

// watchLeader polls the leader key every 50 ms until it names someone other
// than from (and not nobody), or timeout.
func watchLeader(ctx context.Context, env *harness.Env, cluster, from string, timeout time.Duration) *leaderWatch {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	w := &leaderWatch{start: time.Now(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		last := ""
		for {
			l, err := env.Leader(ctx, cluster)
			if err == nil && l != "" && l != from {
				w.leader, w.at = l, time.Now()
				return
			}
			if err == nil {
				last = l
			}
			select {
			case <-ctx.Done():
				w.err = fmt.Errorf("leader of %s still %q after %v: %w", cluster, last, timeout, ctx.Err())
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// wait returns the new leader and the time from start (the caller's action
// start) to the key naming it.
func (w *leaderWatch) wait(start time.Time) (string, time.Duration, error) {
	<-w.done
	w.cancel()
	if w.err != nil {
		return "", 0, w.err
	}
	return w.leader, w.at.Sub(start), nil
}

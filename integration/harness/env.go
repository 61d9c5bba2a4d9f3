package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// markerFile marks a directory as created by this harness, so tooling may
// safely remove it (and nothing else) later.
const markerFile = ".pgsvc-harness"

// Env is a running stack started by Start (or re-attached by Attach). Its
// methods are safe for concurrent use.
type Env struct {
	cfg Config
	log *zap.Logger

	mu      sync.Mutex
	etcd    *proc
	members []*member
	cli     *clientv3.Client
}

type member struct {
	cluster string
	spec    MemberSpec
	paths   memberPaths
	patroni *proc
	bouncer *proc
}

// Start runs etcd, then every cluster: the first member alone until it holds
// the leader key (so the inventory's primary is the bootstrap primary), then
// the others, and returns once every member runs and every replica streams.
// On error it stops whatever it had started. The processes are detached from
// the caller: they outlive it unless Stop is called.
func Start(ctx context.Context, cfg Config, log *zap.Logger) (*Env, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("harness must run as root: it starts Postgres and pgbouncer as user postgres through setpriv")
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	uid, gid, err := postgresIDs()
	if err != nil {
		return nil, err
	}
	if err := prepareBaseDir(cfg.BaseDir, uid, gid); err != nil {
		return nil, err
	}
	if err := checkPortsFree(cfg); err != nil {
		return nil, err
	}
	e := &Env{cfg: cfg, log: log}
	for _, cl := range cfg.Clusters {
		for _, m := range cl.Members {
			e.members = append(e.members, &member{cluster: cl.Name, spec: m, paths: pathsFor(cfg.BaseDir, m.Name)})
		}
	}
	if err := e.start(ctx, uid, gid); err != nil {
		if serr := e.Stop(); serr != nil {
			log.Warn("stop after failed start", zap.Error(serr))
		}
		return nil, err
	}
	return e, nil
}

func (e *Env) start(ctx context.Context, uid, gid int) error {
	for _, cl := range e.cfg.Clusters {
		if err := e.writeClusterFiles(cl, uid, gid); err != nil {
			return err
		}
	}
	if err := e.StartEtcd(ctx); err != nil {
		return err
	}
	// First members of all clusters, then wait for each to lead.
	for _, cl := range e.cfg.Clusters {
		if err := e.startMember(e.member(cl.Members[0].Name)); err != nil {
			return err
		}
	}
	for _, cl := range e.cfg.Clusters {
		first := cl.Members[0].Name
		wctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
		_, err := e.waitLeader(wctx, cl.Name, func(l string) bool { return l == first })
		cancel()
		if err != nil {
			return fmt.Errorf("cluster %s: bootstrap on %s: %w\n%s", cl.Name, first,
				err, tail(e.member(first).paths.PatroniLog, 30))
		}
		e.log.Info("bootstrapped", zap.String("cluster", cl.Name), zap.String("leader", first))
	}
	for _, cl := range e.cfg.Clusters {
		for _, m := range cl.Members[1:] {
			if err := e.startMember(e.member(m.Name)); err != nil {
				return err
			}
		}
	}
	for _, cl := range e.cfg.Clusters {
		wctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
		err := e.WaitHealthy(wctx, cl.Name)
		cancel()
		if err != nil {
			return err
		}
		for _, m := range cl.Members {
			if err := waitListening(ctx, net.JoinHostPort(m.Addr, strconv.Itoa(PgbouncerPort)), 30*time.Second); err != nil {
				return fmt.Errorf("pgbouncer of %s: %w\n%s", m.Name, err, tail(e.member(m.Name).paths.Bouncer, 20))
			}
		}
		e.log.Info("cluster healthy", zap.String("cluster", cl.Name))
	}
	return nil
}

func (e *Env) writeClusterFiles(cl ClusterSpec, uid, gid int) error {
	script := filepath.Join(e.cfg.BaseDir, cl.Name+"-post-bootstrap.sh")
	if err := writeOwned(script, []byte(postBootstrapScript()), 0o755, uid, gid); err != nil {
		return err
	}
	for _, ms := range cl.Members {
		p := pathsFor(e.cfg.BaseDir, ms.Name)
		for _, d := range []string{p.Dir, p.Socket, p.BouncerDir} {
			if err := mkdirOwned(d, 0o700, uid, gid); err != nil {
				return err
			}
		}
		pc, err := patroniConfig(e.cfg, cl, ms, script)
		if err != nil {
			return err
		}
		if err := writeOwned(p.PatroniCfg, pc, 0o600, uid, gid); err != nil {
			return err
		}
		if err := writeOwned(p.BouncerCfg, []byte(pgbouncerConfig(e.cfg.BaseDir, ms)), 0o600, uid, gid); err != nil {
			return err
		}
		if err := writeOwned(p.BouncerUsers, []byte(pgbouncerUserlist()), 0o600, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

func (e *Env) member(name string) *member {
	for _, m := range e.members {
		if m.spec.Name == name {
			return m
		}
	}
	return nil
}

func (e *Env) mustMember(name string) (*member, error) {
	if m := e.member(name); m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("unknown member %q", name)
}

// startMember starts the member's Patroni, and its pgbouncer unless that
// still runs.
func (e *Env) startMember(m *member) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !m.patroni.alive() {
		p, err := startProc(m.spec.Name+"/patroni", asPostgres("/usr/bin/patroni", m.paths.PatroniCfg), m.paths.PatroniLog)
		if err != nil {
			return err
		}
		m.patroni = p
		e.log.Info("started patroni", zap.String("member", m.spec.Name), zap.Int("pid", p.PID))
	}
	if !m.bouncer.alive() {
		p, err := startProc(m.spec.Name+"/pgbouncer", asPostgres("/usr/sbin/pgbouncer", m.paths.BouncerCfg), m.paths.Bouncer)
		if err != nil {
			return err
		}
		m.bouncer = p
		e.log.Info("started pgbouncer", zap.String("member", m.spec.Name), zap.Int("pid", p.PID))
	}
	return nil
}

// StartEtcd starts etcd (again) on the same data directory and waits until
// it answers. It is a no-op while etcd runs.
func (e *Env) StartEtcd(ctx context.Context) error {
	e.mu.Lock()
	if e.etcd.alive() {
		e.mu.Unlock()
		return nil
	}
	dir := filepath.Join(e.cfg.BaseDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.mu.Unlock()
		return fmt.Errorf("etcd dir: %w", err)
	}
	client, peer := "http://"+e.cfg.EtcdClient, "http://"+e.cfg.EtcdPeer
	argv := []string{"/usr/bin/etcd", "--name", "pgsvc",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "pgsvc=" + peer, "--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "warn"}
	p, err := startProc("etcd", argv, filepath.Join(dir, "etcd.log"))
	if err != nil {
		e.mu.Unlock()
		return err
	}
	e.etcd = p
	e.mu.Unlock()
	e.log.Info("started etcd", zap.Int("pid", p.PID), zap.String("client", client))

	wctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
	defer cancel()
	cli, err := e.client()
	if err != nil {
		return err
	}
	for {
		rctx, rcancel := context.WithTimeout(wctx, 2*time.Second)
		_, err := cli.Get(rctx, "health")
		rcancel()
		if err == nil {
			return nil
		}
		if !p.alive() {
			return fmt.Errorf("etcd exited during start:\n%s", tail(p.Log, 20))
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("etcd at %s not ready: %w (last error: %v)", client, wctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StopEtcd stops etcd (SIGTERM, then SIGKILL after the stop timeout) and
// keeps its data directory for StartEtcd.
func (e *Env) StopEtcd(ctx context.Context) error {
	e.mu.Lock()
	p := e.etcd
	e.mu.Unlock()
	return p.stop(ctx, syscall.SIGTERM, e.cfg.StopTimeout)
}

// client returns the etcd client, created on first use. clientv3.New does
// not block, so this works while etcd is down too.
func (e *Env) client() (*clientv3.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cli != nil {
		return e.cli, nil
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   e.EtcdEndpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      e.log.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	e.cli = cli
	return cli, nil
}

// Stop stops everything this Env started, by PID: all Patronis (SIGTERM,
// which also stops their Postgres), any postmaster left behind by a killed
// Patroni, the pgbouncers, then etcd. It is safe to call more than once and
// on a partly started Env.
func (e *Env) Stop() error {
	ctx := context.Background()
	grace := e.cfg.StopTimeout
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	addErr := func(err error) {
		if err != nil {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		}
	}
	e.mu.Lock()
	members := append([]*member(nil), e.members...)
	e.mu.Unlock()
	for _, m := range members {
		e.mu.Lock()
		pat := m.patroni
		e.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			addErr(pat.stop(ctx, syscall.SIGTERM, grace))
			// A Patroni that was killed (or did not stop in time) leaves
			// its postmaster running.
			pm, err := postmasterProc(m.spec.Name, m.paths.Data)
			addErr(err)
			// SIGINT is Postgres' fast shutdown; SIGTERM would wait for clients.
			addErr(pm.stop(ctx, syscall.SIGINT, 30*time.Second))
		}()
	}
	wg.Wait()
	for _, m := range members {
		e.mu.Lock()
		b := m.bouncer
		e.mu.Unlock()
		addErr(b.stop(ctx, syscall.SIGTERM, 10*time.Second))
	}
	e.mu.Lock()
	cli := e.cli
	e.cli = nil
	e.mu.Unlock()
	if cli != nil {
		addErr(cli.Close())
	}
	addErr(e.StopEtcd(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

// KillMember kill -9s the member's Patroni and its postmaster, as a crash
// would, and waits until both are gone. Its pgbouncer keeps running.
func (e *Env) KillMember(name string) error {
	m, err := e.mustMember(name)
	if err != nil {
		return err
	}
	pm, err := postmasterProc(name, m.paths.Data)
	if err != nil {
		return err
	}
	e.mu.Lock()
	pat := m.patroni
	e.mu.Unlock()
	// Patroni first, so it cannot restart the postmaster in between.
	if err := pat.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if err := pm.signal(syscall.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pat.wait(ctx); err != nil {
		return err
	}
	return pm.wait(ctx)
}

// RestartMember stops the member's Patroni if it runs (gracefully), then
// starts it again. It returns once the process is started; use WaitHealthy
// to wait for it to rejoin.
func (e *Env) RestartMember(ctx context.Context, name string) error {
	m, err := e.mustMember(name)
	if err != nil {
		return err
	}
	e.mu.Lock()
	pat := m.patroni
	e.mu.Unlock()
	if err := pat.stop(ctx, syscall.SIGTERM, e.cfg.StopTimeout); err != nil {
		return err
	}
	return e.startMember(m)
}

// PatroniConfigPath is the Patroni YAML of a member ("" for an unknown one).
func (e *Env) PatroniConfigPath(member string) string {
	if m := e.member(member); m != nil {
		return m.paths.PatroniCfg
	}
	return ""
}

// DataDir is the PostgreSQL data directory of a member ("" for an unknown one).
func (e *Env) DataDir(member string) string {
	if m := e.member(member); m != nil {
		return m.paths.Data
	}
	return ""
}

// EtcdEndpoints are the etcd client URLs.
func (e *Env) EtcdEndpoints() []string { return []string{"http://" + e.cfg.EtcdClient} }

// Config is the effective configuration, defaults filled in.
func (e *Env) Config() Config { return e.cfg }

// Members are the members of a cluster in spec order (nil for an unknown cluster).
func (e *Env) Members(cluster string) []MemberSpec {
	for _, cl := range e.cfg.Clusters {
		if cl.Name == cluster {
			return append([]MemberSpec(nil), cl.Members...)
		}
	}
	return nil
}

// MemberAddrs maps each member name of every cluster to its address.
func (e *Env) MemberAddrs() map[string]string {
	out := map[string]string{}
	for _, m := range e.members {
		out[m.spec.Name] = m.spec.Addr
	}
	return out
}

// MetaDSN is a pgx/libpq URL for dbuser_meta on database meta at a member's
// port (PgPort or PgbouncerPort). Through pgbouncer (transaction pooling)
// it selects the simple query protocol.
func (e *Env) MetaDSN(member string, port int) string {
	addr := ""
	if m := e.member(member); m != nil {
		addr = m.spec.Addr
	}
	dsn := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable&connect_timeout=5",
		MetaUser, MetaPassword, net.JoinHostPort(addr, strconv.Itoa(port)), MetaDB)
	if port == PgbouncerPort {
		dsn += "&default_query_exec_mode=simple_protocol"
	}
	return dsn
}

// Process is one process of the Env.
type Process struct {
	Name string
	PID  int
}

// Processes lists the live processes of the Env, including postmasters
// (found from postmaster.pid) that Patroni started.
func (e *Env) Processes() []Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Process
	add := func(p *proc) {
		if p.alive() {
			out = append(out, Process{Name: p.Name, PID: p.PID})
		}
	}
	add(e.etcd)
	for _, m := range e.members {
		add(m.patroni)
		add(m.bouncer)
		if pm, _ := postmasterProc(m.spec.Name, m.paths.Data); pm != nil {
			add(pm)
		}
	}
	return out
}

// Alive reports whether pid runs (not counting zombies).
func Alive(pid int) bool {
	_, state, err := procStat(pid)
	return err == nil && state != 'Z'
}

func checkTools() error {
	for _, t := range []string{"/usr/bin/etcd", "/usr/bin/patroni", "/usr/bin/patronictl",
		"/usr/sbin/pgbouncer", filepath.Join(PgBinDir, "postgres"), filepath.Join(PgBinDir, "psql")} {
		if _, err := os.Stat(t); err != nil {
			return fmt.Errorf("%s is missing (run scripts/install-deps.sh): %w", t, err)
		}
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		return fmt.Errorf("setpriv is missing (util-linux): %w", err)
	}
	return nil
}

func postgresIDs() (int, int, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("user postgres (installed by postgresql-common): %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, fmt.Errorf("user postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, fmt.Errorf("user postgres gid %q: %w", u.Gid, err)
	}
	return uid, gid, nil
}

// prepareBaseDir creates an empty base dir owned by postgres, after checking
// that postgres can reach it.
func prepareBaseDir(dir string, uid, gid int) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("base dir %s is not empty: remove it or use another", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("base dir: %w", err)
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("base dir ancestor: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm()&0o001 == 0 && !(ok && int(st.Uid) == uid) {
			return fmt.Errorf("base dir %s: ancestor %s (mode %o) is not traversable by postgres", dir, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("base dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("base dir: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, markerFile), []byte("created by pgsvc integration harness\n"), 0o644)
}

func mkdirOwned(dir string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	return nil
}

func writeOwned(path string, data []byte, mode os.FileMode, uid, gid int) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	return nil
}

// checkPortsFree fails early, naming the address, when something (another
// test run, the Debian 15/main cluster) already listens where we would.
func checkPortsFree(cfg Config) error {
	addrs := []string{cfg.EtcdClient, cfg.EtcdPeer}
	for _, cl := range cfg.Clusters {
		for _, m := range cl.Members {
			for _, port := range []int{PgPort, PatroniPort, PgbouncerPort} {
				addrs = append(addrs, net.JoinHostPort(m.Addr, strconv.Itoa(port)))
			}
		}
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("address %s is already in use (another harness still running?): %w", a, err)
		}
		_ = l.Close()
	}
	return nil
}

// waitListening dials addr until it accepts or timeout/ctx ends.
func waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		dcancel()
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

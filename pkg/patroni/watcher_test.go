package patroni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// waitTimeout bounds every wait on a condition in these tests.
const waitTimeout = 15 * time.Second

// testEtcd is a real single-member etcd on loopback, random free ports and a
// temporary data dir, that can be stopped and started again on the same
// ports and dir.
type testEtcd struct {
	t              *testing.T
	dir            string
	clientURL      url.URL
	peerURL        url.URL
	mu             sync.Mutex
	srv            *embed.Etcd
	stopped        bool
	startedAlready bool
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newTestEtcd(t *testing.T) *testEtcd {
	t.Helper()
	e := &testEtcd{
		t:         t,
		dir:       filepath.Join(t.TempDir(), "etcd"),
		clientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
		peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
	}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *testEtcd) start() {
	e.t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = e.dir
	cfg.ListenClientUrls = []url.URL{e.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{e.clientURL}
	cfg.ListenPeerUrls = []url.URL{e.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{e.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if e.startedAlready {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Keep elections quick so a restart is fast.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		e.t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(waitTimeout):
		srv.Close()
		e.t.Fatal("etcd did not become ready")
	}
	e.mu.Lock()
	e.srv, e.stopped, e.startedAlready = srv, false, true
	e.mu.Unlock()
}

func (e *testEtcd) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || e.srv == nil {
		return
	}
	e.srv.Close()
	e.stopped = true
}

func (e *testEtcd) client(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := NewClient(ClientConfig{Endpoints: []string{e.clientURL.String()}, DialTimeout: 2 * time.Second,
		ReconnectMaxDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// put writes key=value with a short timeout.
func put(t *testing.T, cli *clientv3.Client, key, value string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Put(ctx, key, value, opts...)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

// TestMain checks that nothing in this package's tests leaves goroutines
// behind once every etcd server and client is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// watcherGoroutines counts goroutines running Watcher code: those with a
// Watcher method on their stack other than the closure Run starts its probe
// loop in. That closure's deferred wg.Done is what lets Run return, and the
// goroutine still exists for a moment after it (Go offers no way to wait for
// a goroutine's exit): counting it by its "created by" line, as this once
// did, made a test fail now and then on a loaded machine although the
// watcher had stopped all its work.
func watcherGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if runsWatcherCode(g) {
			count++
		}
	}
	return count
}

// runsWatcherCode reports whether the stack trace of one goroutine shows a
// Watcher method at work (see watcherGoroutines).
func runsWatcherCode(stack string) bool {
	for _, line := range strings.Split(stack, "\n") {
		if strings.HasPrefix(line, "created by ") {
			continue
		}
		i := strings.Index(line, "patroni.(*Watcher).")
		if i < 0 {
			continue
		}
		fn := line[i+len("patroni.(*Watcher)."):]
		if strings.HasPrefix(fn, "Run.func") && !strings.Contains(stack, "patroni.(*Watcher).probeLoop(") &&
			!strings.Contains(stack, "patroni.(*Watcher).Run(") {
			continue // the probe goroutine's wrapper, done with its work
		}
		return true
	}
	return false
}

// runWatcher runs w until the test ends, checking that Run returns
// context.Canceled and leaves none of its goroutines behind (etcd's own
// come and go with server restarts; TestMain's goleak covers them).
func runWatcher(t *testing.T, w *Watcher) <-chan Snapshot {
	t.Helper()
	out := make(chan Snapshot)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("Run did not return after cancel")
		}
		// Run has returned: nothing of the watcher may still run.
		if n := watcherGoroutines(); n != 0 {
			t.Errorf("%d watcher goroutines still running after Run returned", n)
		}
		select {
		case s, ok := <-out:
			if !ok {
				t.Error("Run closed out")
			} else {
				t.Errorf("snapshot at %d sent after Run returned", s.Revision)
			}
		default:
		}
	})
	return out
}

// waitSnap reads snapshots until pred holds or the deadline passes.
func waitSnap(t *testing.T, ch <-chan Snapshot, what string, pred func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	var last Snapshot
	for {
		select {
		case s := <-ch:
			last = s
			if pred(s) {
				return s
			}
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; last snapshot at revision %d: %s", what, last.Revision, describe(last))
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func describe(s Snapshot) string {
	var b strings.Builder
	for scope, cs := range s.Clusters {
		fmt.Fprintf(&b, "%s{leader=%q members=%v errors=%v} ", scope, cs.Leader, memberNames(cs), cs.Errors)
	}
	return b.String()
}

func role(s Snapshot, scope, name string) string {
	cs := s.Clusters[scope]
	if cs == nil || cs.Members[name] == nil {
		return ""
	}
	return cs.Members[name].Role
}

func fastOpts() WatcherOptions {
	return WatcherOptions{
		ResyncInterval: time.Minute, // tests that want resyncs lower it
		ProbeInterval:  50 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		RequestTimeout: time.Second,
	}
}

func pgMember(host, role string, xlog int64) string {
	return fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":%q,"xlog_location":%d,"timeline":1}`,
		host, host, role, xlog)
}

func TestWatcherInitialAndUpdates(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/pg-test/config", `{"ttl":30}`)
	put(t, cli, "/pg/pg-test/members/pg-test-1", pgMember("127.0.0.11", "master", 100))
	put(t, cli, "/pg/pg-test/members/pg-test-2", pgMember("127.0.0.12", "replica", 90))
	rev := put(t, cli, "/pg/pg-test/leader", "pg-test-1")
	put(t, cli, "/pgx/other/leader", "not-ours") // a sibling prefix must not leak in

	w := NewWatcher(cli, "/pg/", zaptest.NewLogger(t), fastOpts())
	out := runWatcher(t, w)

	first := waitSnap(t, out, "initial snapshot", func(Snapshot) bool { return true })
	if first.Revision != rev+1 || first.Namespace != "/pg" || len(first.Clusters) != 1 {
		t.Fatalf("initial snapshot rev %d ns %q: %s, want rev %d with pg-test only", first.Revision, first.Namespace, describe(first), rev+1)
	}
	cs := first.Clusters["pg-test"]
	if cs.Leader != "pg-test-1" || role(first, "pg-test", "pg-test-1") != RolePrimary ||
		role(first, "pg-test", "pg-test-2") != RoleReplica || ptrStr(cs.Members["pg-test-2"].LagBytes) != "10" {
		t.Fatalf("initial snapshot: %s", describe(first))
	}

	// A switchover, key by key as Patroni does it.
	put(t, cli, "/pg/pg-test/members/pg-test-1", pgMember("127.0.0.11", "demoted", 100))
	waitSnap(t, out, "pg-test-1 demoted", func(s Snapshot) bool { return role(s, "pg-test", "pg-test-1") == RoleDemoted })
	if _, err := cli.Delete(context.Background(), "/pg/pg-test/leader"); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, out, "no leader", func(s Snapshot) bool { return s.Clusters["pg-test"].Leader == "" })
	put(t, cli, "/pg/pg-test/leader", "pg-test-2")
	put(t, cli, "/pg/pg-test/members/pg-test-2", pgMember("127.0.0.12", "primary", 120))
	last := waitSnap(t, out, "pg-test-2 primary", func(s Snapshot) bool {
		return s.Clusters["pg-test"].Leader == "pg-test-2" && role(s, "pg-test", "pg-test-2") == RolePrimary
	})
	if n := watcherGoroutines(); n < 2 {
		t.Errorf("%d watcher goroutines while running, want Run and its probe", n)
	}
	if st := w.Status(); !st.Connected || st.Revision != last.Revision || st.LastContact.IsZero() {
		t.Errorf("status %+v after snapshot at %d", st, last.Revision)
	}
	// A new cluster appears in the same namespace.
	put(t, cli, "/pg/pg-meta/leader", "pg-meta-1")
	waitSnap(t, out, "second cluster", func(s Snapshot) bool {
		return s.Clusters["pg-meta"] != nil && s.Clusters["pg-test"].Leader == "pg-test-2"
	})
}

// TestWatcherLeaseExpiry: a dead primary's lease ends; leader and member
// keys vanish in one revision, and no snapshot shows one without the other.
func TestWatcherLeaseExpiry(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, "/pg/c/members/a", pgMember("10.0.0.1", "master", 5), clientv3.WithLease(lease.ID))
	put(t, cli, "/pg/c/leader", "a", clientv3.WithLease(lease.ID))
	put(t, cli, "/pg/c/members/b", pgMember("10.0.0.2", "replica", 5))

	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	waitSnap(t, out, "leader a", func(s Snapshot) bool { return s.Clusters["c"].Leader == "a" })

	rresp, err := cli.Revoke(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := waitSnap(t, out, "leader and a gone", func(s Snapshot) bool {
		c := s.Clusters["c"]
		hasLeader, hasA := c.Leader != "", c.Members["a"] != nil
		if hasLeader != hasA {
			t.Errorf("snapshot at %d shows leader=%v member a=%v: a torn lease expiry", s.Revision, hasLeader, hasA)
		}
		return !hasLeader && !hasA
	})
	if got.Revision != rresp.Header.Revision {
		t.Errorf("snapshot revision %d, want the revoke's %d", got.Revision, rresp.Header.Revision)
	}
	if got.Clusters["c"].Members["b"] == nil {
		t.Error("member b lost")
	}
}

// TestWatcherCompaction compacts etcd past the revision the watch starts
// from; the watch fails with ErrCompacted and the watcher must re-list.
func TestWatcherCompaction(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/c/leader", "a")
	put(t, cli, "/pg/c/members/a", pgMember("10.0.0.1", "master", 5))

	core, logs := observer.New(zap.InfoLevel)
	w := NewWatcher(cli, "/pg", zap.New(core), fastOpts())
	var once sync.Once
	w.testHookAfterList = func(rev int64) {
		once.Do(func() {
			// While the watcher is between list and watch, the world moves on
			// and the history it would need is compacted away.
			put(t, cli, "/pg/c/members/a", pgMember("10.0.0.1", "demoted", 5))
			put(t, cli, "/pg/c/leader", "b")
			now := put(t, cli, "/pg/c/members/b", pgMember("10.0.0.2", "master", 6))
			if _, err := cli.Compact(context.Background(), now); err != nil {
				t.Errorf("compact: %v", err)
			}
		})
	}
	out := runWatcher(t, w)
	waitSnap(t, out, "state after re-list", func(s Snapshot) bool {
		c := s.Clusters["c"]
		return c.Leader == "b" && role(s, "c", "b") == RolePrimary && role(s, "c", "a") == RoleDemoted
	})
	if st := w.Status(); st.Restarts < 1 {
		t.Errorf("status %+v, want a restart after compaction", st)
	}
	if n := logs.FilterFieldKey("error").Filter(func(e observer.LoggedEntry) bool {
		return strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "compacted")
	}).Len(); n == 0 {
		t.Errorf("no log of the compacted watch; logs: %v", logs.All())
	}
	// The watch works again after the re-list.
	put(t, cli, "/pg/c/members/a", pgMember("10.0.0.1", "replica", 6))
	waitSnap(t, out, "a replica", func(s Snapshot) bool { return role(s, "c", "a") == RoleReplica })
}

// TestWatcherSlowConsumerCompaction lets the consumer fall behind while
// etcd is written to and compacted; whatever happened, the view converges.
func TestWatcherSlowConsumerCompaction(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/c/leader", "a")
	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	waitSnap(t, out, "initial", func(s Snapshot) bool { return s.Clusters["c"] != nil })
	// Not reading out now: the watcher blocks on its send.
	var last int64
	for i := 0; i < 50; i++ {
		last = put(t, cli, "/pg/c/members/m", pgMember("10.0.0.1", "replica", int64(i)))
	}
	if _, err := cli.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	s := waitSnap(t, out, "newest member value", func(s Snapshot) bool {
		m := s.Clusters["c"].Members["m"]
		return m != nil && m.XLogLocation != nil && *m.XLogLocation == 49
	})
	if s.Revision != last {
		t.Errorf("revision %d, want %d", s.Revision, last)
	}
}

func TestWatcherResync(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/c/leader", "a")
	opts := fastOpts()
	opts.ResyncInterval = 100 * time.Millisecond
	w := NewWatcher(cli, "/pg", zap.NewNop(), opts)
	out := runWatcher(t, w)
	n := 0
	// Each resync sends a complete snapshot although nothing changed.
	waitSnap(t, out, "three snapshots", func(s Snapshot) bool {
		if s.Clusters["c"].Leader != "a" {
			t.Errorf("snapshot %d: leader %q", n, s.Clusters["c"].Leader)
		}
		n++
		return n >= 3
	})
	if st := w.Status(); st.Resyncs < 2 || st.Restarts != 0 {
		t.Errorf("status %+v, want >= 2 resyncs and no restart", st)
	}
}

func TestWatcherEtcdRestart(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/c/leader", "a")
	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	waitSnap(t, out, "initial", func(s Snapshot) bool { return s.Clusters["c"] != nil })
	waitFor(t, "connected", func() bool { return w.Status().Connected })

	e.stop()
	waitFor(t, "disconnected", func() bool { return !w.Status().Connected })
	down := w.Status()
	if down.LastError == "" {
		t.Errorf("status %+v: no error while etcd is down", down)
	}
	e.start()
	waitFor(t, "reconnected", func() bool { return w.Status().Connected })
	if st := w.Status(); !st.LastContact.After(down.LastContact) || st.LastError != "" {
		t.Errorf("status after restart %+v (down: %+v)", st, down)
	}
	put(t, cli, "/pg/c/leader", "b")
	waitSnap(t, out, "write after restart", func(s Snapshot) bool { return s.Clusters["c"].Leader == "b" })
}

// TestWatcherStartsBeforeEtcd: the first list fails (nothing listens yet);
// the watcher keeps trying until etcd is there.
func TestWatcherStartsBeforeEtcd(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/c/leader", "a")
	e.stop()
	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	waitFor(t, "list failure reported", func() bool { st := w.Status(); return !st.Connected && st.LastError != "" })
	e.start()
	waitSnap(t, out, "initial snapshot once etcd is up", func(s Snapshot) bool {
		return s.Clusters["c"] != nil && s.Clusters["c"].Leader == "a"
	})
}

func TestWatcherMalformedValues(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/good/leader", "g1")
	put(t, cli, "/pg/good/members/g1", pgMember("10.0.0.1", "master", 1))
	put(t, cli, "/pg/bad/leader", "b1")
	put(t, cli, "/pg/bad/members/b1", pgMember("10.0.0.2", "master", 1))
	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	waitSnap(t, out, "initial", func(s Snapshot) bool { return len(s.Clusters) == 2 })

	put(t, cli, "/pg/bad/members/b2", `{"conn_url":`)
	put(t, cli, "/pg/bad/status", `{"optime":"x"}`)
	s := waitSnap(t, out, "two key errors", func(s Snapshot) bool { return len(s.Clusters["bad"].Errors) == 2 })
	bad, good := s.Clusters["bad"], s.Clusters["good"]
	if bad.Errors[0].Key != "/pg/bad/members/b2" || bad.Errors[1].Key != "/pg/bad/status" {
		t.Errorf("errors %v", bad.Errors)
	}
	if bad.Leader != "b1" || bad.Members["b1"] == nil || bad.Members["b2"] != nil {
		t.Errorf("bad cluster: %s", describe(s))
	}
	if len(good.Errors) != 0 || good.Leader != "g1" || good.Members["g1"] == nil {
		t.Errorf("good cluster affected: %s", describe(s))
	}
}

// TestWatcherSnapshotsNotMutated keeps every snapshot and checks that later
// changes never show up in earlier ones.
func TestWatcherSnapshotsNotMutated(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/c/leader", "a")
	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	first := waitSnap(t, out, "initial", func(Snapshot) bool { return true })
	put(t, cli, "/pg/c/leader", "b")
	put(t, cli, "/pg/c/members/b", pgMember("10.0.0.2", "master", 1))
	waitSnap(t, out, "member b", func(s Snapshot) bool { return s.Clusters["c"].Members["b"] != nil })
	if first.Clusters["c"].Leader != "a" || len(first.Clusters["c"].Members) != 0 {
		t.Errorf("first snapshot changed after it was sent: %s", describe(first))
	}
}

func TestWatcherBackoff(t *testing.T) {
	w := NewWatcher(nil, "/pg", nil, WatcherOptions{MaxBackoff: time.Second})
	for n, want := range map[int]time.Duration{0: 0, 1: 0, 2: 100 * time.Millisecond, 3: 200 * time.Millisecond,
		4: 400 * time.Millisecond, 5: 800 * time.Millisecond, 6: time.Second, 100: time.Second} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			if got := w.backoff(n); got != want {
				t.Errorf("backoff(%d) = %s, want %s", n, got, want)
			}
		})
	}
	d := NewWatcher(nil, "pg/", nil, WatcherOptions{})
	if d.opts.ResyncInterval != 30*time.Second || d.opts.ProbeInterval != 2*time.Second ||
		d.opts.MaxBackoff != 5*time.Second || d.opts.RequestTimeout != 3*time.Second || d.prefix != "/pg/" {
		t.Errorf("defaults %+v prefix %q", d.opts, d.prefix)
	}
}

func TestNewClientErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"no endpoints", ClientConfig{}, "no endpoints"},
		{"empty endpoint", ClientConfig{Endpoints: []string{" "}}, "endpoints[0] is empty"},
		{"bad scheme", ClientConfig{Endpoints: []string{"ftp://127.0.0.1:2379"}}, `scheme "ftp"`},
		{"no host", ClientConfig{Endpoints: []string{"http://"}}, "no host"},
		{"cert without key", ClientConfig{Endpoints: []string{"127.0.0.1:2379"}, Cert: missing}, "cert and key"},
		{"password without user", ClientConfig{Endpoints: []string{"127.0.0.1:2379"}, Password: "x"}, "without username"},
		{"missing CA", ClientConfig{Endpoints: []string{"https://127.0.0.1:2379"}, CACert: missing}, "ca cert: open " + missing},
		{"CA not PEM", ClientConfig{Endpoints: []string{"https://127.0.0.1:2379"}, CACert: notPEM}, "no PEM certificate"},
		{"missing cert", ClientConfig{Endpoints: []string{"https://127.0.0.1:2379"}, Cert: missing, Key: missing}, "cert " + missing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := NewClient(tc.cfg)
			if err == nil {
				cli.Close()
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "etcd client: ") {
				t.Errorf("error %q, want containing %q", err, tc.want)
			}
		})
	}
}

// TestWatcherCatchUp: CatchUp returns once every event up to etcd's
// revision at the call has been handed out: promptly when the revision
// moved on keys outside the prefix only (a progress notification tells the
// watch is past them), not while a snapshot of a change waits for its
// consumer, and once it is taken (its event tells).
func TestWatcherCatchUp(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	put(t, cli, "/pg/pg-test/members/pg-test-1", pgMember("127.0.0.11", "master", 100))
	put(t, cli, "/pg/pg-test/leader", "pg-test-1")

	w := NewWatcher(cli, "/pg/", zaptest.NewLogger(t), fastOpts())
	out := runWatcher(t, w)
	first := waitSnap(t, out, "initial snapshot", func(Snapshot) bool { return true })

	// Only a sibling prefix moves: nothing to hand out, and CatchUp says so.
	other := put(t, cli, "/pgx/other/leader", "not-ours")
	if first.Revision >= other {
		t.Fatalf("initial snapshot at %d, sibling write at %d", first.Revision, other)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	got, err := w.CatchUp(ctx)
	cancel()
	if err != nil || got != first.Revision {
		t.Fatalf("CatchUp after a sibling write = %d, %v; want %d (the last snapshot sent)", got, err, first.Revision)
	}

	// A change of the prefix whose snapshot nobody has taken yet (out is
	// unbuffered): CatchUp waits for it.
	changed := put(t, cli, "/pg/pg-test/leader", "pg-test-2")
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	got, err = w.CatchUp(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CatchUp with the change's snapshot not taken = %d, %v; want it to wait (deadline exceeded)", got, err)
	}
	done := make(chan struct{})
	var caught int64
	var cerr error
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		caught, cerr = w.CatchUp(ctx)
	}()
	s := waitSnap(t, out, "the change", func(s Snapshot) bool { return s.Revision >= changed })
	<-done
	if cerr != nil || caught < changed || caught != s.Revision {
		t.Fatalf("CatchUp once the change was taken = %d, %v; want the snapshot's revision %d (>= %d)", caught, cerr, s.Revision, changed)
	}
}

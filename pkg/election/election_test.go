package election

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
)

// TestMain checks that no elector, keepalive or watch goroutine outlives
// the tests once every etcd server and client is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTTL is the lease TTL of the tests' electors. 4 s, not the minimum 2:
// the etcd client renews at TTL/3, and a 2 s lease was lost (and
// leadership moved) when a loaded CI machine stalled the keepalive for
// more than 1.3 s under -race.
const testTTL = 4

// runner is one elector running in the background.
type runner struct {
	e       *Elector
	cli     *clientv3.Client
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
	mu      sync.Mutex
	changes []bool
}

func start(t *testing.T, cli *clientv3.Client, id string) *runner {
	t.Helper()
	e := New(cli, Options{Key: "/pgsvc/election", Identity: id, TTL: testTTL,
		Log: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(id), RetryMin: 100 * time.Millisecond, RetryMax: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{e: e, cli: cli, cancel: cancel, done: make(chan error, 1)}
	e.OnChange(func(b bool) {
		r.mu.Lock()
		r.changes = append(r.changes, b)
		r.mu.Unlock()
	})
	go func() { r.done <- e.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and checks it returns promptly with ctx's error, even
// when etcd is unreachable.
func (r *runner) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Run returned %v, want context.Canceled", r.e.Identity(), err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: Run did not return within 5s of cancel", r.e.Identity())
		}
	})
}

func (r *runner) changeLog() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.changes...)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaders(rs []*runner) []*runner {
	var out []*runner
	for _, r := range rs {
		if r.e.IsLeader() {
			out = append(out, r)
		}
	}
	return out
}

func names(rs []*runner) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.e.Identity())
	}
	return out
}

// waitOneLeader waits until exactly one of rs leads and returns it.
func waitOneLeader(t *testing.T, rs []*runner, timeout time.Duration) *runner {
	t.Helper()
	var l *runner
	waitFor(t, timeout, "exactly one leader", func() bool {
		ls := leaders(rs)
		if len(ls) > 1 {
			t.Fatalf("several leaders at once: %v", names(ls))
		}
		if len(ls) == 1 {
			l = ls[0]
		}
		return len(ls) == 1
	})
	return l
}

// candidates counts the keys under the election prefix.
func candidates(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pgsvc/election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"ttl too short", Options{TTL: 1}, "ttl 1s: must be at least 2 seconds"},
		{"negative ttl", Options{TTL: -5}, "ttl -5s: must be at least 2 seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New(nil, tc.opts).Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Run: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		e := New(nil, Options{Key: "/x/"})
		if e.opts.Key != "/x" || e.opts.TTL != 10 || e.Identity() == "" {
			t.Errorf("defaults: key %q ttl %d identity %q", e.opts.Key, e.opts.TTL, e.Identity())
		}
		// Fencing window: a keepalive every 2.2s; leadership is dropped
		// 6.7s after the last successful keepalive was sent.
		if e.margin != e.ttl/3 || e.interval != (e.ttl-e.margin)/3 {
			t.Errorf("margin %v interval %v for ttl %v", e.margin, e.interval, e.ttl)
		}
	})
}

// TestFencingDeadline drives the deadline with a fake clock.
func TestFencingDeadline(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	e := New(nil, Options{TTL: 3, Now: func() time.Time { return now }})
	var got []bool
	e.OnChange(func(b bool) { got = append(got, b) })
	e.extend(now, 3)
	if e.IsLeader() {
		t.Fatal("leader without holding the key")
	}
	e.setHolding(true)
	if next := e.notify(); !next.Equal(now.Add(2 * time.Second)) {
		t.Errorf("next deadline %v, want send + TTL - TTL/3", next)
	}
	for _, step := range []struct {
		name    string
		advance time.Duration
		renew   bool
		ttl     int64
		want    bool
	}{
		{"inside the window", 1999 * time.Millisecond, false, 0, true},
		{"at the deadline", time.Millisecond, false, 0, false},
		{"renewed", 0, true, 3, true},
		{"server rounds the ttl up: our bound stays", 2 * time.Second, true, 60, true},
		{"past the bounded deadline", 2 * time.Second, false, 0, false},
	} {
		now = now.Add(step.advance)
		if step.renew {
			e.extend(now, step.ttl)
		}
		e.notify()
		if e.IsLeader() != step.want {
			t.Errorf("%s: IsLeader %v, want %v", step.name, !step.want, step.want)
		}
	}
	if want := []bool{true, false, true, false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("OnChange calls %v, want %v", got, want)
	}
}

func TestLeaderNone(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := New(cli, Options{}).Leader(ctx)
	if !errors.Is(err, ErrNoLeader) {
		t.Errorf("Leader: %v, want ErrNoLeader", err)
	}
}

func TestExactlyOneLeader(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d electors", n), func(t *testing.T) {
			srv := etcdtest.Start(t)
			var rs []*runner
			for i := range n {
				rs = append(rs, start(t, srv.Client(t), fmt.Sprintf("ctl-%d", i)))
			}
			l := waitOneLeader(t, rs, 10*time.Second)
			waitFor(t, 5*time.Second, "every candidate key", func() bool { return candidates(t, rs[0].cli) == int64(n) })
			// Leadership holds across several keepalive rounds (2 TTLs),
			// never shared.
			until := time.Now().Add(2 * testTTL * time.Second)
			for time.Now().Before(until) {
				if ls := leaders(rs); len(ls) != 1 || ls[0] != l {
					t.Fatalf("leaders changed to %v (was %s)", names(ls), l.e.Identity())
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, r := range rs {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := r.e.Leader(ctx)
				cancel()
				if err != nil || got != l.e.Identity() {
					t.Errorf("%s: Leader() = %q, %v; want %q", r.e.Identity(), got, err, l.e.Identity())
				}
				wantChanges := "[]"
				if r == l {
					wantChanges = "[true]"
				}
				if got := fmt.Sprint(r.changeLog()); got != wantChanges {
					t.Errorf("%s: OnChange calls %s, want %s", r.e.Identity(), got, wantChanges)
				}
			}
		})
	}
}

// TestResignOnStop: a leader stopped cleanly hands over at once, without
// waiting for its lease to expire.
func TestResignOnStop(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := []*runner{start(t, srv.Client(t), "a"), start(t, srv.Client(t), "b")}
	l := waitOneLeader(t, rs, 10*time.Second)
	stopped := time.Now()
	l.stop(t)
	if l.e.IsLeader() {
		t.Error("IsLeader true after Run returned")
	}
	rest := rs[0]
	if rest == l {
		rest = rs[1]
	}
	waitOneLeader(t, []*runner{rest}, 10*time.Second)
	if took := time.Since(stopped); took >= testTTL*time.Second {
		t.Errorf("handover took %v, want less than the TTL (the leader resigns)", took)
	}
	if got := fmt.Sprint(l.changeLog()); got != "[true false]" {
		t.Errorf("stopped leader's OnChange calls %s, want [true false]", got)
	}
}

// TestKilledLeader: a leader whose client just disappears (kill -9: the lease
// is not revoked) is replaced once its lease expires.
func TestKilledLeader(t *testing.T) {
	srv := etcdtest.Start(t)
	var rs []*runner
	for i := range 3 {
		rs = append(rs, start(t, srv.Client(t), fmt.Sprintf("ctl-%d", i)))
	}
	l := waitOneLeader(t, rs, 10*time.Second)
	waitFor(t, 5*time.Second, "every candidate key", func() bool { return candidates(t, srv.Client(t)) == 3 })
	killed := time.Now()
	l.cli.Close()
	var rest []*runner
	for _, r := range rs {
		if r != l {
			rest = append(rest, r)
		}
	}
	waitOneLeader(t, rest, testTTL*time.Second+5*time.Second)
	t.Logf("new leader %v after %v", names(leaders(rest)), time.Since(killed))
	if l.e.IsLeader() {
		t.Error("killed leader still says it leads")
	}
}

// proxy is a loopback TCP proxy whose Cut drops every connection and stops
// accepting, as a network partition would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Cut)
	return p
}

func (p *proxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, u) {
			return
		}
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil { // cut
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

// Cut closes the listener and every connection; safe to call twice.
func (p *proxy) Cut() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// transitions samples IsLeader of every runner and records when each first
// turned true and false after the sampler started.
type transitions struct {
	mu      sync.Mutex
	becameL map[*runner]time.Time
	lostL   map[*runner]time.Time
	stop    chan struct{}
	done    chan struct{}
}

func sample(rs []*runner) *transitions {
	tr := &transitions{becameL: map[*runner]time.Time{}, lostL: map[*runner]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	prev := map[*runner]bool{}
	for _, r := range rs {
		prev[r] = r.e.IsLeader()
	}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			for _, r := range rs {
				// Conservative stamps: a gain is stamped no later than it
				// happened (clock read before IsLeader), a loss no earlier
				// (clock read after), so "lost before won" cannot pass by
				// sampling luck.
				before := time.Now()
				now := r.e.IsLeader()
				after := time.Now()
				tr.mu.Lock()
				if now && !prev[r] {
					if _, ok := tr.becameL[r]; !ok {
						tr.becameL[r] = before
					}
				}
				if !now && prev[r] {
					if _, ok := tr.lostL[r]; !ok {
						tr.lostL[r] = after
					}
				}
				tr.mu.Unlock()
				prev[r] = now
			}
		}
	}()
	return tr
}

// became returns when r was first seen leading.
func (tr *transitions) became(r *runner) (time.Time, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	at, ok := tr.becameL[r]
	return at, ok
}

func (tr *transitions) Stop() {
	close(tr.stop)
	<-tr.done
}

// TestPartition: the leader loses its network to etcd. It must stop
// claiming leadership strictly before any other instance starts.
func TestPartition(t *testing.T) {
	srv := etcdtest.Start(t)
	p := newProxy(t, srv.ClientURL[len("http://"):])
	pcli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.URL()}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pcli.Close() })

	a := start(t, pcli, "partitioned")
	waitOneLeader(t, []*runner{a}, 10*time.Second)
	rs := []*runner{a, start(t, srv.Client(t), "b"), start(t, srv.Client(t), "c")}
	waitFor(t, 5*time.Second, "every candidate key", func() bool { return candidates(t, srv.Client(t)) == 3 })
	if l := waitOneLeader(t, rs, time.Second); l != a {
		t.Fatalf("leader is %s, want the first elector", l.e.Identity())
	}

	tr := sample(rs)
	cut := time.Now()
	p.Cut()
	others := rs[1:]
	var newLeader *runner
	waitFor(t, testTTL*time.Second+5*time.Second, "another leader", func() bool {
		ls := leaders(others)
		if len(ls) > 0 {
			newLeader = ls[0]
		}
		return len(ls) > 0
	})
	waitFor(t, time.Second, "the sampler to see the new leader", func() bool {
		_, ok := tr.became(newLeader)
		return ok
	})
	tr.Stop()

	lost, ok := tr.lostL[a]
	if !ok {
		t.Fatal("the partitioned leader never stopped claiming leadership")
	}
	won := tr.becameL[newLeader]
	t.Logf("cut at 0; old leader stopped at +%v; %s started at +%v", lost.Sub(cut), newLeader.e.Identity(), won.Sub(cut))
	if !lost.Before(won) {
		t.Errorf("old leader stopped at +%v, not before the new one started at +%v", lost.Sub(cut), won.Sub(cut))
	}
	if lost.Sub(cut) > testTTL*time.Second {
		t.Errorf("old leader kept leading %v after the cut, longer than the TTL", lost.Sub(cut))
	}
	if l := leaders(rs); len(l) != 1 {
		t.Errorf("leaders after failover: %v", names(l))
	}
	waitFor(t, 2*time.Second, "the old leader's OnChange(false)", func() bool {
		c := a.changeLog()
		return len(c) >= 2 && !c[len(c)-1]
	})
	// Run must return promptly although its etcd is unreachable.
	a.stop(t)
}

// TestEtcdRestart: with etcd down nobody leads (fencing); once it is back,
// leadership is re-established.
func TestEtcdRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := []*runner{start(t, srv.Client(t), "a"), start(t, srv.Client(t), "b")}
	waitOneLeader(t, rs, 10*time.Second)
	// Stop waits seconds for clients to go away; the fence must act from
	// the moment etcd stops answering, while Stop is still running.
	stopping := time.Now()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		srv.Stop()
	}()
	waitFor(t, testTTL*time.Second+time.Second, "no leader while etcd is down", func() bool { return len(leaders(rs)) == 0 })
	t.Logf("no leader %v after etcd began to stop", time.Since(stopping))
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not stop within 30s")
	}
	restarted := time.Now()
	srv.Restart(t)
	t.Logf("etcd restarted in %v", time.Since(restarted))
	l := waitOneLeader(t, rs, 20*time.Second)
	t.Logf("%s leads %v after the restart began", l.e.Identity(), time.Since(restarted))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := rs[0].e.Leader(ctx); err != nil || got != l.e.Identity() {
		t.Errorf("Leader() = %q, %v; want %q", got, err, l.e.Identity())
	}
}

//go:build integration

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/integration/harness"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// portSync is the user-defined sync service of TestSyncStandbyService.
const portSync = 5440

// syncBackend is its HAProxy backend.
const syncBackend = "pg-test-sync"

// TestSyncStandbyService: a user-defined service selecting `patroni_sync`
// on pg-test with Patroni's synchronous_mode on (real etcd, Patroni 3.0.2,
// PostgreSQL 15, HAProxy 2.6, the controller in-process), once per layout
// of the direct driver on the same cluster:
//
//  1. once Patroni names its sync standby (the sync key, and Patroni's REST
//     /cluster role sync_standby, which `patronictl list` shows as
//     "Sync Standby"), fresh connections through the service land only on
//     that member;
//  2. after `patronictl switchover` to the sync standby the service
//     converges on the sync standby the new leader names. Through it:
//     - twins layout: no connection ever reaches a primary (the apply that
//     drains the new leader's server is made at runtime, before it is
//     read-write);
//     - pigsty layout: the apply that takes the new leader out of the sync
//     backend is a reload, made after the controller's role hold (see
//     holdRoles in pkg/controller/transition.go), and HAProxy's /sync check
//     (inter 3s) does not take the promoted member out first: connections
//     may reach the new primary between the leader key's move and the end
//     of that apply (reads, on the member that holds every committed
//     write; the pigsty layout's replica service has the same window), and
//     none after it. How many did, and the window's length, are logged.
//     The end of that apply is the controller's history event (recorded
//     when the reload returned: the new worker serves the new config); the
//     sampler's first look at HAProxy's runtime state after it must not
//     show the new leader among the sync backend's ready servers.
//     While it runs, HAProxy's runtime server state of the sync backend is
//     sampled: how long it had no server in the admin state ready (Patroni
//     names nobody sync between the new leader's promotion and its choice
//     of a new sync standby) is logged, as are the sync and leader keys'
//     moves.
func TestSyncStandbyService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pgTest := fastCluster()
	pgTest.SynchronousMode = true
	pgTest.Services = []string{fmt.Sprintf(`{ name: sync, port: %d, ip: %q, dest: postgres, check: /sync, selector: "[? patroni_sync ]" }`, portSync, testIP)}
	setupStart := time.Now()
	env := startEnv(t, ctx, pgTest)
	t.Logf("pg-test (synchronous_mode on) up in %s", dur(time.Since(setupStart)))
	inv := filepath.Join(t.TempDir(), "pigsty.yml")
	if err := env.WriteInventory(inv); err != nil {
		t.Fatal(err)
	}

	// Each layout starts its own HAProxy and controller on the cluster as
	// the previous one left it, and switches over once.
	// A failed assertion on traffic leaves the cluster usable; a switchover
	// that did not converge does not.
	converged := true
	for _, layout := range []string{"pigsty", "twins"} {
		t.Run(layout, func(t *testing.T) {
			if !converged {
				t.Skip("the previous layout did not converge: the cluster is in an unknown state")
			}
			converged = false
			converged = syncSwitchover(t, ctx, env, inv, layout)
		})
	}
}

// syncSwitchover runs steps 1 and 2 with a fresh HAProxy and controller of
// layout, and reports whether the service converged after the switchover.
func syncSwitchover(t *testing.T, ctx context.Context, env *harness.Env, inv, layout string) bool {
	r := &scenarioRig{top: t, ctx: ctx, env: env, res: &results{}, addrs: env.MemberAddrs()}
	r.haproxy = startHAProxy(t, ctx, inv)
	cfg := scenarioConfig(inv, env, r.haproxy)
	cfg.Direct[0].Layout = layout
	ctl, err := startController(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl

	// 1. Patroni's sync standby, and the service on it alone.
	var leader, standby string
	err = waitFor(ctx, 90*time.Second, "Patroni names a sync standby", func() (bool, string) {
		var why string
		leader, standby, why = namedSync(ctx, env, "")
		return standby != "", why
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leader %s, sync standby %s", leader, standby)
	convStart := time.Now()
	if err := waitFor(ctx, 60*time.Second, "sync service on "+standby, func() (bool, string) {
		return r.syncRight(leader, standby)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("sync service routes only to %s (%s after the controller started waiting)", standby, dur(time.Since(convStart)))

	// 2. Switchover to the sync standby, sampled throughout.
	old, cand := leader, standby
	smp := startSyncSampler(ctx, env, r.haproxy, r.addrs)
	start := time.Now()
	sw, err := env.Switchover(ctx, "pg-test", old, cand)
	if err != nil {
		smp.stop()
		t.Fatal(err)
	}
	t.Logf("patronictl switchover %s -> %s ran %s; leader key on %s after %s", old, cand, dur(sw.Command), cand, dur(sw.LeaderMoved))
	var next string
	err = waitFor(ctx, 90*time.Second, "sync service on the new sync standby", func() (bool, string) {
		l, s, why := namedSync(ctx, env, old)
		if s == "" {
			return false, why
		}
		if l != cand {
			return false, fmt.Sprintf("leader %s, want %s", l, cand)
		}
		next = s
		return r.syncRight(cand, s)
	})
	served := time.Now()
	smp.stop()
	tl := smp.report(t, start, cand, r.memberOf)
	if err != nil {
		t.Fatal(err)
	}
	first := smp.firstOn(r.addrs[next], tl.syncNamed)
	t.Logf("%s: switchover %s -> %s: the sync key named %s %s after the start; the first connection through the sync service "+
		"landed on it %s after the start (%s after the key named it); the check that it routes only there passed %s after the start",
		layout, old, cand, next, dur(tl.syncNamed.Sub(start)), dur(first.Sub(start)), dur(first.Sub(tl.syncNamed)), dur(served.Sub(start)))
	if !tl.syncNamed.IsZero() && served.Before(tl.syncNamed) {
		t.Errorf("served right before the sync key named %s", next)
	}
	checkPrimaries(t, r, layout, cand, start, tl, smp)
	if tl.probesOK == 0 {
		t.Errorf("no connection through the sync service succeeded during the switchover: the prober did not run")
	}
	// After convergence too, and only on the named standby.
	as, err := probeN(ctx, svcAddr(testIP, portSync), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if !a.InRecovery || a.Addr != r.addrs[next] {
			t.Errorf("after convergence the sync service answered on %s (in recovery %v), want %s", r.memberOf(a.Addr), a.InRecovery, next)
		}
	}
	return true
}

// namedSync reports the leader and the one sync standby Patroni names: the
// sync key written by the leader key's member (not notLeader, when set)
// listing one member, which Patroni's REST /cluster also reports as
// sync_standby. standby is "" (and why says why) until then.
func namedSync(ctx context.Context, env *harness.Env, notLeader string) (leader, standby, why string) {
	leader, err := env.Leader(ctx, "pg-test")
	if err != nil {
		return "", "", err.Error()
	}
	if leader == "" || leader == notLeader {
		return leader, "", fmt.Sprintf("leader key %q", leader)
	}
	st, err := env.Sync(ctx, "pg-test")
	if err != nil {
		return leader, "", err.Error()
	}
	if st.Leader != leader || len(st.Standbys) != 1 || st.Standbys[0] == leader {
		return leader, "", fmt.Sprintf("leader %s, sync key %q", leader, st.Raw)
	}
	roles := map[string]string{}
	for _, m := range env.Status(ctx) {
		roles[m.Name] = m.Role
	}
	if roles[st.Standbys[0]] != "sync_standby" {
		return leader, "", fmt.Sprintf("sync key %q, REST /cluster roles %v", st.Raw, roles)
	}
	return leader, st.Standbys[0], ""
}

// syncRight reports whether the sync service serves exactly standby: the
// controller is ready with leader, the only server of the sync backend in
// the admin state ready is standby's (the normal twin in the twin layout),
// it is UP, and fresh connections through the service land on it in
// recovery.
func (r *scenarioRig) syncRight(leader, standby string) (bool, string) {
	st, err := r.status()
	if err != nil {
		return false, err.Error()
	}
	if ok, why := readyWithLeader(st, "pg-test", leader); !ok {
		return false, why
	}
	adm, err := r.haproxy.admins(r.ctx, syncBackend)
	if err != nil {
		return false, err.Error()
	}
	if ready := readyServers(adm); !slices.Equal(ready, []string{standby}) {
		return false, fmt.Sprintf("%s: servers in admin state ready %v, want [%s] (%v)", syncBackend, ready, standby, adm)
	}
	if ok, why := r.haproxy.onlyUp(r.ctx, syncBackend, standby); !ok {
		// A drained twin stays UP: only the ready one counts.
		row, found, why2 := r.haproxy.server(r.ctx, syncBackend, standby)
		if !found {
			return false, why2
		}
		if !strings.HasPrefix(row.Status, "UP") {
			return false, why
		}
	}
	as, err := probeN(r.ctx, svcAddr(testIP, portSync), 4)
	if err != nil {
		return false, "sync service: " + err.Error()
	}
	for _, a := range as {
		if !a.InRecovery || a.Addr != r.addrs[standby] {
			return false, fmt.Sprintf("sync service answered on %s (in recovery %v), want %s", r.memberOf(a.Addr), a.InRecovery, standby)
		}
	}
	return true, ""
}

// readyServers are the servers in admin state ready, sorted.
func readyServers(adm map[string]string) []string {
	var out []string
	for s, a := range adm {
		if a == "ready" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// takenOut finds the controller's first apply after since that took
// member's server out of the sync backend: removed it (a reload, pigsty
// layout) or set it to drain or maint, or forced it down (at runtime).
// Event.At is when the apply returned: for a reload, once HAProxy's new
// worker served the new config.
func takenOut(st controller.Status, member string, since time.Time) (controller.Event, bool) {
	for _, e := range st.History {
		if e.Kind != "applied" || e.At.Before(since) {
			continue
		}
		for _, ch := range e.Changes {
			if ch.Backend != syncBackend || ch.Server != member {
				continue
			}
			switch {
			case ch.Kind == "remove_server",
				ch.Kind == "set_state" && (strings.HasSuffix(ch.Detail, "-> drain") || strings.HasSuffix(ch.Detail, "-> maint")),
				ch.Kind == "force_down":
				return e, true
			}
		}
	}
	return controller.Event{}, false
}

// checkPrimaries checks the probes that reached a primary during the
// switchover to newLeader (see TestSyncStandbyService, step 2): none in
// the twins layout; in the pigsty layout only ones that ended after the
// leader key moved and started before the apply that took newLeader out
// of the sync backend ended. It logs that apply, the sampler's first look
// at HAProxy without newLeader ready, and the window.
func checkPrimaries(t *testing.T, r *scenarioRig, layout, newLeader string, start time.Time, tl syncTimeline, smp *syncSampler) {
	t.Helper()
	rel := func(at time.Time) string { return "+" + dur(at.Sub(start)) }
	st, err := r.status()
	if err != nil {
		t.Errorf("controller status: %v", err)
		return
	}
	ev, found := takenOut(st, newLeader, start)
	if !found {
		t.Errorf("%s: no apply in the controller's history took %s out of %s after the switchover started", layout, newLeader, syncBackend)
	} else {
		// The first look at HAProxy begun after the apply ended.
		smp.mu.Lock()
		var after *syncSample
		for i := range smp.samples {
			if x := &smp.samples[i]; x.Err == "" && x.At.After(ev.At) {
				after = x
				break
			}
		}
		smp.mu.Unlock()
		what := "none"
		switch {
		case after == nil:
			t.Errorf("no servers-state sample after the apply that took %s out of %s", newLeader, syncBackend)
		case slices.Contains(after.Ready, newLeader):
			t.Errorf("the first servers-state sample after the apply that took %s out of %s (%s) still has it ready: %v",
				newLeader, syncBackend, rel(after.At), after.Ready)
		default:
			what = fmt.Sprintf("%s: ready %v", rel(after.At), after.Ready)
		}
		t.Logf("%s: the apply that took %s out of %s ended %s (reloaded %v, took %s, decision %d); first servers-state sample after it %s",
			layout, newLeader, syncBackend, rel(ev.At), ev.Reloaded, dur(ev.Duration), ev.Decision, what)
	}
	n := len(tl.toPrimary)
	if layout == "twins" || !found || tl.keySeen.At.IsZero() {
		if n > 0 {
			t.Errorf("%s: %d connections through the sync service reached a primary during the switchover", layout, n)
		} else {
			t.Logf("%s: no connection through the sync service reached a primary", layout)
		}
		if tl.keySeen.At.IsZero() {
			t.Errorf("the sampler never saw the leader key name %s", newLeader)
		}
		return
	}
	// pigsty: only between the leader key's move and the apply's end.
	within := "all within"
	for _, p := range tl.toPrimary {
		if !p.At.Before(ev.At) || !tl.keyBefore.At.IsZero() && !p.Done.After(tl.keyBefore.At) {
			within = "NOT all within"
		}
		if !p.At.Before(ev.At) {
			t.Errorf("a connection through the sync service opened %s, after the apply that took %s out of %s ended (%s), reached a primary (%s)",
				rel(p.At), newLeader, syncBackend, rel(ev.At), r.memberOf(p.A.Addr))
		}
		if !tl.keyBefore.At.IsZero() && !p.Done.After(tl.keyBefore.At) {
			t.Errorf("a connection through the sync service answered %s by a primary (%s), before the leader key moved (after %s)",
				rel(p.Done), r.memberOf(p.A.Addr), rel(tl.keyBefore.At))
		}
	}
	window := ev.At.Sub(tl.keySeen.At)
	if n == 0 {
		t.Logf("%s: no connection through the sync service reached a primary; window from the leader key naming %s (sampled %s) to the end of the apply taking it out of %s (%s): %s",
			layout, newLeader, rel(tl.keySeen.At), syncBackend, rel(ev.At), dur(window))
		return
	}
	t.Logf("%s: %d connections through the sync service reached the new primary %s, opened %s..%s; %s the window from the leader key naming it "+
		"(sampled %s; it moved after %s) to the end of the apply taking it out of %s (%s): %s long (%s from the first to the last of them)",
		layout, n, newLeader, rel(tl.toPrimary[0].At), rel(tl.toPrimary[n-1].At), within, rel(tl.keySeen.At), rel(tl.keyBefore.At),
		syncBackend, rel(ev.At), dur(window), dur(tl.toPrimary[n-1].Done.Sub(tl.toPrimary[0].At)))
}

// ------------------------------------------------------------------ sampler

// syncSample is one look at the sync backend's runtime state and at the
// leader and sync keys.
type syncSample struct {
	At     time.Time
	Ready  []string // servers in admin state ready
	Up     []string // of those, the ones HAProxy runs (op state 2, or 1: UP in slowstart)
	Leader string
	Sync   harness.SyncState
	Err    string // reading the servers state
	// LeaderErr: reading the leader key failed (Leader says nothing).
	LeaderErr bool
}

// syncProbe is one fresh connection through the sync service.
type syncProbe struct {
	At   time.Time // before the connection was opened
	Done time.Time // after the answer came (or the attempt failed)
	A    answer
	Err  string
	Lead string // the leader key right after the answer
}

// syncSampler samples the sync backend's servers state and the DCS keys
// every 25 ms, and probes the sync service over fresh connections back to
// back, until stopped.
type syncSampler struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []syncSample
	probes  []syncProbe
	addrs   map[string]string
}

func startSyncSampler(ctx context.Context, env *harness.Env, hp *haproxyRig, addrs map[string]string) *syncSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &syncSampler{cancel: cancel, addrs: addrs}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		for ctx.Err() == nil {
			smp := syncSample{At: time.Now()}
			if text, err := hp.RT.ShowServersState(ctx); err != nil {
				smp.Err = err.Error()
			} else if st, err := haproxy.ParseServersState(text); err != nil {
				smp.Err = err.Error()
			} else {
				for _, sv := range st {
					if sv.Backend == syncBackend && haproxy.AdminWord(sv.AdminSt) == "ready" {
						smp.Ready = append(smp.Ready, sv.Server)
						if sv.OpState == 1 || sv.OpState == 2 {
							smp.Up = append(smp.Up, sv.Server)
						}
					}
				}
				sort.Strings(smp.Ready)
				sort.Strings(smp.Up)
			}
			var lerr error
			smp.Leader, lerr = env.Leader(ctx, "pg-test")
			smp.LeaderErr = lerr != nil
			smp.Sync, _ = env.Sync(ctx, "pg-test")
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		for ctx.Err() == nil {
			p := syncProbe{At: time.Now()}
			a, err := probe(ctx, svcAddr(testIP, portSync))
			p.Done = time.Now()
			if ctx.Err() != nil {
				return
			}
			p.A = a
			if err != nil {
				p.Err = err.Error()
			}
			p.Lead, _ = env.Leader(ctx, "pg-test")
			s.mu.Lock()
			s.probes = append(s.probes, p)
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return s
}

// firstOn is when the first probe after since answered on addr (since when
// none did).
func (s *syncSampler) firstOn(addr string, since time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.probes {
		if p.Err == "" && p.A.Addr == addr && !p.At.Before(since) {
			return p.At
		}
	}
	return since
}

func (s *syncSampler) stop() {
	s.cancel()
	s.wg.Wait()
}

// syncTimeline is what report found.
type syncTimeline struct {
	syncNamed time.Time // first sample whose sync key names a standby written by the new leader
	// keySeen is the first sample whose leader key names the new leader;
	// keyBefore the one before it: the key moved after keyBefore.At (that
	// sample's read still saw the old value) and by the end of keySeen's
	// read.
	keySeen, keyBefore syncSample
	toPrimary          []syncProbe // probes answered by a server not in recovery
	probesOK           int
}

// report logs the samples' changes (keys, ready and up servers) relative to
// start, the spans with no server ready, and the probes' answers, and
// returns the timeline.
func (s *syncSampler) report(t *testing.T, start time.Time, newLeader string, memberOf func(string) string) syncTimeline {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var tl syncTimeline
	rel := func(at time.Time) string { return "+" + dur(at.Sub(start)) }
	var prev string
	var emptyFrom time.Time
	var empties []string
	var emptyTotal time.Duration
	errs := 0
	for _, smp := range s.samples {
		if smp.Err != "" {
			errs++
			continue
		}
		line := fmt.Sprintf("leader %q sync %s ready %v up %v", smp.Leader, smp.Sync.Raw, smp.Ready, smp.Up)
		if line != prev {
			t.Logf("sample %s: %s", rel(smp.At), line)
			prev = line
		}
		if tl.syncNamed.IsZero() && smp.Leader == newLeader && smp.Sync.Leader == newLeader && len(smp.Sync.Standbys) > 0 {
			tl.syncNamed = smp.At
		}
		if len(smp.Ready) == 0 && emptyFrom.IsZero() {
			emptyFrom = smp.At
		}
		if len(smp.Ready) > 0 && !emptyFrom.IsZero() {
			empties = append(empties, fmt.Sprintf("%s..%s", rel(emptyFrom), rel(smp.At)))
			emptyTotal += smp.At.Sub(emptyFrom)
			emptyFrom = time.Time{}
		}
	}
	if !emptyFrom.IsZero() {
		last := s.samples[len(s.samples)-1].At
		empties = append(empties, fmt.Sprintf("%s..%s (still at the end)", rel(emptyFrom), rel(last)))
		emptyTotal += last.Sub(emptyFrom)
	}
	// When the leader key named the new leader, and when its server left
	// the sync backend's ready servers after that.
	var keyMoved, left time.Time
	var before syncSample
	for _, smp := range s.samples {
		if smp.Err != "" || smp.LeaderErr {
			continue
		}
		if keyMoved.IsZero() && smp.Leader == newLeader {
			keyMoved = smp.At
			tl.keySeen, tl.keyBefore = smp, before
		}
		before = smp
		if !keyMoved.IsZero() && !slices.Contains(smp.Ready, newLeader) {
			left = smp.At
			break
		}
	}
	if !keyMoved.IsZero() && !left.IsZero() {
		t.Logf("the new leader %s left the sync backend's ready servers %s after the leader key named it (sampled every 25 ms)",
			newLeader, dur(left.Sub(keyMoved)))
	}
	t.Logf("%d servers-state samples (%d failed reads) over %s", len(s.samples), errs, dur(s.samples[len(s.samples)-1].At.Sub(s.samples[0].At)))
	if len(empties) == 0 {
		t.Logf("the sync backend always had a server in the admin state ready")
	} else {
		t.Logf("the sync backend had no server in the admin state ready for %s in all: %s", dur(emptyTotal), strings.Join(empties, ", "))
	}
	// Probes: runs of the same outcome.
	prev = ""
	var runFrom time.Time
	n := 0
	flush := func(at time.Time) {
		if prev != "" {
			t.Logf("probes %s..%s: %d x %s", rel(runFrom), rel(at), n, prev)
		}
	}
	for _, p := range s.probes {
		var o string
		if p.Err != "" {
			o = "error"
		} else {
			tl.probesOK++
			o = fmt.Sprintf("%s in recovery %v", memberOf(p.A.Addr), p.A.InRecovery)
			if !p.A.InRecovery {
				tl.toPrimary = append(tl.toPrimary, p)
				t.Logf("probe %s..%s answered by a primary: %s (leader key %q)", rel(p.At), rel(p.Done), memberOf(p.A.Addr), p.Lead)
			}
		}
		if o != prev {
			flush(p.At)
			prev, runFrom, n = o, p.At, 0
		}
		n++
	}
	if len(s.probes) > 0 {
		flush(s.probes[len(s.probes)-1].At)
	}
	return tl
}

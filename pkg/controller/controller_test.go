package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

const testInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.0.11: { pg_seq: 1, pg_role: primary }
        127.0.0.12: { pg_seq: 2, pg_role: replica }
        127.0.0.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-test }
`

func loadInventory(t testing.TB) *topology.Inventory {
	t.Helper()
	inv, err := topology.Parse("test.yml", []byte(testInventory))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// state builds the DCS view of pg-test with the given leader ("" = no key).
func state(rev int64, leader string, xlog int64, members ...string) patroni.Snapshot {
	cs := &patroni.ClusterState{Scope: "pg-test", Leader: leader, Members: map[string]*patroni.Member{}, Revision: rev}
	for _, m := range members {
		role := patroni.RoleReplica
		if m == leader {
			role = patroni.RolePrimary
		}
		x := xlog
		seq := m[len(m)-1:]
		cs.Members[m] = &patroni.Member{Name: m, Host: "127.0.0.1" + seq, Port: 5432, APIPort: 8008, Role: role,
			RawRole: role, State: "running", Timeline: 1, XLogLocation: &x}
	}
	return patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: map[string]*patroni.ClusterState{"pg-test": cs}}
}

// fakeTarget records every Apply and answers with the injected error.
type fakeTarget struct {
	mu      sync.Mutex
	applies [][]services.Service
	diffs   int
	err     error
}

func (f *fakeTarget) Name() string { return "fake" }

func (f *fakeTarget) Diff(ctx context.Context, d []services.Service) ([]target.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.diffs++
	return []target.Change{{Kind: target.KindUpdateServer, Backend: "x"}}, f.err
}

func (f *fakeTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return target.Result{}, f.err
	}
	f.applies = append(f.applies, d)
	return target.Result{Changes: []target.Change{{Kind: target.KindUpdateServer, Backend: "pg-test-replica"}}, Reloaded: true, ReloadID: fmt.Sprint(len(f.applies))}, nil
}

func (f *fakeTarget) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applies)
}

func (f *fakeTarget) last() []services.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applies) == 0 {
		return nil
	}
	return f.applies[len(f.applies)-1]
}

// step runs one reconcile and lets every worker handle its pending job
// synchronously: the loop's logic without its timers.
func step(c *Controller, force bool) {
	c.ReconcileOnce(force)
	for _, w := range c.workers {
		w.mu.Lock()
		j := w.pending
		w.pending = nil
		w.mu.Unlock()
		if j != nil {
			w.handle(context.Background(), j)
		}
	}
}

// backups returns the backup servers of service name, as "a,b".
func backups(svcs []services.Service, name string) string {
	return serversWhere(svcs, name, func(sv services.Server) bool { return sv.Backup })
}

// serversWhere returns the servers of service name for which keep is true, as "a,b".
func serversWhere(svcs []services.Service, name string, keep func(services.Server) bool) string {
	var out []string
	for _, s := range svcs {
		if s.Name != name {
			continue
		}
		for _, sv := range s.Servers {
			if keep(sv) {
				out = append(out, sv.Name)
			}
		}
	}
	return strings.Join(out, ",")
}

func serverNames(svcs []services.Service, name string) string {
	return serversWhere(svcs, name, func(services.Server) bool { return true })
}

func TestReconcile(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	tests := []struct {
		name string
		// steps: snapshots observed in order, each followed by a reconcile.
		steps []patroni.Snapshot
		// connected reports the etcd watch health during the last step.
		disconnected bool
		wantApplies  int
		wantBackup   string // backup servers of pg-test-replica in the last apply
		wantFrozen   bool
	}{
		{name: "initial", steps: []patroni.Snapshot{state(10, "pg-test-1", 100, all...)}, wantApplies: 1, wantBackup: "pg-test-1"},
		{name: "switchover moves the backup flag", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 100, all...), state(20, "pg-test-2", 100, all...)}, wantApplies: 2, wantBackup: "pg-test-2"},
		{name: "xlog churn never reaches HAProxy", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 100, all...), state(11, "pg-test-1", 200, all...), state(12, "pg-test-1", 300, all...)},
			wantApplies: 1, wantBackup: "pg-test-1"},
		{name: "leader key gone keeps the last leader (only the write fence changes)", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 100, all...), state(11, "", 100, all...)}, wantApplies: 2, wantBackup: "pg-test-1"},
		{name: "leader key and member expired together keep the roles (only the write fence changes)", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 100, all...), state(11, "", 100, "pg-test-2", "pg-test-3")}, wantApplies: 2, wantBackup: "pg-test-1"},
		{name: "failover with the old primary gone", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 100, all...), state(30, "pg-test-3", 100, "pg-test-2", "pg-test-3")},
			wantApplies: 2, wantBackup: "pg-test-3"},
		{name: "etcd unreachable freezes", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 100, all...), state(20, "pg-test-2", 100, all...)}, disconnected: true,
			wantApplies: 1, wantBackup: "pg-test-1", wantFrozen: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTarget{}
			c := New(loadInventory(t), []target.Target{ft}, Options{})
			connected := true
			c.SetHealth("/pg", func() patroni.WatchStatus {
				return patroni.WatchStatus{Connected: connected, LastContact: time.Now()}
			})
			for i, s := range tc.steps {
				if i == len(tc.steps)-1 && tc.disconnected {
					connected = false
				}
				c.Observe(s)
				step(c, false)
			}
			if got := ft.count(); got != tc.wantApplies {
				t.Fatalf("applies = %d, want %d", got, tc.wantApplies)
			}
			if got := backups(ft.last(), "pg-test-replica"); got != tc.wantBackup {
				t.Errorf("replica backups = %q, want %q", got, tc.wantBackup)
			}
			st := c.Status()
			frozen := st.Clusters[0].Frozen != ""
			if frozen != tc.wantFrozen {
				t.Errorf("frozen = %q, want frozen=%v", st.Clusters[0].Frozen, tc.wantFrozen)
			}
			if tc.wantFrozen && st.Ready {
				t.Error("a frozen view must not be ready")
			}
		})
	}
}

func TestNoSnapshotNoApply(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	step(c, true)
	if ft.count() != 0 {
		t.Fatalf("applied %d times without any DCS view", ft.count())
	}
	if st := c.Status(); st.Ready || st.Clusters[0].Frozen == "" {
		t.Errorf("want not ready and frozen without a snapshot: %+v", st.Clusters[0])
	}
}

func TestResyncReapplies(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, false)
	step(c, false)
	if ft.count() != 1 {
		t.Fatalf("unchanged plan applied again: %d", ft.count())
	}
	step(c, true)
	if ft.count() != 2 {
		t.Fatalf("resync did not re-apply: %d", ft.count())
	}
}

func TestNeverEmptiedByMissingData(t *testing.T) {
	ft := &fakeTarget{}
	inv, err := topology.Parse("duo.yml", []byte(`
all:
  children:
    pg-duo:
      hosts:
        127.0.0.21: { pg_seq: 1, pg_role: primary }
        127.0.0.22: { pg_seq: 2, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-duo }
`))
	if err != nil {
		t.Fatal(err)
	}
	c := New(inv, []target.Target{ft}, Options{})
	mk := func(rev int64, members map[string]string) patroni.Snapshot {
		cs := &patroni.ClusterState{Scope: "pg-duo", Leader: "pg-duo-1", Members: map[string]*patroni.Member{}, Revision: rev}
		for name, role := range members {
			cs.Members[name] = &patroni.Member{Name: name, Role: role, RawRole: role, State: "running"}
		}
		return patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: map[string]*patroni.ClusterState{"pg-duo": cs}}
	}
	c.Observe(mk(10, map[string]string{"pg-duo-1": "primary", "pg-duo-2": "replica"}))
	step(c, false)
	if got := serverNames(ft.last(), "pg-duo-offline"); got != "pg-duo-2" {
		t.Fatalf("offline servers = %q", got)
	}
	// pg-duo-2's member key vanishes (lease expired, DCS data missing): the
	// offline backend must keep its server.
	c.Observe(mk(11, map[string]string{"pg-duo-1": "primary"}))
	step(c, false)
	if got := serverNames(ft.last(), "pg-duo-offline"); got != "pg-duo-2" {
		t.Errorf("offline servers after missing member = %q, want pg-duo-2 kept", got)
	}
}

func TestFailingTargetRetriesAndReports(t *testing.T) {
	ft := &fakeTarget{err: errors.New("connection refused")}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	c.ReconcileOnce(false)
	w := c.workers[0]
	j := w.pending
	w.pending = nil
	if w.handle(context.Background(), j) {
		t.Fatal("a failed apply must ask for a retry")
	}
	st := c.Status()
	if st.Ready || st.Targets[0].State != "failing" || st.Targets[0].Failures != 1 || !strings.Contains(st.Targets[0].LastError, "refused") {
		t.Fatalf("status after failure: %+v", st.Targets[0])
	}
	ft.mu.Lock()
	ft.err = nil
	ft.mu.Unlock()
	if !w.handle(context.Background(), j) {
		t.Fatal("retry failed")
	}
	if st := c.Status(); !st.Ready || st.Targets[0].State != "in_sync" {
		t.Fatalf("status after recovery: ready=%v %v %+v", st.Ready, st.NotReady, st.Targets[0])
	}
	if b := backoff(500*time.Millisecond, 30*time.Second, 10); b != 30*time.Second {
		t.Errorf("backoff not capped: %v", b)
	}
}

func TestGateAndDryRun(t *testing.T) {
	t.Run("not the elected controller", func(t *testing.T) {
		ft := &fakeTarget{}
		c := New(loadInventory(t), []target.Target{ft}, Options{Gate: func() bool { return false }})
		c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
		step(c, true)
		if ft.count() != 0 || c.Status().Targets[0].State != "standby" {
			t.Fatalf("a standby controller applied: %d %+v", ft.count(), c.Status().Targets[0])
		}
	})
	t.Run("dry run", func(t *testing.T) {
		ft := &fakeTarget{}
		c := New(loadInventory(t), []target.Target{ft}, Options{DryRun: true})
		c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
		step(c, true)
		ts := c.Status().Targets[0]
		if ft.count() != 0 || ft.diffs != 1 || ts.State != "dry_run" || len(ts.PendingChanges) != 1 {
			t.Fatalf("dry run: applies=%d diffs=%d %+v", ft.count(), ft.diffs, ts)
		}
	})
}

// TestRunLoop drives the real loop (timers, workers) and waits on conditions.
func TestRunLoop(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Debounce: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	c.Observe(state(10, "pg-test-1", 1, all...))
	waitFor(t, func() bool { return backups(ft.last(), "pg-test-replica") == "pg-test-1" })
	c.Observe(state(20, "pg-test-3", 1, all...))
	waitFor(t, func() bool { return backups(ft.last(), "pg-test-replica") == "pg-test-3" })
	st := c.Status()
	var applied int
	for _, e := range st.History {
		if e.Kind == "applied" {
			applied++
		}
	}
	if applied != 2 {
		t.Errorf("history has %d applied events, want 2: %+v", applied, st.History)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// forcedDown reports whether server is forced DOWN (the write fence) in
// service name of svcs.
func forcedDown(svcs []services.Service, name, server string) bool {
	for _, s := range svcs {
		if s.Name != name {
			continue
		}
		for _, sv := range s.Servers {
			if sv.Name == server {
				return sv.ForceDown
			}
		}
	}
	return false
}

// weightOf returns server's weight in service name of svcs (-1 if absent).
func weightOf(svcs []services.Service, name, server string) int {
	for _, s := range svcs {
		if s.Name != name {
			continue
		}
		for _, sv := range s.Servers {
			if sv.Name == server {
				return sv.Weight
			}
		}
	}
	return -1
}

func TestFenceReleasedLeader(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	tests := []struct {
		name  string
		steps []patroni.Snapshot
		// advance moves the clock before the last step
		advance time.Duration
		// pg-test-1 forced DOWN (the write fence) in the primary, default
		// and replica services after the last step
		primary, dflt, replica bool
	}{
		{name: "steady", steps: []patroni.Snapshot{state(10, "pg-test-1", 1, all...)}},
		{name: "leader key released, member key kept: fenced from writes", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(11, "", 1, all...)}, primary: true, dflt: true},
		{name: "still fenced right after the new leader takes the key", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(11, "", 1, all...), state(12, "pg-test-2", 1, all...)}, primary: true, dflt: true},
		{name: "fence lifted FenceHold after the new leader took the key", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(11, "", 1, all...), state(12, "pg-test-2", 1, all...), state(13, "pg-test-2", 1, all...)},
			advance: 6 * time.Second},
		{name: "unfenced once it leads again", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(11, "", 1, all...), state(12, "pg-test-2", 1, all...), state(13, "pg-test-1", 1, all...)}},
		{name: "switchover requested: not fenced at the request", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2")}},
		{name: "switchover request dropped: fence lifted", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"), state(12, "pg-test-1", 1, all...)}},
		{name: "scheduled switchover does not fence early", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), scheduled(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"))}},
		{name: "scheduled switchover: fenced when the leader key goes after its time came", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), scheduledAt(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"), time.Now().Add(3*time.Second)),
			scheduledAt(requested(state(12, "", 1, all...), "pg-test-1", "pg-test-2"), time.Now().Add(3*time.Second))},
			advance: 4 * time.Second, primary: true, dflt: true},
		{name: "requested, released, new leader: still fenced", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"),
			requested(state(12, "", 1, all...), "pg-test-1", "pg-test-2"), state(13, "pg-test-2", 1, all...)}, primary: true, dflt: true},
		{name: "lease expiry (crash): the dead primary is fenced at once", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(11, "", 1, "pg-test-2", "pg-test-3")}, primary: true, dflt: true},
		{name: "lease expiry with failsafe_mode is not a release: its /primary decides", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), failsafe(state(11, "", 1, "pg-test-2", "pg-test-3"))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTarget{}
			now := time.Now()
			c := New(loadInventory(t), []target.Target{ft}, Options{Now: func() time.Time { return now }})
			for i, s := range tc.steps {
				if i == len(tc.steps)-1 {
					now = now.Add(tc.advance)
				}
				c.Observe(s)
				step(c, false)
			}
			got := ft.last()
			if p, d, r := forcedDown(got, "pg-test-primary", "pg-test-1"), forcedDown(got, "pg-test-default", "pg-test-1"), forcedDown(got, "pg-test-replica", "pg-test-1"); p != tc.primary || d != tc.dflt || r != tc.replica {
				t.Errorf("pg-test-1 forced DOWN in primary/default/replica = %t/%t/%t, want %t/%t/%t", p, d, r, tc.primary, tc.dflt, tc.replica)
			}
			// The fence is runtime health only: the weights stay as they are.
			for _, svc := range []string{"pg-test-primary", "pg-test-default", "pg-test-replica"} {
				if w := weightOf(got, svc, "pg-test-1"); w != 100 {
					t.Errorf("pg-test-1 weight %d in %s, want 100", w, svc)
				}
			}
		})
	}
}

// failsafe sets failsafe_mode in s's dynamic config.
func failsafe(s patroni.Snapshot) patroni.Snapshot {
	s.Clusters["pg-test"].FailsafeMode = true
	return s
}

// requested adds a switchover request (the failover key) to s.
func requested(s patroni.Snapshot, leader, candidate string) patroni.Snapshot {
	s.Clusters["pg-test"].Failover = &patroni.Failover{Leader: leader, Member: candidate}
	return s
}

// scheduled makes s's switchover request a scheduled one.
func scheduled(s patroni.Snapshot) patroni.Snapshot {
	s.Clusters["pg-test"].Failover.ScheduledAt = "2030-01-01T00:00:00+00:00"
	return s
}

// scheduledAt gives s's switchover request a scheduled time.
func scheduledAt(s patroni.Snapshot, at time.Time) patroni.Snapshot {
	s.Clusters["pg-test"].Failover.ScheduledAt = at.UTC().Format("2006-01-02T15:04:05.999999-07:00")
	return s
}

// TestScheduledSwitchoverWakesTheLoop: the periodic check notices when a
// scheduled switchover comes due, without any DCS event.
func TestScheduledSwitchoverWakesTheLoop(t *testing.T) {
	now := time.Now()
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{Now: func() time.Time { return now }})
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	c.Observe(state(10, "pg-test-1", 1, all...))
	step(c, false)
	c.Observe(scheduledAt(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2"), now.Add(2*time.Second)))
	step(c, false)
	c.mu.Lock()
	early := c.fenceExpired(now)
	due := c.fenceExpired(now.Add(3 * time.Second))
	c.mu.Unlock()
	if early || !due {
		t.Errorf("fenceExpired before/after the scheduled time = %v/%v, want false/true", early, due)
	}
}

// forcedUp returns the servers with ForceUp in service name.
func forcedUp(svcs []services.Service, name string) string {
	return serversWhere(svcs, name, func(sv services.Server) bool { return sv.ForceUp })
}

func TestForceUpNewPrimary(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	promotedRole := func(s patroni.Snapshot, role string) patroni.Snapshot {
		s.Clusters["pg-test"].Members[s.Clusters["pg-test"].Leader].Role = role
		return s
	}
	tests := []struct {
		name    string
		steps   []patroni.Snapshot
		advance time.Duration
		primary string // ForceUp servers of pg-test-primary after the last step
		replica string
	}{
		{name: "steady leader is left to its checks", steps: []patroni.Snapshot{state(10, "pg-test-1", 1, all...)}},
		{name: "new leader reported primary is forced up in write services", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(20, "pg-test-2", 1, all...)}, primary: "pg-test-2"},
		{name: "new leader not yet promoted is not", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), promotedRole(state(20, "pg-test-2", 1, all...), patroni.RolePromoted)}},
		{name: "through a leaderless switchover", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(11, "", 1, all...), state(20, "pg-test-3", 1, all...)}, primary: "pg-test-3"},
		{name: "window over: back to health checks", steps: []patroni.Snapshot{
			state(10, "pg-test-1", 1, all...), state(20, "pg-test-2", 1, all...), state(21, "pg-test-2", 1, all...)}, advance: 16 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTarget{}
			now := time.Now()
			c := New(loadInventory(t), []target.Target{ft}, Options{Now: func() time.Time { return now }})
			for i, s := range tc.steps {
				if i == len(tc.steps)-1 {
					now = now.Add(tc.advance)
				}
				c.Observe(s)
				step(c, false)
			}
			got := ft.last()
			if p, r := forcedUp(got, "pg-test-primary"), forcedUp(got, "pg-test-replica"); p != tc.primary || r != tc.replica {
				t.Errorf("forced up: primary %q replica %q, want %q %q", p, r, tc.primary, tc.replica)
			}
			if d := forcedUp(got, "pg-test-default"); d != tc.primary {
				t.Errorf("forced up in the default (write) service: %q, want %q", d, tc.primary)
			}
		})
	}
}

// TestFailedApplyThenEarlierStateApplied: an apply that fails may have
// changed part of the target (the API driver's runtime flips go on past a
// failed one), so a job equal to the state applied before it is applied
// again, not skipped as unchanged: a switchover undone while its apply
// failed would otherwise leave the undone flips in HAProxy until a resync.
func TestFailedApplyThenEarlierStateApplied(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{})
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	c.Observe(state(10, "pg-test-1", 100, all...))
	c.ReconcileOnce(false)
	w := c.workers[0]
	jA := w.pending
	w.pending = nil
	if !w.handle(context.Background(), jA) {
		t.Fatal("first apply failed")
	}
	c.Observe(state(20, "pg-test-3", 200, all...))
	c.ReconcileOnce(false)
	jB := w.pending
	w.pending = nil
	if jB == nil || sameDesired(jA.desired, jB.desired) {
		t.Fatal("the switchover made no new job")
	}
	ft.mu.Lock()
	ft.err = errors.New("500 after some runtime PUTs")
	ft.mu.Unlock()
	if w.handle(context.Background(), jB) {
		t.Fatal("a failed apply must ask for a retry")
	}
	ft.mu.Lock()
	ft.err = nil
	ft.mu.Unlock()
	before := ft.count()
	if !w.handle(context.Background(), jA) {
		t.Fatal("apply of the earlier state failed")
	}
	if ft.count() != before+1 || !sameDesired(ft.last(), jA.desired) {
		t.Fatalf("the earlier state after a failed apply: %d applies (want %d), skipped as unchanged", ft.count()-before, 1)
	}
	if st := c.Status().Targets[0]; st.State != "in_sync" {
		t.Errorf("state %q after the re-apply", st.State)
	}
	// Applied again, the same job is unchanged: skipped.
	if !w.handle(context.Background(), jA) || ft.count() != before+1 {
		t.Errorf("an unchanged job after a success applied again: %d applies", ft.count()-before)
	}
}

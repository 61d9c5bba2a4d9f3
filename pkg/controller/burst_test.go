package controller

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// batchingTarget is a target.Batcher that records what each apply had
// (the primary service's forced-down servers and the replica service's
// backups, by cluster).
type batchingTarget struct {
	mu      sync.Mutex
	applies [][]services.Service
}

func (b *batchingTarget) Name() string      { return "batching" }
func (b *batchingTarget) BatchBursts() bool { return true }
func (b *batchingTarget) Diff(context.Context, []services.Service) ([]target.Change, error) {
	return nil, nil
}
func (b *batchingTarget) Apply(_ context.Context, d []services.Service) (target.Result, error) {
	b.mu.Lock()
	b.applies = append(b.applies, d)
	b.mu.Unlock()
	return target.Result{}, nil
}
func (b *batchingTarget) since(n int) [][]services.Service {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]services.Service(nil), b.applies[n:]...)
}
func (b *batchingTarget) count() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.applies) }

// promotedIn counts the clusters of desired (the twin layout) whose
// replica service has member 2's normal twin inactive (member 2 took the
// leader key: its backup twin, which tracks the primary service's server,
// takes the reads it gets).
func promotedIn(desired []services.Service, n int) int {
	inactive := map[string]bool{}
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.Disabled {
				inactive[d.Name+"/"+sv.Name] = true
			}
		}
	}
	k := 0
	for i := 0; i < n; i++ {
		if inactive[fleetCluster(i)+"-replica/"+fleetCluster(i)+"-2"] {
			k++
		}
	}
	return k
}

// burstFleet is a controller over n clusters with a batchingTarget, fed
// complete DCS snapshots by hand (observe), whose burst wait ends only
// with the burst (burstMax an hour).
type burstFleet struct {
	c        *Controller
	bt       *batchingTarget
	mu       sync.Mutex
	clusters map[string]*patroni.ClusterState
	rev      int64
}

func newBurstFleet(t *testing.T, n int) *burstFleet {
	f := &burstFleet{bt: &batchingTarget{}, clusters: map[string]*patroni.ClusterState{}, rev: 10}
	f.c = New(fleetInventory(t, n), []target.Target{target.WithTwins(f.bt)}, Options{Prober: nopProber{}}) // the 50 ms debounce
	f.c.checkEvery = time.Hour
	f.c.workers[0].burstMax = time.Hour
	return f
}

// put sets clusters from kvs; call inside observe's change.
func (f *burstFleet) put(kvs []patroni.KV) {
	for k, v := range patroni.Decode("/pg", kvs) {
		f.clusters[k] = v
	}
}

// observe hands the controller a new snapshot, changed by change (nil:
// the same keys rewritten), and returns its revision.
func (f *burstFleet) observe(change func()) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := make(map[string]*patroni.ClusterState, len(f.clusters))
	for k, v := range f.clusters {
		next[k] = v
	}
	f.clusters = next
	if change != nil {
		change()
	}
	f.rev++
	f.c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: f.rev, At: time.Now(), Clusters: f.clusters})
	return f.rev
}

// TestBurstAppliedWhole: on a target.Batcher, a lone cluster's change is
// applied at once while DCS snapshots keep coming; a burst (a reconcile
// that changed burstClusters clusters or more: a mass failover's expired
// leader keys) waits until its events stop changing the plan, and the
// whole burst (the expiries and every new leader written after them, in
// snapshots too small to be bursts themselves) is one apply; snapshots
// that change nothing (Patroni's members rewriting their keys) do not
// keep it waiting.
func TestBurstAppliedWhole(t *testing.T) {
	const n = 64
	f := newBurstFleet(t, n)
	c, bt, observe, put := f.c, f.bt, f.observe, f.put
	rev := &f.rev
	runInBackground(t, c)
	observe(func() {
		for i := 0; i < n; i++ {
			put(fleetKVs(i, 1, *rev))
		}
	})
	waitFor(t, func() bool { return bt.count() > 0 })

	// A lone switchover while snapshots keep coming (other clusters' keys
	// rewritten unchanged): applied without waiting for them to stop.
	// churn: snapshots that change nothing, as Patroni's members rewrite
	// their keys every loop_wait (~300 a second at 3,000 members).
	churn := func() (stop func()) {
		quit := make(chan struct{})
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			for {
				select {
				case <-quit:
					return
				case <-time.After(2 * time.Millisecond):
					observe(nil)
				}
			}
		}()
		return func() { close(quit); <-fed }
	}
	stopChurn := churn()
	before := bt.count()
	observe(func() { put(fleetKVs(0, 2, *rev)) })
	waitFor(t, func() bool {
		for _, a := range bt.since(before) {
			if promotedIn(a, 1) == 1 {
				return true
			}
		}
		return false
	})
	observe(func() { put(fleetKVs(0, 1, *rev)) }) // back, for the burst below
	waitFor(t, func() bool { a := bt.since(bt.count() - 1); return promotedIn(a[0], 1) == 0 })

	// The burst, with the churn going on: every leader key expires in one
	// snapshot, then the new leaders come 4 clusters per snapshot. The
	// wait ends with the burst (burstMax is an hour), not with the churn.
	before = bt.count()
	observe(func() {
		for i := 0; i < n; i++ {
			put(fleetKVs(i, 0, *rev))
		}
	})
	for from := 0; from < n; from += 4 {
		time.Sleep(10 * time.Millisecond) // the writer's pace (160 ms in all), not a wait for a result
		observe(func() {
			for i := from; i < from+4; i++ {
				put(fleetKVs(i, 2, *rev))
			}
		})
	}
	waitFor(t, func() bool {
		a := bt.since(before)
		return len(a) > 0 && promotedIn(a[len(a)-1], n) == n
	})
	stopChurn()
	for k, a := range bt.since(before) {
		if got := promotedIn(a, n); got != n {
			t.Errorf("apply %d of the burst had %d of %d new leaders: the burst was split", k+1, got, n)
		}
	}
}

// TestBurstFlag: a reconcile that changes burstClusters clusters or more
// plans a burst; so does any reconcile within burstMaxWait after it (a
// probe-woken one took the burst's first snapshots and was applied alone,
// 0.7–1.2 s through 2.9.9, ahead of the burst's apply); a lone change
// with no burst before it does not.
func TestBurstFlag(t *testing.T) {
	const n = 40
	clusters := map[string]*patroni.ClusterState{}
	rev := int64(10)
	put := func(kvs []patroni.KV) {
		for k, v := range patroni.Decode("/pg", kvs) {
			clusters[k] = v
		}
	}
	c := New(fleetInventory(t, n), []target.Target{target.WithTwins(&batchingTarget{})}, Options{Prober: nopProber{}})
	w := c.workers[0]
	reconcile := func(change func()) bool {
		t.Helper()
		next := make(map[string]*patroni.ClusterState, len(clusters))
		for k, v := range clusters {
			next[k] = v
		}
		clusters = next
		change()
		rev++
		c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: clusters})
		c.ReconcileOnce(false)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.pending == nil {
			t.Fatal("no job")
		}
		b := w.pending.burst
		w.pending = nil
		return b
	}
	if reconcile(func() {
		for i := 0; i < n; i++ {
			put(fleetKVs(i, 1, rev))
		}
	}) != true {
		t.Error("the first plan of 40 clusters is no burst")
	}
	c.burstAt.Store(0) // long ago
	if reconcile(func() { put(fleetKVs(0, 0, rev)) }) {
		t.Error("one cluster's change, no burst before it: a burst")
	}
	if !reconcile(func() {
		for i := 1; i < n; i++ {
			put(fleetKVs(i, 0, rev))
		}
	}) {
		t.Error("39 clusters' leader keys expired: no burst")
	}
	if !reconcile(func() { put(fleetKVs(0, 2, rev)) }) {
		t.Error("one cluster's change right after a burst: not part of it")
	}
}

// TestBurstWaitsForEtcd: a burst whose second half etcd has not handed to
// the watch yet when its events pause (under load it came 0.3 s after the
// first, past burstQuiet) is still one apply: once quiet, the wait asks
// the watch to catch up with etcd's revision (here the catch-up hands out
// the new leaders, as a lagging watch would), and waits for their plan.
// Without a catch-up (none registered) the first half goes alone.
func TestBurstWaitsForEtcd(t *testing.T) {
	const n = 64
	for _, withCatchUp := range []bool{true, false} {
		f := newBurstFleet(t, n)
		c, bt, observe, put := f.c, f.bt, f.observe, f.put
		// withheld: the new leaders, written to etcd but not yet handed
		// to the watch; the catch-up hands them out.
		var withheld atomic.Bool
		var catchUps atomic.Int32
		if withCatchUp {
			c.SetCatchUp("/pg", func(context.Context) (int64, error) {
				catchUps.Add(1)
				if withheld.CompareAndSwap(true, false) {
					return observe(func() {
						for i := 0; i < n; i++ {
							put(fleetKVs(i, 2, f.rev))
						}
					}), nil
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				return f.rev, nil
			})
		}
		runInBackground(t, c)
		observe(func() {
			for i := 0; i < n; i++ {
				put(fleetKVs(i, 1, f.rev))
			}
		})
		waitFor(t, func() bool { return bt.count() > 0 })
		before := bt.count()
		withheld.Store(true)
		observe(func() { // every leader key expires
			for i := 0; i < n; i++ {
				put(fleetKVs(i, 0, f.rev))
			}
		})
		if !withCatchUp {
			waitFor(t, func() bool { return bt.count() > before })
			if got := promotedIn(bt.since(before)[0], n); got != 0 {
				t.Fatalf("without a catch-up: the burst's first apply had %d new leaders, want 0 (the test's premise)", got)
			}
			continue
		}
		waitFor(t, func() bool { return bt.count() > before })
		if got := promotedIn(bt.since(before)[0], n); got != n {
			t.Errorf("the burst's first apply had %d of %d new leaders: applied before catching up with etcd", got, n)
		}
		if catchUps.Load() < 2 {
			t.Errorf("%d catch-ups: want one that brought the new leaders and one that found nothing more", catchUps.Load())
		}
	}
}

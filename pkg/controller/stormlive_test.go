package controller

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// keepingTarget keeps the last desired state it applied, as a driver's
// cached read of what runs does (the Data Plane API driver's synced
// state), and, while measure is set, takes the live heap in each Apply:
// the moment of a storm when the old state and the new are both held.
type keepingTarget struct {
	last    []services.Service
	measure bool
	live    uint64 // the largest live heap seen in an Apply while measuring
	applies int
}

func (*keepingTarget) Name() string { return "keeping" }
func (*keepingTarget) Diff(context.Context, []services.Service) ([]target.Change, error) {
	return nil, nil
}
func (t *keepingTarget) Apply(_ context.Context, desired []services.Service) (target.Result, error) {
	t.applies++
	if t.measure {
		if l := liveHeap(); l > t.live {
			t.live = l
		}
		if f := os.Getenv("PGSVC_STORM_HEAP_PROFILE"); f != "" {
			if out, err := os.Create(f); err == nil {
				_ = pprof.Lookup("heap").WriteTo(out, 0)
				out.Close()
			}
		}
	}
	t.last = desired
	return target.Result{}, nil
}

// liveHeap is the heap in use after a full collection, in bytes.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMassFailoverStormLive1000 measures what a mass failover at
// N = 1,000 (twin layout) holds at its peak: every cluster's leader key
// moves in one snapshot; the reconcile starts 1,000 transitions and their
// probes (a prober that answers nothing), plans every cluster again and
// hands the new desired state to a twins target whose driver still holds
// the layout it applied last. live-B is the live heap (after runtime.GC)
// inside that apply; storm-B is what it adds to the live heap of the idle
// controller before the failover (also after runtime.GC).
func BenchmarkMassFailoverStormLive1000(b *testing.B) {
	const n = 1000
	if os.Getenv("PGSVC_STORM_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	inv := fleetInventory(b, n)
	states := func(leader int, rev int64) map[string]*patroni.ClusterState {
		out := map[string]*patroni.ClusterState{}
		for i := 0; i < n; i++ {
			for k, v := range patroni.Decode("/pg", fleetKVs(i, leader, rev)) {
				out[k] = v
			}
		}
		return out
	}
	var live, storm float64
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		kt := &keepingTarget{}
		c := New(inv, []target.Target{target.WithTwins(kt)}, Options{Prober: nopProber{}})
		ctx, cancel := context.WithCancel(context.Background())
		c.startProbing(ctx)
		c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 10, At: time.Now(), Clusters: states(1, 10)})
		step(c, false)
		next := states(2, 11)
		idle := liveHeap()
		kt.measure = true
		b.StartTimer()
		c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 11, At: time.Now(), Clusters: next})
		step(c, false)
		b.StopTimer()
		kt.measure = false
		c.mu.Lock()
		active := len(c.tx.active)
		c.mu.Unlock()
		if kt.applies != 2 || kt.live == 0 || active != n {
			b.Fatalf("%d applies, %d transitions; want 2 and %d", kt.applies, active, n)
		}
		live += float64(kt.live)
		storm += float64(kt.live) - float64(idle)
		c.stopProbing()
		cancel()
		runtime.KeepAlive(c)
		runtime.KeepAlive(next)
	}
	b.ReportMetric(live/float64(b.N), "live-B")
	b.ReportMetric(storm/float64(b.N), "storm-B")
}

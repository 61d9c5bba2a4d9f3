package controller

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// The fleet of integration/cmd/benchscale (make bench-scale): n Pigsty
// clusters of 3 members with Pigsty's four default services each, the
// Patroni 3.0.2 key shapes.

func fleetCluster(i int) string { return fmt.Sprintf("pg-b%04d", i) }

func fleetAddr(i, k int) string {
	idx := i*4 + k
	return fmt.Sprintf("127.90.%d.%d", idx/250, idx%250+1)
}

func fleetInventoryText(n int) string {
	var b strings.Builder
	b.WriteString("all:\n  children:\n")
	for i := 0; i < n; i++ {
		ip := fleetAddr(i, 0)
		fmt.Fprintf(&b, "    %s:\n      hosts:\n", fleetCluster(i))
		for seq := 1; seq <= 3; seq++ {
			role := "replica"
			if seq == 1 {
				role = "primary"
			}
			fmt.Fprintf(&b, "        %s: { pg_seq: %d, pg_role: %s }\n", fleetAddr(i, seq), seq, role)
		}
		fmt.Fprintf(&b, "      vars:\n        pg_cluster: %s\n        pg_default_services:\n", fleetCluster(i))
		fmt.Fprintf(&b, "          - { name: primary, port: 5433, ip: %q, dest: default, check: /primary, selector: \"[]\" }\n", ip)
		fmt.Fprintf(&b, "          - { name: replica, port: 5434, ip: %q, dest: default, check: /read-only, selector: \"[]\", backup: \"[? pg_role == `primary` || pg_role == `offline` ]\" }\n", ip)
		fmt.Fprintf(&b, "          - { name: default, port: 5436, ip: %q, dest: postgres, check: /primary, selector: \"[]\" }\n", ip)
		fmt.Fprintf(&b, "          - { name: offline, port: 5438, ip: %q, dest: postgres, check: /replica, selector: \"[? pg_role == `offline` || pg_offline_query ]\", backup: \"[? pg_role == `replica` && !pg_offline_query]\" }\n", ip)
	}
	b.WriteString("  vars:\n    pg_namespace: /pg\n    pg_default_service_dest: pgbouncer\n")
	return b.String()
}

func fleetInventory(tb testing.TB, n int) *topology.Inventory {
	tb.Helper()
	inv, err := topology.Parse("fleet.yml", []byte(fleetInventoryText(n)))
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}

// fleetKVs is cluster i's Patroni keys with leader seq leader (0: no
// leader key) at revision rev.
func fleetKVs(i, leader int, rev int64) []patroni.KV {
	key := func(rest string) string { return "/pg/" + fleetCluster(i) + "/" + rest }
	kv := func(k, v string) patroni.KV {
		return patroni.KV{Key: key(k), Value: []byte(v), ModRevision: rev, CreateRevision: 1, Version: 1}
	}
	out := []patroni.KV{
		kv("config", `{"ttl":30,"loop_wait":10}`),
		kv("initialize", "7712458376925400000"),
		kv("status", `{"optime":72531312}`),
	}
	if leader > 0 {
		out = append(out, kv("leader", fmt.Sprintf("%s-%d", fleetCluster(i), leader)))
	}
	for seq := 1; seq <= 3; seq++ {
		role := "replica"
		if seq == leader {
			role = "master"
		}
		a := fleetAddr(i, seq)
		out = append(out, kv("members/"+fmt.Sprintf("%s-%d", fleetCluster(i), seq),
			fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":%q,"version":"3.0.2","xlog_location":72531312,"timeline":1}`, a, a, role)))
	}
	return out
}

// nopTarget accepts everything at once.
type nopTarget struct{ applies int }

func (*nopTarget) Name() string { return "nop" }
func (*nopTarget) Diff(context.Context, []services.Service) ([]target.Change, error) {
	return nil, nil
}
func (t *nopTarget) Apply(context.Context, []services.Service) (target.Result, error) {
	t.applies++
	return target.Result{}, nil
}

// nopProber answers nothing (transitions wait for the DCS and the clock).
type nopProber struct{}

func (nopProber) Probe(context.Context, string) patroni.ProbeResult { return patroni.ProbeResult{} }

// BenchmarkReconcileOneChange1000 is the controller's own cost of one DCS
// event at N = 1,000 clusters: one cluster's leader moves; the snapshot has
// that cluster re-decoded (as the watcher sends it) and every other
// cluster's state as before; one reconcile and one hand-off to a target
// that accepts at once (twin layout, as make bench-scale LAYOUT=twins).
func BenchmarkReconcileOneChange1000(b *testing.B) {
	const n = 1000
	inv := fleetInventory(b, n)
	clusters := map[string]*patroni.ClusterState{}
	for i := 0; i < n; i++ {
		for k, v := range patroni.Decode("/pg", fleetKVs(i, 1, 10)) {
			clusters[k] = v
		}
	}
	nt := &nopTarget{}
	c := New(inv, []target.Target{target.WithTwins(nt)}, Options{Prober: nopProber{}})
	rev := int64(10)
	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: clusters})
	step(c, false)
	leader := make([]int, n)
	for i := range leader {
		leader[i] = 1
	}
	b.ReportAllocs()
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		i := (it * 7) % n
		leader[i] = leader[i]%3 + 1
		rev++
		next := make(map[string]*patroni.ClusterState, len(clusters))
		for k, v := range clusters {
			next[k] = v
		}
		for k, v := range patroni.Decode("/pg", fleetKVs(i, leader[i], rev)) {
			next[k] = v
		}
		clusters = next
		c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: clusters})
		step(c, false)
	}
	b.StopTimer()
	if nt.applies < 2 {
		b.Fatalf("%d applies", nt.applies)
	}
	b.ReportMetric(liveHeapMB(), "live-MB")
	runtime.KeepAlive(c)
}

// liveHeapMB is the heap in use after a full collection, in MB: what the
// controller keeps (inventory, plans, desired state, history) at this N.
func liveHeapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / 1e6
}

// BenchmarkReconcileMassFailover1000 is one reconcile and hand-off at
// N = 1,000 when every cluster's leader moved at once (each iteration moves
// them all again): the controller's own cost of a mass failover's event.
func BenchmarkReconcileMassFailover1000(b *testing.B) {
	const n = 1000
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
	nt := &nopTarget{}
	c := New(inv, []target.Target{target.WithTwins(nt)}, Options{Prober: nopProber{}})
	c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: 10, At: time.Now(), Clusters: states(1, 10)})
	step(c, false)
	snaps := make([]map[string]*patroni.ClusterState, 3)
	for l := 1; l <= 3; l++ {
		snaps[l-1] = states(l, int64(10+l))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: int64(20 + it), At: time.Now(), Clusters: snaps[(it+1)%3]})
		step(c, false)
	}
}

// BenchmarkMassFailoverHeap1000 plays a mass failover at N = 1,000 as the
// controller sees it (every cluster's leader key goes, a new leader takes
// it, then its members' keys follow; 20 clusters per reconcile, each a
// hand-off to a twins target) and reports the heap it leaves once quiet:
// live-MB (the objects kept) and inuse-MB (the spans holding them, after
// the release a quiet controller does: what RSS keeps). Their difference
// is fragmentation: long-lived objects made during the burst among its
// garbage.
func BenchmarkMassFailoverHeap1000(b *testing.B) {
	for it := 0; it < b.N; it++ {
		c := massFailover(b, 1000, 20)
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc)/1e6, "live-MB")
		b.ReportMetric(float64(ms.HeapInuse)/1e6, "inuse-MB")
		runtime.KeepAlive(c)
	}
}

// massFailover returns a controller of n clusters after their mass
// failover, batch clusters per reconcile (BenchmarkMassFailoverHeap1000).
func massFailover(tb testing.TB, n, batch int) *Controller {
	inv := fleetInventory(tb, n)
	clusters := map[string]*patroni.ClusterState{}
	put := func(kvs []patroni.KV) {
		for k, v := range patroni.Decode("/pg", kvs) {
			clusters[k] = v
		}
	}
	for i := 0; i < n; i++ {
		put(fleetKVs(i, 1, 10))
	}
	c := New(inv, []target.Target{target.WithTwins(&nopTarget{})}, Options{Prober: nopProber{}})
	rev := int64(10)
	observe := func() {
		rev++
		next := make(map[string]*patroni.ClusterState, len(clusters))
		for k, v := range clusters {
			next[k] = v
		}
		clusters = next
		c.Observe(patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: clusters})
		step(c, false)
	}
	observe()
	for from := 0; from < n; from += batch {
		for i := from; i < from+batch; i++ {
			put(fleetKVs(i, 0, rev)) // the leader key gone
		}
		observe()
		for i := from; i < from+batch; i++ {
			// the new leader key, the members' keys not yet rewritten
			put(append(fleetKVs(i, 0, rev), fleetKVs(i, 2, rev)[3]))
		}
		observe()
		for i := from; i < from+batch; i++ {
			put(fleetKVs(i, 2, rev)) // the members' keys follow
		}
		observe()
	}
	return c
}

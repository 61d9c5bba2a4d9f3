package dataplaneapi

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// viewFleet is n clusters of 3 members in the twin layout (4 services
// each: primary, replica, default, offline), member primary(i) cluster i's
// primary, as the double's external tests build them.
func viewFleet(tb testing.TB, n int, primary func(i int) int) []services.Service {
	tb.Helper()
	var out []services.Service
	for c := 0; c < n; c++ {
		name, net := fmt.Sprintf("pg-v%03d", c), 10+c
		p := primary(c)
		addr := func(i int) string { return fmt.Sprintf("127.%d.%d.%d", net/250, net%250, 10+i) }
		mk := func(svc string, port int, check string, dest int, sel func(i int) (in, backup bool)) services.Service {
			s := services.Service{Cluster: name, Name: name + "-" + svc, Service: svc, IP: "*", Port: port, Check: check,
				Dest: fmt.Sprint(dest), DestPort: dest, Balance: "roundrobin", Maxconn: 5000,
				DefaultServer: "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"}
			for i := 1; i <= 3; i++ {
				if in, backup := sel(i); in {
					s.Servers = append(s.Servers, services.Server{Name: fmt.Sprintf("%s-%d", name, i), Address: addr(i),
						Port: dest, CheckPort: 8008, Weight: 100, Backup: backup})
				}
			}
			return s
		}
		all := func(int) (bool, bool) { return true, false }
		last := 3
		if last == p {
			last--
		}
		svcs := []services.Service{
			mk("primary", 5433+c*10, "/primary", 6432, all),
			mk("replica", 5434+c*10, "/read-only", 6432, func(i int) (bool, bool) { return true, i == p }),
			mk("default", 5436+c*10, "/primary", 5432, all),
			mk("offline", 5438+c*10, "/replica", 5432, func(i int) (bool, bool) { return i != p, i != last }),
		}
		for i := range svcs {
			if svcs[i].Service != "replica" && svcs[i].Service != "offline" {
				continue
			}
			svcs[i].RoleDependent = true
			for _, sv := range svcs[0].Servers {
				sv.Port = svcs[i].DestPort
				sv.Primary = sv.Name == fmt.Sprintf("%s-%d", name, p)
				svcs[i].Candidates = append(svcs[i].Candidates, sv)
			}
		}
		tw, err := services.Twins(svcs)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, tw...)
	}
	return out
}

// BenchmarkReadViewRetained1000 reports the heap an apply's read keeps
// alive while the apply runs (live-B: the state's diff view of every
// desired backend, the admin states and live health it carries), in a
// mass failover of 1,000 clusters in the twin layout (every primary
// moves): the parsed file and the caches are the Target's already, and
// do not count.
func BenchmarkReadViewRetained1000(b *testing.B) {
	srv := dpapitest.NewServer(b, dpapitest.WithAPIVersion(3))
	c, err := New(srv.URL(), Options{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	tg := NewTarget(c, zap.NewNop(), TargetOptions{ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: time.Minute,
		Backoff: time.Millisecond, AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour})
	ctx := context.Background()
	const n = 1000
	a := viewFleet(b, n, func(int) int { return 1 })
	for _, step := range []string{"create", "settle", "idle"} {
		if _, err := tg.Apply(ctx, a); err != nil {
			b.Fatalf("%s: %v", step, err)
		}
	}
	failover := viewFleet(b, n, func(int) int { return 2 })
	if _, err := tg.read(ctx, failover, false); err != nil { // the caches filled
		b.Fatal(err)
	}
	var ms runtime.MemStats
	for b.Loop() {
		liveGC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		st, err := tg.read(ctx, failover, false)
		if err != nil {
			b.Fatal(err)
		}
		liveGC()
		runtime.ReadMemStats(&ms)
		if len(st.diffSet(failover)) != len(failover) {
			b.Fatal("services left out of the read")
		}
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(before)), "live-B")
		runtime.KeepAlive(st)
		runtime.KeepAlive(tg)
	}
}

// BenchmarkAdminNoCutRetained1000 reports the heap a Target keeps between
// applies for the twin layout's admin states of 1,000 clusters, as the
// read-back after the reload that created them left them (waitRuntime),
// and for warnNoCut's memory (live-B: what dropping both frees).
func BenchmarkAdminNoCutRetained1000(b *testing.B) {
	const n = 1000
	a := viewFleet(b, n, func(int) int { return 1 })
	var ms runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		srv := dpapitest.NewServer(b, dpapitest.WithAPIVersion(3))
		c, err := New(srv.URL(), Options{Timeout: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		tg := NewTarget(c, zap.NewNop(), TargetOptions{ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: time.Minute,
			Backoff: time.Millisecond, AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour})
		if _, err := tg.Apply(context.Background(), a); err != nil {
			b.Fatal(err)
		}
		if len(tg.admin.states) == 0 {
			b.Fatalf("%d backends' admin states kept", len(tg.admin.states))
		}
		liveGC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		tg.admin.mu.Lock()
		tg.admin.states, tg.noCut = nil, nil
		tg.admin.mu.Unlock()
		liveGC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(int64(before)-int64(ms.HeapAlloc)), "live-B")
		runtime.KeepAlive(tg)
		runtime.KeepAlive(srv)
		b.StartTimer()
	}
}

// liveGC collects until only what is live is left: a second cycle frees
// what sync.Pools held over the first (their victim caches).
func liveGC() {
	runtime.GC()
	runtime.GC()
}

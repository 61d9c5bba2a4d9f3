package haproxy

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"unique"
	"unsafe"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// twinFleet4 is twinFleet with the 4 services of a Pigsty cluster each
// (primary, replica, default, offline), as bench-scale's twins fleet.
func twinFleet4(n, primary, basePort int) []services.Service {
	one := twinFleet(n, primary, basePort)
	out := make([]services.Service, 0, 4*n)
	for c, s := range one {
		for k, svc := range []string{"primary", "replica", "default", "offline"} {
			t := s
			t.Name = fmt.Sprintf("pg-f%d-%s", c, svc)
			t.Service = svc
			t.Port = basePort + 4*c + k
			t.Servers = append([]services.Server(nil), s.Servers...)
			out = append(out, t)
		}
	}
	return out
}

// BenchmarkReadCacheRetained1000 reports the heap the direct driver's read
// cache keeps for 1,000 clusters of 4 twin services (24,000 servers) after
// a full read: cache-MB is what dropping the cache frees, current-MB what
// it keeps without the parsed file (a runtime apply replaces that with
// the desired state it wrote, which the controller keeps anyway).
func BenchmarkReadCacheRetained1000(b *testing.B) {
	const n = 1000
	r := startRig(b)
	ctx := context.Background()
	fleet := twinFleet4(n, 1, 20000)
	if _, err := r.direct.Apply(ctx, fleet); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r.direct.forgetCache()
		without := liveHeap()
		if _, err := r.direct.Diff(ctx, fleet); err != nil {
			b.Fatal(err)
		}
		with := liveHeap()
		b.ReportMetric(float64(int64(with-without))/1e6, "cache-MB")
		r.direct.cache.mu.Lock()
		r.direct.cache.snap.file = nil
		r.direct.cache.mu.Unlock()
		b.ReportMetric(float64(int64(liveHeap()-without))/1e6, "current-MB")
	}
	runtime.KeepAlive(fleet)
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestReadCacheKeepsNoAnswerText: what a full read caches points into no
// answer or file text (a substring kept the whole 2.6 MB file of 1,000
// clusters alive): each server is stored under its own name's copy (a map
// assignment replaces the key with the one given), settings are the
// canonical copies.
func TestReadCacheKeepsNoAnswerText(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	fleet := twinFleet4(3, 1, 20000)
	if _, err := r.direct.Apply(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	r.direct.forgetCache()
	if _, err := r.direct.Diff(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	r.direct.cache.mu.Lock()
	defer r.direct.cache.mu.Unlock()
	snap := r.direct.cache.snap
	if snap == nil || len(snap.current) < len(fleet) {
		t.Fatalf("cache after a full read: %v", snap)
	}
	canon := func(what, s string) {
		t.Helper()
		if s != "" && unsafe.StringData(s) != unsafe.StringData(unique.Make(s).Value()) {
			t.Errorf("%s %q is not the canonical copy", what, s)
		}
	}
	servers := 0
	for name, b := range snap.current {
		if b.Settings == nil {
			t.Fatalf("%s: no settings", name)
		}
		canon(name+" IP", b.Settings.IP)
		canon(name+" check", b.Settings.Check)
		canon(name+" balance", b.Settings.Balance)
		canon(name+" default-server", b.Settings.DefaultServer)
		for k, sv := range b.Servers {
			if unsafe.StringData(k) != unsafe.StringData(sv.Name) {
				t.Errorf("%s/%s: the key is not the server's own name", name, k)
			}
			servers++
		}
	}
	if servers != 6*len(fleet) {
		t.Errorf("%d servers read, want %d", servers, 6*len(fleet))
	}
}

package dataplaneapi_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// BenchmarkTwinsOneSwitchover1000 is one cluster's switchover among 1,000
// in the twin layout, applied through the Data Plane API (the double, on
// loopback): the driver's own cost per role change (read the version and
// pid, build the current view, diff, PUT the flips), without the real
// API's latency.
func BenchmarkTwinsOneSwitchover1000(b *testing.B) {
	tg := benchTarget(b)
	ctx := context.Background()
	const n = 1000
	a := fleetTwins(b, n, func(int) int { return 1 })
	sw := fleetTwins(b, n, func(i int) int { return map[bool]int{true: 2, false: 1}[i == n/2] })
	for _, step := range []string{"create", "settle", "idle"} {
		if _, err := tg.Apply(ctx, a); err != nil {
			b.Fatalf("%s: %v", step, err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := sw
		if i%2 == 1 {
			want = a
		}
		res, err := tg.Apply(ctx, want)
		if err != nil || res.Reloaded || !target.RuntimeOnly(res.Changes) || len(res.Changes) == 0 {
			b.Fatalf("switchover %d: %+v %v", i, res, err)
		}
	}
}

// BenchmarkFirstSync1000 is a controller's first apply of 1,000 clusters
// against an empty configuration (the double, v3), in the twin layout and
// in Pigsty's: every service created by one raw POST. Its allocations
// include the double's own; what counts is the driver's (the per-call
// write plan the raw POST does not use is no longer built: not at all in
// the twin layout, up to the raw threshold in Pigsty's).
func BenchmarkFirstSync1000(b *testing.B) {
	const n = 1000
	for _, layout := range []string{"twins", "pigsty"} {
		desired := fleet(n)
		if layout == "twins" {
			desired = fleetTwins(b, n, func(int) int { return 1 })
		}
		b.Run(layout, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				tg := benchTarget(b)
				b.StartTimer()
				if res, err := tg.Apply(ctx, desired); err != nil || len(res.Changes) == 0 {
					b.Fatalf("first sync: %+v %v", res, err)
				}
			}
		})
	}
}

// benchTarget is a Target on a fresh double of the v3 API, tuned as the
// controller runs it (reads of admin states and of the whole file rare).
func benchTarget(b *testing.B) *dataplaneapi.Target {
	b.Helper()
	srv := dpapitest.NewServer(b, dpapitest.WithAPIVersion(3))
	c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	return dataplaneapi.NewTarget(c, zap.NewNop(), dataplaneapi.TargetOptions{
		ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: time.Minute, Backoff: time.Millisecond,
		AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour})
}

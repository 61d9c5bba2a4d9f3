package haproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// twinFleet is n clusters x 3 members, each with a replica service in the
// twin layout whose primary is member `primary` (1-based). Nothing listens
// on the members: the benchmark measures admin-state flips, not traffic.
func twinFleet(n, primary, basePort int) []services.Service {
	out := make([]services.Service, 0, n)
	for c := 0; c < n; c++ {
		s := services.Service{Name: fmt.Sprintf("pg-f%d-replica", c), Service: "replica", IP: frontIP, Port: basePort + c,
			Check: "/read-only", Balance: "roundrobin", Maxconn: 100, Layout: services.LayoutTwins,
			DefaultServer: "inter 60s fastinter 60s downinter 60s rise 3 fall 3 on-marked-down shutdown-sessions maxconn 100 weight 100"}
		for m := 1; m <= 3; m++ {
			name := fmt.Sprintf("pg-f%d-%d", c, m)
			addr := fmt.Sprintf("127.1.%d.%d", c/200, 10*(c%200/10)+m)
			isPrimary := m == primary
			s.Servers = append(s.Servers,
				services.Server{Name: name, Member: name, Address: addr, Port: 6432, CheckPort: 8008, Weight: 100, Disabled: isPrimary},
				services.Server{Name: name + services.BackupTwinSuffix, Member: name, Address: addr, Port: 6432, CheckPort: 8008, Weight: 100, Backup: true, Disabled: !isPrimary})
		}
		out = append(out, s)
	}
	return out
}

// BenchmarkTwinsMassFailover: the leader of every one of 1,000 clusters
// moves at once; one Apply flips 4 twins per cluster (4,000 admin states)
// over one pipelined stats-socket connection, reads them back and writes
// the file: no reload.
func BenchmarkTwinsMassFailover(b *testing.B) {
	const n = 1000
	r := startRig(b)
	ctx := context.Background()
	base := 20000
	if _, err := r.direct.Apply(ctx, twinFleet(n, 1, base)); err != nil {
		b.Fatal(err)
	}
	reloads := r.reloads(b)
	var flips int
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		res, err := r.direct.Apply(ctx, twinFleet(n, 2-i%2, base))
		took += time.Since(start)
		if err != nil || res.Reloaded || !target.RuntimeOnly(res.Changes) {
			b.Fatalf("mass failover: reloaded %v, %d changes, %v", res.Reloaded, len(res.Changes), err)
		}
		flips += len(res.Changes)
	}
	if got := r.reloads(b); got != reloads {
		b.Errorf("reloads %d -> %d", reloads, got)
	}
	b.ReportMetric(float64(flips)/float64(b.N), "flips/op")
}

// BenchmarkTwinsOneSwitchover: one cluster's switchover among 1,000: one
// Apply flips its 4 twins; the driver reads `show info` (the worker's pid and uptime)
// instead of the whole running HAProxy, and reads back that one backend.
func BenchmarkTwinsOneSwitchover(b *testing.B) {
	const n = 1000
	r := startRig(b)
	ctx := context.Background()
	base := 20000
	fleet := twinFleet(n, 1, base)
	if _, err := r.direct.Apply(ctx, fleet); err != nil {
		b.Fatal(err)
	}
	moved := twinFleet(n, 2, base)
	// After its own reload the driver reads the whole HAProxy once.
	if _, err := r.direct.Diff(ctx, fleet); err != nil {
		b.Fatal(err)
	}
	full := r.direct.Reads().Full
	for i := 0; b.Loop(); i++ {
		desired := append([]services.Service(nil), fleet...)
		desired[500] = moved[500]
		if i%2 == 1 {
			desired[500] = fleet[500]
		}
		res, err := r.direct.Apply(ctx, desired)
		if err != nil || res.Reloaded || len(res.Changes) != 4 {
			b.Fatalf("switchover: reloaded %v, %d changes, %v", res.Reloaded, len(res.Changes), err)
		}
	}
	if got := r.direct.Reads().Full; got != full {
		b.Errorf("%d full reads during the switchovers", got-full)
	}
}

// BenchmarkTwinsMassFailoverWeights: the mass failover of
// BenchmarkTwinsMassFailover with a weight change per cluster in the same
// apply (as the write fences of a failover are): 4,000 admin states and
// 1,000 weights, all pipelined.
func BenchmarkTwinsMassFailoverWeights(b *testing.B) {
	const n = 1000
	r := startRig(b)
	ctx := context.Background()
	base := 20000
	fleet := func(primary, weight int) []services.Service {
		f := twinFleet(n, primary, base)
		for i := range f {
			f[i].Servers[0].Weight = weight
		}
		return f
	}
	if _, err := r.direct.Apply(ctx, fleet(1, 100)); err != nil {
		b.Fatal(err)
	}
	var changes int
	for i := 0; b.Loop(); i++ {
		res, err := r.direct.Apply(ctx, fleet(2-i%2, 100*(i%2)))
		if err != nil || res.Reloaded || !target.RuntimeOnly(res.Changes) {
			b.Fatalf("mass failover: reloaded %v, %d changes, %v", res.Reloaded, len(res.Changes), err)
		}
		changes += len(res.Changes)
	}
	b.ReportMetric(float64(changes)/float64(b.N), "changes/op")
}

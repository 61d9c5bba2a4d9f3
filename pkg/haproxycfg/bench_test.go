package haproxycfg

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// fleet is n clusters x 4 services in the twin layout (6 servers each):
// ~2.6 MB of configuration at n = 1,000, as the direct driver writes it.
// primary is the leading member (1-3).
func fleet(n, primary int) []services.Service {
	out := make([]services.Service, 0, 4*n)
	for c := 0; c < n; c++ {
		for k, name := range []string{"primary", "replica", "default", "offline"} {
			s := services.Service{Name: fmt.Sprintf("pg-b%04d-%s", c, name), IP: "127.0.0.1", Port: 10000 + 4*c + k,
				Check: "/primary", Balance: "roundrobin", Maxconn: 3000, DefaultServer: services.DefaultServerOptions}
			for m := 1; m <= 3; m++ {
				member := fmt.Sprintf("pg-b%04d-%d", c, m)
				addr := fmt.Sprintf("127.90.%d.%d", c/200, 10*(c%200/10)+m)
				on := (m == primary) == (name != "replica")
				s.Servers = append(s.Servers,
					services.Server{Name: member, Address: addr, Port: 6432, CheckPort: 8008, Weight: 100, Selected: on, Disabled: !on},
					services.Server{Name: member + services.BackupTwinSuffix, Address: addr, Port: 6432, CheckPort: 8008, Weight: 100, Backup: true, Disabled: true})
			}
			out = append(out, s)
		}
	}
	return out
}

var benchOpts = Options{StatsSocket: "/run/admin.sock", ServerStateFile: "/run/state", NoStrictLimits: true}

// BenchmarkRender1000: the whole file of 1,000 clusters, nothing cached.
func BenchmarkRender1000(b *testing.B) {
	svcs := fleet(1000, 1)
	b.ReportAllocs()
	for b.Loop() {
		b.SetBytes(int64(len(Render(svcs, benchOpts))))
	}
}

// BenchmarkRendererOneChange1000: one cluster's switchover (its 4 services
// change), each write copying the unchanged sections from the file written
// before (in memory here: the page cache's copy in the driver).
func BenchmarkRendererOneChange1000(b *testing.B) {
	a, moved := fleet(1000, 1), fleet(1000, 2)
	var r Renderer
	var prev, next bytes.Buffer
	_ = r.WriteFrom(&prev, a, benchOpts, nil)
	b.ReportAllocs()
	orig := append([]services.Service(nil), a...)
	for i := 0; b.Loop(); i++ {
		for k := 2000; k < 2004; k++ {
			if i%2 == 0 {
				a[k] = moved[k]
			} else {
				a[k] = orig[k]
			}
		}
		next.Reset()
		if err := r.WriteFrom(&next, a, benchOpts, bytes.NewReader(prev.Bytes())); err != nil {
			b.Fatal(err)
		}
		prev, next = next, prev
	}
	if r.Hits < r.Misses {
		b.Fatalf("hits %d, misses %d: the unchanged sections were not copied", r.Hits, r.Misses)
	}
}

// BenchmarkRendererMassFailover1000: every cluster's leader moves: every
// section is rendered again.
func BenchmarkRendererMassFailover1000(b *testing.B) {
	fleets := [2][]services.Service{fleet(1000, 1), fleet(1000, 2)}
	var r Renderer
	var prev, next bytes.Buffer
	_ = r.WriteFrom(&prev, fleets[0], benchOpts, nil)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		next.Reset()
		if err := r.WriteFrom(&next, fleets[(i+1)%2], benchOpts, bytes.NewReader(prev.Bytes())); err != nil {
			b.Fatal(err)
		}
		prev, next = next, prev
	}
}

// BenchmarkRendererRetained1000 reports the heap a Renderer of 1,000
// clusters keeps after a write (retained-MB): the direct driver keeps one
// (where each section was written and its hash; no text).
func BenchmarkRendererRetained1000(b *testing.B) {
	svcs := fleet(1000, 1)
	var ms runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		r := &Renderer{}
		if err := r.WriteFrom(io.Discard, svcs, benchOpts, nil); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc-before)/(1<<20), "retained-MB")
		runtime.KeepAlive(r)
	}
}

package dataplaneapi

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// benchConfig is the file of n clusters × 4 services × 3 servers.
func benchConfig(b *testing.B, n int) string {
	var desired []services.Service
	for c := 0; c < n; c++ {
		for k, svc := range []string{"primary", "replica", "default", "offline"} {
			s := services.Service{Name: fmt.Sprintf("pg-c%d-%s", c, svc), IP: "10.0.0.1", Port: 10000 + c*4 + k, Check: "/primary",
				Balance: "roundrobin", Maxconn: 5000, DefaultServer: "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"}
			for m := 1; m <= 3; m++ {
				s.Servers = append(s.Servers, services.Server{Name: fmt.Sprintf("pg-c%d-%d", c, m), Address: fmt.Sprintf("10.%d.%d.%d", c/250, c%250, m), Port: 6432, CheckPort: 8008, Weight: 100, Backup: m == 1 && svc == "replica"})
			}
			desired = append(desired, s)
		}
	}
	text, err := ReplaceSections("global\n  server-state-file /tmp/s\ndefaults\n  load-server-state-from-file global\n", desired, nil)
	if err != nil {
		b.Fatal(err)
	}
	return text
}

// BenchmarkParseSnapshot1000 is the local cost of one full read at 1,000
// clusters (the API's own cost of answering it is separate).
func BenchmarkParseSnapshot1000(b *testing.B) {
	text := benchConfig(b, 1000)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if sn := parseSnapshot(text, 1); len(sn.be) != 4000 {
			b.Fatalf("%d backends", len(sn.be))
		}
	}
}

// BenchmarkSnapshotRetained1000 reports the heap a parsed 1,000-cluster
// snapshot keeps alive (retained-MB), the file's own text included: a
// Target keeps one between applies.
func BenchmarkSnapshotRetained1000(b *testing.B) {
	text := benchConfig(b, 1000)
	var ms runtime.MemStats
	var kept []*snapshot
	for i := 0; i < b.N; i++ {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		// A text of this iteration's own: whatever a record keeps of
		// it keeps it all, and counts.
		sn := parseSnapshot(strings.Clone(text), 1)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		kept = append(kept, sn)
		b.ReportMetric(float64(ms.HeapAlloc-before)/(1<<20), "retained-MB")
		kept = kept[:0]
	}
	runtime.KeepAlive(kept)
}

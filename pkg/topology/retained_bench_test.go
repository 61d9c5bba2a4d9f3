package topology

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// fleetText is make bench-scale's inventory (integration/cmd/benchscale): n
// clusters of 3 members with Pigsty's four default services each.
func fleetText(n int) string {
	addr := func(i, k int) string { idx := i*4 + k; return fmt.Sprintf("127.90.%d.%d", idx/250, idx%250+1) }
	var b strings.Builder
	b.WriteString("all:\n  children:\n")
	for i := 0; i < n; i++ {
		name, ip := fmt.Sprintf("pg-b%04d", i), addr(i, 0)
		fmt.Fprintf(&b, "    %s:\n      hosts:\n", name)
		for seq := 1; seq <= 3; seq++ {
			role := "replica"
			if seq == 1 {
				role = "primary"
			}
			fmt.Fprintf(&b, "        %s: { pg_seq: %d, pg_role: %s }\n", addr(i, seq), seq, role)
		}
		fmt.Fprintf(&b, "      vars:\n        pg_cluster: %s\n        pg_default_services:\n", name)
		fmt.Fprintf(&b, "          - { name: primary, port: 5433, ip: %q, dest: default, check: /primary, selector: \"[]\" }\n", ip)
		fmt.Fprintf(&b, "          - { name: replica, port: 5434, ip: %q, dest: default, check: /read-only, selector: \"[]\", backup: \"[? pg_role == `primary` || pg_role == `offline` ]\" }\n", ip)
		fmt.Fprintf(&b, "          - { name: default, port: 5436, ip: %q, dest: postgres, check: /primary, selector: \"[]\" }\n", ip)
		fmt.Fprintf(&b, "          - { name: offline, port: 5438, ip: %q, dest: postgres, check: /replica, selector: \"[? pg_role == `offline` || pg_offline_query ]\", backup: \"[? pg_role == `replica` && !pg_offline_query]\" }\n", ip)
	}
	b.WriteString("  vars:\n    pg_namespace: /pg\n    pg_default_service_dest: pgbouncer\n")
	return b.String()
}

// BenchmarkInventoryRetained1000 reports the heap a loaded 1,000-cluster
// inventory keeps alive (retained-MB): the controller keeps it for its life.
func BenchmarkInventoryRetained1000(b *testing.B) {
	text := []byte(fleetText(1000))
	var ms runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		inv, err := Parse("fleet.yml", text)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc-before)/(1<<20), "retained-MB")
		runtime.KeepAlive(inv)
	}
}

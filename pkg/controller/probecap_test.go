package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// manyClusters is an inventory of n clusters pg-c0.. with two members each
// and one primary service on a port of its own.
func manyClusters(t *testing.T, n int) *topology.Inventory {
	t.Helper()
	var inv strings.Builder
	inv.WriteString("all:\n  children:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&inv, `    pg-c%d:
      hosts:
        127.%d.%d.1: { pg_seq: 1, pg_role: primary }
        127.%d.%d.2: { pg_seq: 2, pg_role: replica }
      vars:
        pg_cluster: pg-c%d
        pg_default_services:
          - { name: primary, port: %d, ip: 127.%d.%d.10, dest: default, check: /primary, selector: "[]" }
`, i, 10+i/250, i%250, 10+i/250, i%250, i, 7000+i, 10+i/250, i%250)
	}
	topo, err := topology.Parse("many.yml", []byte(inv.String()))
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// blockingProber never answers until released: it records how many probes
// are outstanding at once.
type blockingProber struct {
	mu             sync.Mutex
	now, max, seen int
	release        chan struct{}
}

func (b *blockingProber) Probe(ctx context.Context, _ string) patroni.ProbeResult {
	b.mu.Lock()
	b.now++
	b.seen++
	if b.now > b.max {
		b.max = b.now
	}
	b.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-b.release:
	}
	b.mu.Lock()
	b.now--
	b.mu.Unlock()
	return patroni.ProbeResult{At: time.Now(), Err: "released"}
}

func (b *blockingProber) stats() (now, max, seen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now, b.max, b.seen
}

// TestProbesBoundedInFlight: a mass failover of 300 clusters (600 members
// to probe, every REST API hanging) never has more than maxProbesInFlight
// probes outstanding at once over the whole controller, and reaches that
// bound (ticks that find no slot are skipped, not queued); once the APIs
// answer, freed slots are taken by later ticks within the bound, and nothing is left running after Run.
func TestProbesBoundedInFlight(t *testing.T) {
	const n = 300
	inv := manyClusters(t, n)
	bp := &blockingProber{release: make(chan struct{})}
	c := New(inv, []target.Target{&fakeTarget{}}, Options{ProbeInterval: 2 * time.Millisecond, Debounce: time.Millisecond,
		PromoteWindow: time.Minute, Prober: bp})
	runUntilEnd(t, c)
	snap := func(rev int64, leaders bool) patroni.Snapshot {
		s := patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: map[string]*patroni.ClusterState{}}
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("pg-c%d", i)
			cs := &patroni.ClusterState{Scope: name, Members: map[string]*patroni.Member{}, Revision: rev}
			for seq := 1; seq <= 2; seq++ {
				m := fmt.Sprintf("%s-%d", name, seq)
				host := fmt.Sprintf("127.%d.%d.%d", 10+i/250, i%250, seq)
				role := patroni.RoleReplica
				if seq == 1 && leaders {
					role = patroni.RolePrimary
				}
				cs.Members[m] = &patroni.Member{Name: m, Host: host, Port: 5432, APIPort: 8008, APIURL: "http://" + host + ":8008/patroni",
					Role: role, RawRole: role, State: "running", Timeline: 1}
			}
			if leaders {
				cs.Leader = name + "-1"
			}
			s.Clusters[name] = cs
		}
		return s
	}
	c.Observe(snap(10, true))
	eventually(t, "steady state applied", func() bool { return c.Status().Targets[0].InSync })
	if _, _, seen := bp.stats(); seen != 0 {
		t.Fatalf("%d probes in steady state, want none", seen)
	}

	// Every leader key released at once.
	c.Observe(snap(11, false))
	eventually(t, "the probes reach the bound", func() bool { _, max, _ := bp.stats(); return max >= maxProbesInFlight })
	// Each probe that answers frees a slot, which a later tick takes: the
	// bound holds while the probes go on.
	for i := 0; i < 100; i++ {
		_, _, before := bp.stats()
		bp.release <- struct{}{}
		eventually(t, "a freed slot taken by a new probe", func() bool { _, _, seen := bp.stats(); return seen > before })
		if now, max, _ := bp.stats(); now > maxProbesInFlight || max > maxProbesInFlight {
			t.Fatalf("%d probes outstanding (max %d), bound %d", now, max, maxProbesInFlight)
		}
	}
	_, max, seen := bp.stats()
	t.Logf("max %d outstanding, %d probes sent", max, seen)
	if max != maxProbesInFlight {
		t.Errorf("max %d probes outstanding, want exactly %d", max, maxProbesInFlight)
	}
}

package controller

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// timedProber refuses every probe, like a REST API that is gone, and
// records when each URL was probed.
type timedProber struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (p *timedProber) Probe(ctx context.Context, apiURL string) patroni.ProbeResult {
	now := time.Now()
	p.mu.Lock()
	p.at[apiURL] = append(p.at[apiURL], now)
	p.mu.Unlock()
	return patroni.ProbeResult{Sent: now, At: now, Err: "connect: connection refused"}
}

func (p *timedProber) times() map[string][]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]time.Time, len(p.at))
	for k, v := range p.at {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}

// TestMassFailoverProbesOnlyNewPrimaries: every cluster fails over at once,
// as Patroni leaves it after a crash (the old primary's leader and member
// keys gone, the new leader's member key saying running primary). Only the
// new primaries are probed, from the first probe on every onEvery intervals
// (they are on by their member keys); the dead old primaries, fenced by the
// leader key moving, never are. Probes started before the transition's
// first advance dialed each old primary once and each new one every
// interval until then.
func TestMassFailoverProbesOnlyNewPrimaries(t *testing.T) {
	const n = 300
	const interval = 20 * time.Millisecond
	inv := manyClusters(t, n)
	tp := &timedProber{at: map[string][]time.Time{}}
	c := New(inv, []target.Target{&fakeTarget{}}, Options{ProbeInterval: interval, Debounce: time.Millisecond, Prober: tp})
	runUntilEnd(t, c)
	url := func(i, seq int) string { return fmt.Sprintf("http://127.%d.%d.%d:8008/patroni", 10+i/250, i%250, seq) }
	snap := func(rev int64, leader int) patroni.Snapshot {
		s := patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: map[string]*patroni.ClusterState{}}
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("pg-c%d", i)
			cs := &patroni.ClusterState{Scope: name, Leader: fmt.Sprintf("%s-%d", name, leader), Members: map[string]*patroni.Member{}, Revision: rev}
			for seq := 1; seq <= 2; seq++ {
				if leader == 2 && seq == 1 {
					continue // crashed: its member key expired with the leader key
				}
				m := fmt.Sprintf("%s-%d", name, seq)
				role := patroni.RoleReplica
				if seq == leader {
					role = patroni.RolePrimary
				}
				cs.Members[m] = &patroni.Member{Name: m, Host: fmt.Sprintf("127.%d.%d.%d", 10+i/250, i%250, seq), Port: 5432, APIPort: 8008,
					APIURL: url(i, seq), Role: role, RawRole: role, State: "running", Timeline: 1}
			}
			s.Clusters[name] = cs
		}
		return s
	}
	c.Observe(snap(10, 1))
	eventually(t, "steady state applied", func() bool { return c.Status().Targets[0].InSync })
	c.Observe(snap(11, 2))
	// Every new primary probed, and at least one of them twice (the
	// intervals between probes are then measured, not assumed).
	eventually(t, "every new primary probed, one twice", func() bool {
		at := tp.times()
		twice := false
		for i := 0; i < n; i++ {
			if len(at[url(i, 2)]) == 0 {
				return false
			}
			twice = twice || len(at[url(i, 2)]) > 1
		}
		return twice
	})
	at := tp.times()
	for i := 0; i < n; i++ {
		if k := len(at[url(i, 1)]); k != 0 {
			t.Fatalf("pg-c%d-1 (the dead old primary, fenced by the leader key) probed %d times, want 0", i, k)
		}
		ts := at[url(i, 2)]
		for j := 1; j < len(ts); j++ {
			if gap := ts[j].Sub(ts[j-1]); gap < onEvery*interval-interval {
				t.Fatalf("pg-c%d-2 (on by its member key) probed again after %s, want every %s", i, gap, onEvery*interval)
			}
		}
	}
	if st := c.Status(); !st.Targets[0].InSync {
		t.Fatalf("target not in sync after the failover")
	}
}

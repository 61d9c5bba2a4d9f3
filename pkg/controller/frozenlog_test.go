package controller

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestFrozenLoggedOncePerReason: etcd lost for a namespace of 40 clusters
// freezes all 40; the log says so in one line (the reason, 32 names, the
// count), and in one line when they thaw. It said it in 40 lines each
// way (1,000 at 1,000 clusters).
func TestFrozenLoggedOncePerReason(t *testing.T) {
	const n = 40
	var b strings.Builder
	b.WriteString("all:\n  children:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "    pg-c%d:\n      hosts:\n        10.1.%d.11: { pg_seq: 1, pg_role: primary }\n      vars: { pg_cluster: pg-c%d }\n", i, i, i)
	}
	inv, err := topology.Parse("many.yml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	snap := patroni.Snapshot{Namespace: "/pg", Revision: 10, At: time.Now(), Clusters: map[string]*patroni.ClusterState{}}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("pg-c%d", i)
		x := int64(1)
		snap.Clusters[name] = &patroni.ClusterState{Scope: name, Leader: name + "-1", Revision: 10, Members: map[string]*patroni.Member{
			name + "-1": {Name: name + "-1", Host: fmt.Sprintf("10.1.%d.11", i), Port: 5432, APIPort: 8008, Role: patroni.RolePrimary,
				RawRole: patroni.RolePrimary, State: "running", Timeline: 1, XLogLocation: &x}}}
	}
	core, logs := observer.New(zapcore.InfoLevel)
	c := New(inv, []target.Target{&fakeTarget{}}, Options{Log: zap.New(core)})
	var connected atomic.Bool
	connected.Store(true)
	c.SetHealth("/pg", func() patroni.WatchStatus {
		return patroni.WatchStatus{Connected: connected.Load(), LastContact: time.Now()}
	})
	c.Observe(snap)
	step(c, true)
	connected.Store(false)
	step(c, false)
	frozen := logs.FilterMessageSnippet("frozen").All()
	if len(frozen) != 1 || frozen[0].Message != "clusters frozen" || frozen[0].ContextMap()["clusters_total"] != int64(n) ||
		!strings.HasPrefix(frozen[0].ContextMap()["reason"].(string), "stale: etcd unreachable") {
		t.Fatalf("frozen logged as %d lines: %+v", len(frozen), frozen)
	}
	if listed := frozen[0].ContextMap()["clusters"].([]interface{}); len(listed) != logChangesMax {
		t.Errorf("%d clusters listed, want %d", len(listed), logChangesMax)
	}
	step(c, true) // the resync during the outage: nothing new
	if got := len(logs.FilterMessageSnippet("frozen").All()); got != 1 {
		t.Fatalf("the resync logged the frozen clusters again: %d lines", got)
	}
	connected.Store(true)
	step(c, false)
	thawed := logs.FilterMessage("clusters no longer frozen").All()
	if len(thawed) != 1 || thawed[0].ContextMap()["clusters_total"] != int64(n) {
		t.Fatalf("thawed logged as %d lines: %+v", len(thawed), thawed)
	}
}

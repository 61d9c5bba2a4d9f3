package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// reloadOnlyTarget answers every Apply with a reload and no change: what a
// Data Plane API target reports when its file was right but the running
// HAProxy did not serve it (a reload failed or was lost) and it reloaded.
type reloadOnlyTarget struct{ fakeTarget }

func (r *reloadOnlyTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	return target.Result{Reloaded: true, ReloadID: "r9", ReloadResult: "succeeded"}, nil
}

type reloadMetrics struct {
	nopMetrics
	mu      sync.Mutex
	reloads int
}

func (m *reloadMetrics) Applied(_ string, _ []target.Change, reloaded bool, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if reloaded {
		m.reloads++
	}
}

// TestReloadWithoutChangesRecorded: an apply that changed nothing in the
// file but reloaded HAProxy (the running process did not serve it: a
// repair) is an event in the history, a reload in the metrics, and its
// reload ID in the target's status; it was none of these but the last.
func TestReloadWithoutChangesRecorded(t *testing.T) {
	rt := &reloadOnlyTarget{}
	m := &reloadMetrics{}
	c := New(loadInventory(t), []target.Target{rt}, Options{Metrics: m})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, true)
	st := c.Status()
	if ts := st.Targets[0]; ts.State != "in_sync" || ts.ReloadID != "r9" {
		t.Fatalf("target: %+v", ts)
	}
	var found bool
	for _, e := range st.History {
		found = found || (e.Kind == "applied" && e.Reloaded && e.ReloadID == "r9")
	}
	if !found {
		t.Errorf("no applied event with the reload in the history: %+v", st.History)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reloads != 1 {
		t.Errorf("%d reloads counted, want 1", m.reloads)
	}
}

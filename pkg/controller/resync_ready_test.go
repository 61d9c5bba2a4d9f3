package controller

import (
	"context"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// hookTarget runs during inside every Apply (e.g. to look at the status
// while a resync reads the HAProxy).
type hookTarget struct {
	fakeTarget
	during func()
}

func (h *hookTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	if h.during != nil {
		h.during()
	}
	return h.fakeTarget.Apply(ctx, d)
}

func TestResyncWithNothingChangedKeepsReady(t *testing.T) {
	ht := &hookTarget{}
	c := New(loadInventory(t), []target.Target{ht}, Options{})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, false)
	if st := c.Status(); !st.Ready {
		t.Fatalf("not ready after the first apply: %v", st.NotReady)
	}
	var during Status
	ht.during = func() { during = c.Status() }
	step(c, true) // a resync: same desired state
	if ht.count() != 2 {
		t.Fatalf("resync did not run: %d applies", ht.count())
	}
	if !during.Ready {
		t.Fatalf("not ready while a resync with nothing changed ran: %v", during.NotReady)
	}
	// A real change does take readiness away while it is applied.
	c.Observe(state(11, "pg-test-2", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, false)
	if during.Ready {
		t.Fatal("ready while a changed plan was being applied")
	}
	if st := c.Status(); !st.Ready {
		t.Fatalf("not ready after the change: %v", st.NotReady)
	}
}

// TestResyncKeepsEqualPlans: a resync plans every cluster again, but where
// the fresh plan equals the cached one the cached one is kept, so the
// desired state handed on is the very same slice (nothing new to keep for
// the plan, the targets or their layouts); a cluster that did change gets
// its fresh plan.
func TestResyncKeepsEqualPlans(t *testing.T) {
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{})
	c.plans.checkEvery = 1 // every resync checks every cluster
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, false)
	step(c, false) // the leader seen is an input of the next plan
	before := c.desired.services()
	planBefore := c.plan.Clusters[0].Services
	step(c, true)
	if c.plans.computed != len(c.inv.Clusters) {
		t.Fatalf("the resync planned %d clusters of %d", c.plans.computed, len(c.inv.Clusters))
	}
	if !sameSlice(before, c.desired.services()) || !sameSlice(planBefore, c.plan.Clusters[0].Services) {
		t.Fatal("a resync with nothing changed made a new desired state")
	}
	c.Observe(state(11, "pg-test-2", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, true)
	if sameSlice(planBefore, c.plan.Clusters[0].Services) || c.plan.Clusters[0].Leader != "pg-test-2" {
		t.Fatalf("a resync after a change kept the old plan (leader %q)", c.plan.Clusters[0].Leader)
	}
}

// TestDesiredConcatenatedWhenTaken: a reconcile hands the workers its
// desired state as parts; it is concatenated by the worker that takes it,
// so a state replaced while pending (a burst of reconciles) never is, and
// a reconcile that changed nothing hands on the same state.
func TestDesiredConcatenatedWhenTaken(t *testing.T) {
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	c.ReconcileOnce(false)
	first := c.desired
	c.Observe(state(11, "pg-test-2", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	c.ReconcileOnce(false)
	second := c.desired
	if first == second || first.all != nil || second.all != nil {
		t.Fatalf("states concatenated before a worker took them (first %v, second %v)", first.all != nil, second.all != nil)
	}
	c.ReconcileOnce(false) // nothing changed
	if c.desired != second {
		t.Fatal("a reconcile that changed nothing made a new desired state")
	}
	step(c, false)
	if first.all != nil || len(second.all) == 0 || !sameSlice(c.workers[0].applied, second.all) {
		t.Fatalf("the worker applied %d services; first concatenated %v", len(c.workers[0].applied), first.all != nil)
	}
}

// TestResyncChecksInTurn: with nothing changed, a resync plans from scratch
// only the clusters whose turn it is (checkShare), and checkShare resyncs
// plan every cluster once. (A cluster whose inputs changed is planned
// whatever the turn: TestIncrementalPlanIsFullPlan, whose resyncs check
// every other cluster.)
func TestResyncChecksInTurn(t *testing.T) {
	inv := fleetInventory(t, 2*checkShare+3)
	c := New(inv, []target.Target{&fakeTarget{}}, Options{})
	step(c, false)
	step(c, false)
	total := 0
	for k := 0; k < checkShare; k++ {
		step(c, true)
		want := 0
		for i := range inv.Clusters {
			if i%checkShare == k {
				want++
			}
		}
		if c.plans.computed != want {
			t.Fatalf("resync %d planned %d clusters, want the %d in turn", k, c.plans.computed, want)
		}
		total += c.plans.computed
	}
	if total != len(inv.Clusters) {
		t.Fatalf("%d resyncs planned %d clusters, want each of the %d once", checkShare, total, len(inv.Clusters))
	}
}

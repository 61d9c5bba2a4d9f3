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
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, false)
	step(c, false) // the leader seen is an input of the next plan
	before := c.desired
	planBefore := c.plan.Clusters[0].Services
	step(c, true)
	if c.plans.computed != len(c.inv.Clusters) {
		t.Fatalf("the resync planned %d clusters of %d", c.plans.computed, len(c.inv.Clusters))
	}
	if !sameSlice(before, c.desired) || !sameSlice(planBefore, c.plan.Clusters[0].Services) {
		t.Fatal("a resync with nothing changed made a new desired state")
	}
	c.Observe(state(11, "pg-test-2", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, true)
	if sameSlice(planBefore, c.plan.Clusters[0].Services) || c.plan.Clusters[0].Leader != "pg-test-2" {
		t.Fatalf("a resync after a change kept the old plan (leader %q)", c.plan.Clusters[0].Leader)
	}
}

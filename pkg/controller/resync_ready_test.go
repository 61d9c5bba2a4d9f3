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

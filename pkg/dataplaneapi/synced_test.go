package dataplaneapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestTwinsSkipsOnlyWhatIsInSync: an apply leaves out of its view and diff
// the services in sync since the last successful apply, and only those:
// after an apply that failed half-way (one runtime PUT answered 500), going
// back to the state before it repairs every server the failed apply
// flipped; an outside flip is found by the periodic read and an outside
// configuration write by the version; a fresh Target (no caches) then finds
// nothing to do.
func TestTwinsSkipsOnlyWhatIsInSync(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			a := fleetTwins(t, 4, func(int) int { return 1 })
			b := fleetTwins(t, 4, func(i int) int { return map[bool]int{true: 2, false: 1}[i == 2] })
			h.apply(t, "create", a)
			h.apply(t, "settle", a)
			fresh := func(step string, want [][]services.Service) {
				t.Helper()
				c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{})
				changes, err := tg.Diff(h.ctx, want[0])
				if err != nil {
					t.Fatal(err)
				}
				if len(changes) != 0 {
					t.Errorf("%s: a fresh target finds %s", step, kinds(changes))
				}
			}
			// A switchover whose first runtime PUT fails (the others of its wave go): half applied.
			h.srv.InjectFault(dpapitest.Fault{Method: "PUT", Path: "/runtime/servers/", Status: 500, Message: "injected"})
			if _, err := h.tg.Apply(h.ctx, b); err == nil {
				t.Fatal("apply with a failing PUT: no error")
			}
			res := h.apply(t, "back to a", a)
			if len(res.Changes) == 0 {
				t.Errorf("back to a after a half-applied switchover: nothing applied")
			}
			fresh("back to a", [][]services.Service{a})
			res = h.apply(t, "switchover", b)
			if len(res.Changes) == 0 {
				t.Fatal("switchover: nothing applied")
			}
			fresh("switchover", [][]services.Service{b})
			// An operator flips a server of a cluster that did not change:
			// found by the periodic read.
			h.srv.SetAdminState("pg-f000-replica", "pg-f000-2", "maint")
			if res := h.apply(t, "idle", b); len(res.Changes) != 0 {
				t.Errorf("idle within the read period: %s", kinds(res.Changes))
			}
			h.clk.add(2 * time.Hour)
			res = h.apply(t, "periodic read", b)
			if got := kinds(res.Changes); got != target.KindRepairState+" pg-f000-replica/pg-f000-2" && got != target.KindSetState+" pg-f000-replica/pg-f000-2" {
				t.Errorf("periodic read: %s, want pg-f000-2 set ready again", got)
			}
			fresh("periodic read", [][]services.Service{b})
		})
	}
}

// TestValidateAfterAValidApply: after a valid desired state was applied, a
// service that changed is still validated (only services equal to the
// last validated ones are not checked one by one again), and a name listed
// twice is still refused.
func TestValidateAfterAValidApply(t *testing.T) {
	h := newTwinsHarness(t, 3)
	a := fleetTwins(t, 3, func(int) int { return 1 })
	h.apply(t, "create", a)
	bad := append([]services.Service(nil), a...)
	bad[1].Port = 70000
	if _, err := h.tg.Apply(h.ctx, bad); err == nil || !strings.Contains(err.Error(), bad[1].Name) {
		t.Errorf("a changed service with port 70000: err %v, want one naming %s", err, bad[1].Name)
	}
	badName := append([]services.Service(nil), a...)
	badName[2].Name = "pg f000"
	if _, err := h.tg.Apply(h.ctx, badName); err == nil {
		t.Error("a changed service named with a space: no error")
	}
	twice := append(append([]services.Service(nil), a...), a[0])
	if _, err := h.tg.Apply(h.ctx, twice); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a service listed twice: err %v", err)
	}
	h.apply(t, "valid again", a)
}

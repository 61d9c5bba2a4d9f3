package dataplaneapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// freshDiff is what a Target that never read this HAProxy (a full read of
// the file and of every runtime state) finds to change to reach desired:
// nothing once the running HAProxy serves it.
func freshDiff(t *testing.T, h *twinsHarness, desired []services.Service) []target.Change {
	t.Helper()
	c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	changes, err := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{}).Diff(h.ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	return changes
}

// TestTwinsRestartKeepingPID: in its own pid namespace (the shipped
// container, restarted by its restart policy) HAProxy has the same pid on
// every start, and a restarted one runs the states of the last reload's
// state file, not those the controller set since. Its start time tells it
// apart: the next apply reads every twin backend again and repairs what
// differs, instead of trusting the admin cache and leaving the services in
// sync since the last apply out; the records of forced health made in the
// process before count no more. An idle apply after it is back to the
// version and the runtime info.
func TestTwinsRestartKeepingPID(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			h.apply(t, "create", twinned(t, cluster("pg-s", 1, 3, 1)))
			sw := twinned(t, cluster("pg-s", 1, 3, 2))
			h.apply(t, "switchover", sw)
			if res := h.apply(t, "settle", sw); len(res.Changes) != 0 || len(h.srv.Requests()) != 2 {
				t.Fatalf("settle: %s, %v", kinds(res.Changes), paths(h.srv.Requests()))
			}
			full := h.tg.AdminReads().Full
			pid := h.srv.PID()

			h.srv.RestartHAProxyKeepPID()
			if h.srv.PID() != pid {
				t.Fatalf("the double's restart moved the pid %d -> %d", pid, h.srv.PID())
			}
			h.clk.add(5 * time.Second)
			if len(freshDiff(t, h, sw)) == 0 {
				t.Fatal("the restarted HAProxy already serves the switchover: the test shows nothing")
			}
			res := h.apply(t, "after the restart", sw)
			inactive := 0
			for _, s := range sw {
				for _, sv := range s.Servers {
					if sv.Disabled {
						inactive++
					}
				}
			}
			if len(res.Changes) != inactive || !target.RuntimeOnly(res.Changes) {
				t.Errorf("after a restart keeping the pid: %s, want the %d inactive twins set again at runtime", kinds(res.Changes), inactive)
			}
			if got := h.tg.AdminReads().Full; got != full+1 {
				t.Errorf("full admin reads %d -> %d, want one for the restarted process", full, got)
			}
			if left := freshDiff(t, h, sw); len(left) != 0 {
				t.Errorf("the restarted HAProxy still differs: %s", kinds(left))
			}
			if res := h.apply(t, "idle", sw); len(res.Changes) != 0 || len(h.srv.Requests()) != 2 {
				t.Errorf("idle after the restart: %s, %v; want version and runtime info only", kinds(res.Changes), paths(h.srv.Requests()))
			}
		})
	}
}

// TestTwinsForcedRecordsRestartKeepingPID: a fence forced DOWN in a
// process counts (within its bound) only for that process, also when the
// restarted one has the same pid: the restarted HAProxy has the fenced
// server UP, and the next apply forces it DOWN again.
func TestTwinsForcedRecordsRestartKeepingPID(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := fleetChecked(t, 2, func(int) int { return 1 })
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			fenced := force(base, "pg-f000-1", func(sv *services.Server) { sv.ForceDown = true })
			if res := h.apply(t, "fence", fenced); len(forcedWrites(h.srv.Requests())) != 2 {
				t.Fatalf("fence: %s, forced %v", kinds(res.Changes), forcedWrites(h.srv.Requests()))
			}
			h.clk.add(500 * time.Millisecond)
			if res := h.apply(t, "fence, within the bound", fenced); len(res.Changes) != 0 || len(h.srv.Requests()) != 2 {
				t.Fatalf("fence within the bound: %s, %v", kinds(res.Changes), paths(h.srv.Requests()))
			}
			h.srv.RestartHAProxyKeepPID()
			h.clk.add(500 * time.Millisecond)
			res := h.apply(t, "after the restart", fenced)
			got := kinds(res.Changes)
			if !strings.Contains(got, "force_down pg-f000-primary/pg-f000-1") || !strings.Contains(got, "force_down pg-f000-default/pg-f000-1") {
				t.Errorf("after a restart keeping the pid: %s, want the fence forced DOWN again in both write services", got)
			}
		})
	}
}

package dataplaneapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// switchBackWithMaxconn is the twin cluster pg-s back to primary 1 from 2,
// with its replica service's maxconn changed: a configuration write (a
// reload) that adds no server to the twin backends it touches.
func switchBackWithMaxconn(t *testing.T) []services.Service {
	back := twinned(t, cluster("pg-s", 1, 3, 1))
	for i := range back {
		if back[i].Service == "replica" {
			back[i].Maxconn = 4000
		}
	}
	return back
}

// TestTwinsSlowReloadFlipsReachNewWorker: the reload command returns before
// the new worker serves (the double's old worker answers the runtime
// endpoints 3 more times). The apply's flips must wait for the new process
// (they would go to the old one, after the reload's state dump, and never
// reach the new one), and the states it keeps must be the new process's:
// once it serves, its runtime states are the desired ones, Diff says so,
// and the next apply is idle.
func TestTwinsSlowReloadFlipsReachNewWorker(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			h.apply(t, "create", twinned(t, cluster("pg-s", 1, 3, 1)))
			sw := twinned(t, cluster("pg-s", 1, 3, 2))
			if res := h.apply(t, "switchover", sw); res.Reloaded {
				t.Fatalf("switchover: %+v, want runtime flips only", res)
			}
			h.apply(t, "settle", sw)
			h.srv.DelayNewWorkers(3)
			back := switchBackWithMaxconn(t)
			pid := h.srv.PID()
			res := h.apply(t, "switch back with a maxconn change", back)
			if !res.Reloaded || res.ReloadResult != "succeeded" {
				t.Fatalf("switch back: %+v, want a reload", res)
			}
			if h.srv.PID() == pid {
				t.Fatalf("the apply returned while the old worker (pid %d) still serves", pid)
			}
			if left := freshDiff(t, h, back); len(left) != 0 {
				t.Errorf("the new worker does not run the switchover back: %s", kinds(left))
			}
			if got, err := h.tg.Diff(h.ctx, back); err != nil || len(got) != 0 {
				t.Errorf("Diff: %s (%v), want nothing", kinds(got), err)
			}
			if res := h.apply(t, "idle", back); len(res.Changes) != 0 || len(h.srv.Requests()) != 2 {
				t.Errorf("idle: %s, %v; want version and runtime info only", kinds(res.Changes), paths(h.srv.Requests()))
			}
		})
	}
}

// TestTwinsReloadWaitCostsNoRequest: when the new process serves by the
// time the API reports the reload done (the shipped reload script waits
// for the master), the wait for it before the flips is the one GET
// /runtime/info that confirmed the reload after them before: an apply
// that reloads reads the running process twice in all, once before its
// write and once after the reload, before any runtime request.
func TestTwinsReloadWaitCostsNoRequest(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			h.apply(t, "create", twinned(t, cluster("pg-s", 1, 3, 1)))
			sw := twinned(t, cluster("pg-s", 1, 3, 2))
			h.apply(t, "switchover", sw)
			h.apply(t, "settle", sw)
			res := h.apply(t, "switch back with a maxconn change", switchBackWithMaxconn(t))
			if !res.Reloaded {
				t.Fatalf("switch back: %+v, want a reload", res)
			}
			var infos []int
			firstRuntime, lastReloadPoll := -1, -1
			for i, r := range h.srv.Requests() {
				switch {
				case r.Path == "/runtime/info":
					infos = append(infos, i)
				case strings.HasPrefix(r.Path, "/runtime/servers") && firstRuntime < 0 && len(infos) > 0:
					firstRuntime = i
				case strings.HasPrefix(r.Path, "/reloads/"):
					lastReloadPoll = i
				}
			}
			if len(infos) != 2 || infos[1] < lastReloadPoll || firstRuntime < infos[1] {
				t.Errorf("runtime info read at %v (reload polled until %d, first runtime request at %d), want twice: before the write, and after the reload before any runtime request: %v",
					infos, lastReloadPoll, firstRuntime, paths(h.srv.Requests()))
			}
		})
	}
}

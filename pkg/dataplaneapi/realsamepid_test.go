package dataplaneapi_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// nsHAProxy runs HAProxy (master-worker, foreground) in a pid namespace of
// its own, as the shipped container does: its worker has the same pid on
// every start.
type nsHAProxy struct {
	cfgPath, master string
	cmd             *exec.Cmd
}

func (h *nsHAProxy) start(t *testing.T) {
	t.Helper()
	// --kill-child: the namespace (HAProxy) dies with unshare.
	h.cmd = exec.Command("unshare", "--pid", "--fork", "--kill-child", haproxyBin, "-W", "-db", "-S", h.master, "-f", h.cfgPath)
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start haproxy in a pid namespace: %v", err)
	}
}

// restart crashes it and starts it again once nothing answers the API's
// runtime socket (the killed worker may linger an instant), then waits for
// the new one to answer.
func (h *nsHAProxy) restart(t *testing.T, rs *realStack, version int) {
	t.Helper()
	h.crash()
	waitUntil(t, 30*time.Second, func() bool { return realWorker(t, rs, version) == 0 })
	h.start(t)
	waitUntil(t, 30*time.Second, func() bool { return realWorker(t, rs, version) != 0 })
}

// crash kills it (SIGKILL, by the pid of the unshare this test started) and
// waits for it to end.
func (h *nsHAProxy) crash() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
	h.cmd = nil
}

// TestRealRestartKeepingPID: HAProxy in its own pid namespace (the shipped
// container) crashes and is started again, as its restart policy does: the
// same worker pid, the states of the last reload's state file (the roles
// before the switchover the controller made at runtime since). The next
// apply must see a new process (its start time) and set the roles again;
// Diff and an idle apply after it see what runs.
func TestRealRestartKeepingPID(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skipf("no unshare here (util-linux): %v", err)
		}
		if out, err := exec.Command("unshare", "--pid", "--fork", "true").CombinedOutput(); err != nil {
			t.Skipf("cannot make a pid namespace here (unshare --pid needs CAP_SYS_ADMIN): %v %s", err, out)
		}
		h := &nsHAProxy{}
		rs := startRealStackWith(t, bin, version, func(t *testing.T, dir, cfgPath, master string) {
			h.cfgPath, h.master = cfgPath, master
			h.start(t)
			t.Cleanup(h.crash)
			admin := filepath.Join(dir, "admin.sock")
			waitUntil(t, 30*time.Second, func() bool { _, err := os.Stat(admin); return err == nil })
		})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 10 * time.Second, ReloadPollInterval: 100 * time.Millisecond})
		live := func(p int) []services.Service { return onPorts(twinned(t, cluster("pg-live", 1, 3, p)), rs.svcPorts) }
		if _, err := tg.Apply(ctx, live(1)); err != nil {
			t.Fatal(err)
		}
		// The create's reload forked a new worker (pids go on in the
		// namespace): restarted, HAProxy runs the first worker's pid, the
		// one every later start has while no reload follows it.
		h.restart(t, rs, version)
		if _, err := tg.Apply(ctx, live(1)); err != nil {
			t.Fatal(err)
		}
		sw := live(2)
		if res, err := tg.Apply(ctx, sw); err != nil || res.Reloaded {
			t.Fatalf("switchover: %+v %v, want runtime flips only", res, err)
		}
		rs.rt.reset(nil)
		if res, err := tg.Apply(ctx, sw); err != nil || len(res.Changes) != 0 || len(rs.rt.requests()) != 2 {
			t.Fatalf("settle: %+v %v, requests %v", res, err, rs.rt.requests())
		}
		// A start time the restart's is told apart from (a couple of
		// seconds at least).
		var pid int64
		waitUntil(t, 30*time.Second, func() bool {
			p, up := realWorkerInfo(t, rs, version)
			pid = p
			return p != 0 && up >= 3
		})
		h.restart(t, rs, version)
		if got := realWorker(t, rs, version); got != pid {
			t.Fatalf("the restarted worker has pid %d, the one before %d: not a restart keeping the pid", got, pid)
		}
		if len(realFreshDiff(t, rs, sw)) == 0 {
			t.Fatal("the restarted HAProxy already runs the switchover: the test shows nothing")
		}
		res, err := tg.Apply(ctx, sw)
		if err != nil || len(res.Changes) == 0 {
			t.Fatalf("after the restart: %+v %v, want the roles set again", res, err)
		}
		if left := realFreshDiff(t, rs, sw); len(left) != 0 {
			t.Errorf("after the apply the restarted HAProxy still differs: %s", kinds(left))
		}
		if got, err := tg.Diff(ctx, sw); err != nil || len(got) != 0 {
			t.Errorf("Diff: %s (%v), want nothing", kinds(got), err)
		}
		rs.rt.reset(nil)
		if res, err := tg.Apply(ctx, sw); err != nil || len(res.Changes) != 0 || len(rs.rt.requests()) != 2 {
			t.Errorf("idle after the restart: %+v %v, requests %v", res.Changes, err, rs.rt.requests())
		}
	})
}

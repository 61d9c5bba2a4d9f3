package dataplaneapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// realWorker returns the pid of the HAProxy worker the real API's runtime
// socket answers from (0 when it does not answer), through its own GET
// /runtime/info.
func realWorker(t *testing.T, rs *realStack, version int) int64 {
	t.Helper()
	pid, _ := realWorkerInfo(t, rs, version)
	return pid
}

// realWorkerInfo is realWorker with the worker's uptime (seconds).
func realWorkerInfo(t *testing.T, rs *realStack, version int) (pid, uptime int64) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rs.base+map[int]string{2: "/v2", 3: "/v3"}[version]+"/services/haproxy/runtime/info", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	type doc struct {
		Info struct {
			Pid    int64 `json:"pid"`
			Uptime int64 `json:"uptime"`
		} `json:"info"`
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return 0, 0
	}
	var docs []doc
	if json.Unmarshal(raw, &docs) != nil {
		var one doc
		if json.Unmarshal(raw, &one) != nil {
			return 0, 0
		}
		docs = []doc{one}
	}
	if len(docs) == 0 {
		return 0, 0
	}
	return docs[0].Info.Pid, docs[0].Info.Uptime
}

// realFreshDiff is what a Target that never read this HAProxy (the file
// and every runtime state read whole) finds to change to reach desired.
func realFreshDiff(t *testing.T, rs *realStack, desired []services.Service) []target.Change {
	t.Helper()
	c, err := dataplaneapi.New(rs.base, dataplaneapi.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	changes, err := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{}).Diff(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	return changes
}

// TestRealSlowReloadFlipsReachNewWorker: a switchover back that also
// changes a twin backend's settings (a maxconn: no server added) takes a
// reload, and the reload command exits 0 before the new worker serves
// (`systemctl reload`; here the master reloads 1.5 s after the command
// dumped the state file and returned). The flips must go to the new
// worker, not to the old one after the dump (from where they never reach
// the new one), and the states the controller keeps must be read from it:
// once the new worker serves, its runtime states are the desired ones, and
// Diff and the next apply see what really runs.
func TestRealSlowReloadFlipsReachNewWorker(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 10 * time.Second, ReloadPollInterval: 100 * time.Millisecond})
		live := func(p int) []services.Service { return onPorts(twinned(t, cluster("pg-live", 1, 3, p)), rs.svcPorts) }
		if _, err := tg.Apply(ctx, live(1)); err != nil {
			t.Fatal(err)
		}
		if res, err := tg.Apply(ctx, live(2)); err != nil || res.Reloaded {
			t.Fatalf("switchover: %+v %v, want runtime flips only", res, err)
		}
		write(t, filepath.Join(rs.dir, "reload.sh"), dpapitest.DelayedReloadScript(filepath.Join(rs.dir, "server-state"),
			filepath.Join(rs.dir, "admin.sock"), filepath.Join(rs.dir, "master.sock"), 1500*time.Millisecond))
		back := live(1)
		for i := range back {
			if back[i].Service == "replica" {
				back[i].Maxconn = 4000 // a configuration change: one reload
			}
		}
		before := realWorker(t, rs, version)
		if before == 0 {
			t.Fatal("no worker pid through the API")
		}
		res, err := tg.Apply(ctx, back)
		if err != nil || !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Fatalf("switchover back with a maxconn change: %+v %v", res, err)
		}
		// The new worker serves: at once once Apply returned, the test
		// waits for it all the same (bounded) to judge it, not the old one.
		waitUntil(t, 20*time.Second, func() bool { p := realWorker(t, rs, version); return p != 0 && p != before })
		if left := realFreshDiff(t, rs, back); len(left) != 0 {
			t.Errorf("the new worker does not run the switchover back: %s", kinds(left))
		}
		want := kinds(realFreshDiff(t, rs, back))
		if got, err := tg.Diff(ctx, back); err != nil || kinds(got) != want {
			t.Errorf("Diff: %s (%v), want what runs: %q", kinds(got), err, want)
		}
		if res, err := tg.Apply(ctx, back); err != nil {
			t.Errorf("next apply: %v", err)
		} else if left := realFreshDiff(t, rs, back); len(left) != 0 {
			t.Errorf("after the next apply (%d changes) the running HAProxy still differs: %s", len(res.Changes), kinds(left))
		}
	})
}

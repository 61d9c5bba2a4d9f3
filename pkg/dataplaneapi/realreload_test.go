package dataplaneapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// runningBackups reads, from the running HAProxy's own stats socket (not
// through the API), the backup servers of backend.
func runningBackups(t *testing.T, rs *realStack, backend string) string {
	t.Helper()
	rt := &haproxy.Runtime{Socket: filepath.Join(rs.dir, "admin.sock"), Timeout: 2 * time.Second}
	rows, err := rt.ShowStat(context.Background())
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, r := range rows {
		if r.Proxy == backend && r.Type == haproxy.TypeServer && r.Backup {
			out = append(out, r.Name)
		}
	}
	return strings.Join(out, ",")
}

func onPorts(svcs []services.Service, ports []int) []services.Service {
	for i := range svcs {
		svcs[i].IP = "127.0.0.1"
		svcs[i].Port = ports[i%4]
	}
	return svcs
}

// TestRealAPIFailedReloadIsNotInSync: the API's reload command exits 1 after
// a switchover's commit. The running HAProxy lacks the switchover: every
// apply reports a failure (never "in sync") until the command is fixed,
// then the next apply gets it to the running HAProxy (issue 12 row 3). The
// real API puts the previous file back after a failed reload but keeps the
// failed one parsed, so a transaction would then fail with 409 for good:
// the retry goes through one raw POST.
func TestRealAPIFailedReloadIsNotInSync(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 20 * time.Second, ReloadPollInterval: 100 * time.Millisecond})
		if _, err := tg.Apply(ctx, onPorts(cluster("pg-live", 1, 3, 1), rs.svcPorts)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, func() bool { return runningBackups(t, rs, "pg-live-replica") == "pg-live-1" })

		script := filepath.Join(rs.dir, "reload.sh")
		good, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		write(t, script, "#!/bin/sh\necho reload refused >&2\nexit 1\n")
		switchover := onPorts(cluster("pg-live", 1, 3, 2), rs.svcPorts)
		_, err = tg.Apply(ctx, switchover)
		if !errors.Is(err, dataplaneapi.ErrReloadFailed) {
			t.Fatalf("apply with a failing reload command: %v, want ErrReloadFailed", err)
		}
		// The retry finds the file already right: it must still not pass.
		for i := 0; i < 2; i++ {
			_, err = tg.Apply(ctx, switchover)
			// The real API puts the previous file back after a failed
			// reload, so the retry posts the change set again (raw) and
			// its reload fails again; an API that kept the file would
			// answer ErrNotRunning. Either way: not in sync.
			if !errors.Is(err, dataplaneapi.ErrReloadFailed) && !errors.Is(err, dataplaneapi.ErrNotRunning) {
				t.Fatalf("retry %d with the reload still failing: %v, want a failed reload or ErrNotRunning", i+1, err)
			}
		}
		if got := runningBackups(t, rs, "pg-live-replica"); got != "pg-live-1" {
			t.Fatalf("running replica backups %q while reloads fail, want pg-live-1", got)
		}

		write(t, script, string(good))
		res, err := tg.Apply(ctx, switchover)
		if err != nil {
			t.Fatalf("apply once the reload command works: %v", err)
		}
		if !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Errorf("apply once fixed: %+v, want a reload that succeeded", res)
		}
		waitUntil(t, 10*time.Second, func() bool { return runningBackups(t, rs, "pg-live-replica") == "pg-live-2" })
		// Confirmed: the next apply needs no read of the running HAProxy.
		rs.rt.reset(nil)
		if _, err := tg.Apply(ctx, switchover); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs.rt.requests() {
			if strings.Contains(r, "/stats/native") {
				t.Errorf("a confirmed target read the running HAProxy again: %v", rs.rt.requests())
			}
		}
	})
}

// apiPID finds the Data Plane API process started for dir (its -f file).
func apiPID(t *testing.T, dir string) int {
	t.Helper()
	yml := filepath.Join(dir, "dataplaneapi.yml")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), yml) {
			return pid
		}
	}
	t.Fatalf("no Data Plane API process for %s", yml)
	return 0
}

// TestRealAPILostReloadIsRetried: the API is killed (kill -9) right after
// it committed a switchover and before its delayed reload. The apply is not
// reported done; once the API is back, the next apply sees the running
// HAProxy lacks the switchover, reloads, and confirms it (issue 12 row 3).
func TestRealAPILostReloadIsRetried(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 3 * time.Second, ReloadPollInterval: 100 * time.Millisecond})
		if _, err := tg.Apply(ctx, onPorts(cluster("pg-live", 1, 3, 1), rs.svcPorts)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, func() bool { return runningBackups(t, rs, "pg-live-replica") == "pg-live-1" })
		pid := apiPID(t, rs.dir)
		killed := false
		rs.rt.reset(func(r *http.Request) *http.Response {
			// The first poll of the reload comes right after the commit,
			// within the API's reload_delay (1s): kill it there.
			if !killed && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/reloads/") {
				killed = true
				_ = syscall.Kill(pid, syscall.SIGKILL)
				waitUntil(t, 10*time.Second, func() bool { return syscall.Kill(pid, 0) != nil || isZombie(pid) })
			}
			return nil
		})
		switchover := onPorts(cluster("pg-live", 1, 3, 2), rs.svcPorts)
		_, err := tg.Apply(ctx, switchover)
		if !killed {
			t.Fatalf("the apply never polled its reload (err %v)", err)
		}
		if err == nil {
			t.Fatal("an apply whose API died before its reload was reported done")
		}
		rs.rt.reset(nil)
		if got := runningBackups(t, rs, "pg-live-replica"); got != "pg-live-1" {
			t.Fatalf("running replica backups %q: the lost reload happened after all", got)
		}

		// The API comes back (same port, same files); its reload is lost.
		u, _ := url.Parse(rs.base)
		port, _ := strconv.Atoi(u.Port())
		dpapitest.StartReal(t, dpapitest.Real{Bin: bin, Dir: rs.dir, ConfigPath: filepath.Join(rs.dir, "haproxy.cfg"), HAProxyBin: haproxyBin,
			StatsSocket: filepath.Join(rs.dir, "admin.sock"), MasterSocket: filepath.Join(rs.dir, "master.sock"),
			StateFile: filepath.Join(rs.dir, "server-state"), Port: port})
		if got := runningBackups(t, rs, "pg-live-replica"); got != "pg-live-1" {
			t.Fatalf("running replica backups %q after the API restart, want the stale pg-live-1 (the reload was lost)", got)
		}
		res, err := tg.Apply(ctx, switchover)
		if err != nil {
			t.Fatalf("apply after the API is back: %v", err)
		}
		if len(res.Changes) != 0 || !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Errorf("apply after the API is back: %d changes, reloaded %v (%s); want 0 changes and a reload that succeeded",
				len(res.Changes), res.Reloaded, res.ReloadResult)
		}
		if got := runningBackups(t, rs, "pg-live-replica"); got != "pg-live-2" {
			t.Errorf("running replica backups %q, want pg-live-2", got)
		}
	})
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

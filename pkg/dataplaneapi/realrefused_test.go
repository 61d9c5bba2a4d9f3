package dataplaneapi_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestRealAPIRefusedFileIsPutBack: a change set adds a cluster whose
// service binds an address something else holds; `haproxy -c` (the API's
// check at commit) passes, HAProxy's master refuses the file at reload and
// the old worker goes on serving. Through the real API, with the reload
// command that reports a failed reload (dpapitest.ReloadScript) and with
// one that exits 0 regardless (then the read-back of the running HAProxy
// finds it): the apply fails as a rejection (the controller then holds
// back the cluster, see TestBindFailureHoldsBackOneCluster in pkg/app), the
// file the running HAProxy serves is put back, the running HAProxy is
// untouched; the other cluster's switchover then applies alone, and the
// new cluster once its address is free (issue 12 row 6).
func TestRealAPIRefusedFileIsPutBack(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		for _, reload := range []string{"reports-failure", "exits-0"} {
			t.Run(reload, func(t *testing.T) {
				rs := startRealStack(t, bin, version)
				if reload == "exits-0" {
					write(t, filepath.Join(rs.dir, "reload.sh"), dpapitest.AsyncReloadScript(filepath.Join(rs.dir, "server-state"),
						filepath.Join(rs.dir, "admin.sock"), filepath.Join(rs.dir, "master.sock")))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 6 * time.Second, ReloadPollInterval: 100 * time.Millisecond})
				if _, err := tg.Apply(ctx, onPorts(cluster("pg-live", 1, 3, 1), rs.svcPorts)); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, 10*time.Second, func() bool { return runningBackups(t, rs, "pg-live-replica") == "pg-live-1" })

				twoPorts := []int{freePort(t), freePort(t), freePort(t), freePort(t)}
				squatter, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", twoPorts[0]))
				if err != nil {
					t.Fatal(err)
				}
				defer squatter.Close()
				switchover := onPorts(cluster("pg-live", 1, 3, 2), rs.svcPorts)
				both := append(append([]services.Service(nil), switchover...), onPorts(cluster("pg-two", 2, 2, 1), twoPorts)...)

				_, err = tg.Apply(ctx, both)
				if err == nil || !target.IsRejected(err) {
					t.Fatalf("apply with a bind HAProxy cannot take: %v, want a rejection", err)
				}
				t.Logf("refused: %v", err)
				if !strings.Contains(err.Error(), "refused") {
					t.Errorf("error %q does not say HAProxy refused the file", err)
				}
				// Nothing half-applied: the running HAProxy and the file are as before.
				if got := runningBackups(t, rs, "pg-live-replica"); got != "pg-live-1" {
					t.Errorf("running replica backups %q after the refused file, want pg-live-1", got)
				}
				text, _, err := rs.c.GetRawConfig(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(text, "pg-two") {
					t.Errorf("the refused cluster is still in the API's file:\n%s", text)
				}

				// The switchover alone goes through (a transaction: the
				// API's parsed copy must not keep the refused file).
				res, err := tg.Apply(ctx, switchover)
				if err != nil {
					t.Fatalf("the switchover alone: %v", err)
				}
				if !res.Reloaded || res.ReloadResult != "succeeded" {
					t.Errorf("the switchover alone: %+v, want a reload that succeeded", res)
				}
				if got := runningBackups(t, rs, "pg-live-replica"); got != "pg-live-2" {
					t.Errorf("running replica backups %q once the apply returned, want pg-live-2", got)
				}

				// The address is free: the new cluster applies too.
				squatter.Close()
				if _, err := tg.Apply(ctx, both); err != nil {
					t.Fatalf("apply once the address is free: %v", err)
				}
				if got := runningBackups(t, rs, "pg-two-replica"); got != "pg-two-1" {
					t.Errorf("running pg-two-replica backups %q, want pg-two-1", got)
				}
			})
		}
	})
}

// TestRealAPIRefusedTwinsFileIsPutBack is TestRealAPIRefusedFileIsPutBack
// in the twin layout, whose applies wait after a reload for the running
// HAProxy to have the servers of the file (its role changes are runtime
// flips of those servers): with a reload command that exits 0 whatever
// HAProxy's master makes of the file, that wait ran out with a plain
// error, the refused file stayed in the API, and every later apply failed
// reading the admin states of servers the running HAProxy does not have,
// never a rejection, so the controller never held the cluster back and
// every cluster was stuck. Now the apply fails as a rejection with the
// file put back, again at the next apply, and the other cluster's
// switchover then applies alone. The reload command exits 0 and has the
// master reload a second later (laterReloadScript): the apply after the
// put-back is not made in the process its reload is about to replace.
// (With a reload command that reports the failure, the twin layout took
// the put-back path already.)
func TestRealAPIRefusedTwinsFileIsPutBack(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		write(t, filepath.Join(rs.dir, "reload.sh"), laterReloadScript(filepath.Join(rs.dir, "server-state"),
			filepath.Join(rs.dir, "admin.sock"), filepath.Join(rs.dir, "master.sock"), time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 6 * time.Second, ReloadPollInterval: 100 * time.Millisecond})
		live := func(p int) []services.Service { return onPorts(twinned(t, cluster("pg-live", 1, 3, p)), rs.svcPorts) }
		if _, err := tg.Apply(ctx, live(1)); err != nil {
			t.Fatal(err)
		}
		active := func(backend string) string {
			t.Helper()
			rts, err := rs.c.GetRuntimeServers(ctx, backend)
			if err != nil {
				t.Fatal(err)
			}
			var on []string
			for _, r := range rts {
				if r.AdminState == "ready" {
					on = append(on, r.Name)
				}
			}
			sort.Strings(on)
			return strings.Join(on, " ")
		}
		const before, after = "pg-live-1.backup pg-live-2 pg-live-3", "pg-live-1 pg-live-2.backup pg-live-3"
		if got := active("pg-live-replica"); got != before {
			t.Fatalf("active replica twins %q, want %q", got, before)
		}

		twoPorts := []int{freePort(t), freePort(t), freePort(t), freePort(t)}
		squatter, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", twoPorts[0]))
		if err != nil {
			t.Fatal(err)
		}
		defer squatter.Close()
		both := append(live(2), onPorts(twinned(t, cluster("pg-two", 2, 2, 1)), twoPorts)...)

		admin := filepath.Join(rs.dir, "admin.sock")
		for _, step := range []string{"apply", "the next apply"} {
			pid := socketPID(t, admin)
			_, err = tg.Apply(ctx, both)
			if err == nil || !target.IsRejected(err) {
				t.Fatalf("%s with a bind HAProxy cannot take: %v, want a rejection", step, err)
			}
			t.Logf("%s refused: %v", step, err)
			if !strings.Contains(err.Error(), "refused") {
				t.Errorf("%s: error %q does not say HAProxy refused the file", step, err)
			}
			// The reload of the file put back replaced the running
			// process before the apply returned: the runtime changes of
			// the next apply are not made in a process about to go.
			if got := socketPID(t, admin); got == pid {
				t.Errorf("%s: the running HAProxy is still process %d, from before the file was put back", step, pid)
			}
			// Nothing half-applied: the running roles and the file are as before.
			if got := active("pg-live-replica"); got != before {
				t.Errorf("%s: active replica twins %q after the refused file, want %q", step, got, before)
			}
			text, _, err := rs.c.GetRawConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(text, "pg-two") {
				t.Errorf("%s: the refused cluster is still in the API's file:\n%s", step, text)
			}
		}

		// The switchover alone goes through: runtime flips, made in the
		// process that runs the file put back, not in the one it
		// replaced (whose state was dumped before them).
		if _, err := tg.Apply(ctx, live(2)); err != nil {
			t.Fatalf("the switchover alone: %v", err)
		}
		if got := active("pg-live-replica"); got != after {
			t.Errorf("active replica twins %q after the switchover alone, want %q", got, after)
		}

		// The address is free: the new cluster applies too.
		squatter.Close()
		if _, err := tg.Apply(ctx, both); err != nil {
			t.Fatalf("apply once the address is free: %v", err)
		}
		if got := active("pg-two-replica"); got != "pg-two-1.backup pg-two-2" {
			t.Errorf("active pg-two-replica twins %q, want pg-two-1.backup pg-two-2", got)
		}
		if got := active("pg-live-replica"); got != after {
			t.Errorf("active replica twins %q once pg-two applied, want %q", got, after)
		}
	})
}

// laterReloadScript is dpapitest.AsyncReloadScript whose master-CLI reload
// comes delay after the command exited 0 (a master slow to load a large
// file): the state is dumped at once, the running process replaced later.
func laterReloadScript(state, stats, master string, delay time.Duration) string {
	return fmt.Sprintf(`#!/bin/sh
/usr/bin/python3 - <<'PY'
import os, socket, time
def cli(path, cmd):
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(path); s.sendall(cmd.encode() + b"\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
    s.close(); return out
open(%q, "wb").write(cli(%q, "show servers state"))
if os.fork() == 0:
    os.setsid()
    for fd in (0, 1, 2):
        try: os.close(fd)
        except OSError: pass
    time.sleep(%g)
    cli(%q, "reload")
    os._exit(0)
PY
`, state, stats, delay.Seconds(), master)
}

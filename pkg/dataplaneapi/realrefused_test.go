package dataplaneapi_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
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

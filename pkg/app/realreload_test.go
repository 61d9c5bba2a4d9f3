package app

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// TestFailedReloadNeverInSyncRealAPI: real etcd, real HAProxy 2.6 and the
// real Data Plane API 2.9.x (DATAPLANEAPI_BIN) with `controller run`'s
// Serve. The API's reload command exits 1 during a switchover: the target
// is never reported in sync while the running HAProxy lacks it, and once
// the command is fixed the running HAProxy gets the switchover and the
// target is in sync again (issue 12 row 3).
func TestFailedReloadNeverInSyncRealAPI(t *testing.T) {
	apiBin := os.Getenv("DATAPLANEAPI_BIN")
	if apiBin == "" {
		t.Skip("no real Data Plane API here: set DATAPLANEAPI_BIN=/path/to/dataplaneapi (2.9.x); CI does, from ../shared/bin via the Makefile")
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: this test runs in CI, where .ci/run installs Debian's haproxy 2.6")
	}
	dir := t.TempDir()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	text := fmt.Sprintf(directInventory, pgPort, bouncerPort, restPort, freePort(t), fastChecks, freePort(t), fastChecks, freePort(t), fastChecks)
	inv, base, rt := startAPIHAProxy(t, dir, bin, apiBin, strings.ReplaceAll(text, "127.0.1.", "127.0.4."), 20*time.Second)
	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: base}}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	running := func() string { // replica backups in the running HAProxy
		rows, err := rt.ShowStat(context.Background())
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, r := range rows {
			if r.Proxy == "pg-test-replica" && r.Type == haproxy.TypeServer && r.Backup {
				out = append(out, r.Name)
			}
		}
		return strings.Join(out, ",")
	}
	eventually(t, "initial services running, in sync", func() bool {
		st := getStatus(t, addr)
		return running() == "pg-test-1" && st.Ready && st.Targets[0].InSync
	})

	script := filepath.Join(dir, "reload.sh")
	good, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	patroniKeys(t, cli, "pg-test-2", 2)
	eventually(t, "the target reports the failed reload", func() bool {
		ts := getStatus(t, addr).Targets[0]
		return ts.State == "failing" && strings.Contains(ts.LastError, "reload")
	})
	// From now on, while reloads fail, never in sync (the file may be
	// right; the running HAProxy is not).
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := getStatus(t, addr)
		ts := st.Targets[0]
		if ts.InSync || st.Ready {
			t.Fatalf("reported in sync/ready while the running HAProxy lacks the switchover (running backups %s): %+v", running(), ts)
		}
		if ts.Failures >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 failed applies within 30s: %+v", ts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := running(); got != "pg-test-1" {
		t.Fatalf("running replica backups %q while reloads fail", got)
	}

	if err := os.WriteFile(script, good, 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the running HAProxy gets the switchover once reloads work", func() bool { return running() == "pg-test-2" })
	eventually(t, "in sync and ready again", func() bool {
		st := getStatus(t, addr)
		return st.Ready && st.Targets[0].InSync
	})
}

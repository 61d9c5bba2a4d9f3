package app

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
)

// startDirectHAProxy sets up the real-HAProxy direct driver the
// direct-mode tests share: it writes inventory to dir/pigsty.yml, starts
// bin on an empty rendered configuration with its sockets and state file
// in dir (startTimeout bounds the start-up; the process is stopped when
// the test ends), and returns the inventory path, the config.Direct for
// it and a runtime client for its stats socket.
func startDirectHAProxy(t *testing.T, dir, bin, inventory string, startTimeout time.Duration) (string, config.Direct, *haproxy.Runtime) {
	t.Helper()
	inv := filepath.Join(dir, "pigsty.yml")
	if err := os.WriteFile(inv, []byte(inventory), 0o600); err != nil {
		t.Fatal(err)
	}
	d := config.Direct{ConfigPath: filepath.Join(dir, "haproxy.cfg"), StatsSocket: filepath.Join(dir, "admin.sock"),
		MasterSocket: filepath.Join(dir, "master.sock"), ServerStateFile: filepath.Join(dir, "server-state"),
		HAProxyBin: bin, NoStrictLimits: true}
	initial := haproxycfg.Render(nil, haproxycfg.Options{StatsSocket: d.StatsSocket, ServerStateFile: d.ServerStateFile, Maxconn: 2000, NoStrictLimits: true})
	if err := os.WriteFile(d.ConfigPath, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	proc, err := haproxy.StartProcess(ctx, bin, d.ConfigPath, d.MasterSocket, filepath.Join(dir, "haproxy.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(); err != nil {
			t.Errorf("stop haproxy: %v", err)
		}
	})
	return inv, d, &haproxy.Runtime{Socket: d.StatsSocket, MasterSocket: d.MasterSocket, Timeout: 2 * time.Second}
}

// startAPIHAProxy is startDirectHAProxy with the real Data Plane API
// (apiBin) in front of the HAProxy, using the reload command
// dpapitest.ReloadScript writes to dir/reload.sh; it returns the inventory
// path, the API's base URL (with credentials) and a runtime client for the
// HAProxy's own stats socket.
func startAPIHAProxy(t *testing.T, dir, bin, apiBin, inventory string, startTimeout time.Duration) (string, string, *haproxy.Runtime) {
	t.Helper()
	inv, d, rt := startDirectHAProxy(t, dir, bin, inventory, startTimeout)
	base := dpapitest.StartReal(t, dpapitest.Real{Bin: apiBin, Dir: dir, ConfigPath: d.ConfigPath, HAProxyBin: bin,
		StatsSocket: d.StatsSocket, MasterSocket: d.MasterSocket, StateFile: d.ServerStateFile})
	return inv, base, rt
}

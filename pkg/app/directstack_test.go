package app

import (
	"context"
	"os"
	"os/exec"
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
		StatsSocket: d.StatsSocket, MasterSocket: d.MasterSocket, StateFile: d.ServerStateFile, Port: freePort(t)})
	return inv, base, rt
}

// forEachDriver runs f as a subtest through the direct driver (apiBin "")
// and through each real Data Plane API whose binary the environment gives
// (DATAPLANEAPI_BIN 2.9.x, DATAPLANEAPI_V3_BIN 3.x; those subtests skip,
// saying so, where it does not), on the real HAProxy bin.
func forEachDriver(t *testing.T, f func(t *testing.T, bin, apiBin string)) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: this test runs in CI, where .ci/run installs Debian's haproxy 2.6")
	}
	for _, drv := range []struct{ name, env string }{{"direct", ""}, {"api-v2", "DATAPLANEAPI_BIN"}, {"api-v3", "DATAPLANEAPI_V3_BIN"}} {
		t.Run(drv.name, func(t *testing.T) {
			apiBin := ""
			if drv.env != "" {
				if apiBin = os.Getenv(drv.env); apiBin == "" {
					t.Skipf("no real Data Plane API here: set %s=/path/to/dataplaneapi; CI does, from ../shared/bin via the Makefile", drv.env)
				}
			}
			f(t, bin, apiBin)
		})
	}
}

// startTarget starts a real HAProxy for inventory in dir (startDirectHAProxy)
// and makes it cfg's inventory and only target: driven directly when apiBin
// is "", else through the real Data Plane API apiBin (startAPIHAProxy). It
// returns a runtime client for the HAProxy's own stats socket.
func startTarget(t *testing.T, cfg *config.Config, dir, bin, apiBin, inventory string, startTimeout time.Duration) *haproxy.Runtime {
	t.Helper()
	if apiBin == "" {
		inv, d, rt := startDirectHAProxy(t, dir, bin, inventory, startTimeout)
		cfg.Inventory, cfg.Direct = inv, []config.Direct{d}
		return rt
	}
	inv, base, rt := startAPIHAProxy(t, dir, bin, apiBin, inventory, startTimeout)
	cfg.Inventory, cfg.DataPlaneAPI = inv, []config.DataPlaneAPI{{URL: base}}
	return rt
}

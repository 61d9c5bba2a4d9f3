package dataplaneapi_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/internal/freeport"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// realAPIs are the real Data Plane API builds the driver is tested against:
// CI (the Makefile) points these variables at ../shared/bin/; elsewhere the
// tests skip, saying so.
var realAPIs = []struct{ name, env, want string }{
	{"v2", "DATAPLANEAPI_BIN", "2.9.x"},
	{"v3", "DATAPLANEAPI_V3_BIN", "3.x"},
}

// forEachRealAPI runs f once per real API binary, as a subtest named after
// its version; a version without a binary is skipped with the reason.
func forEachRealAPI(t *testing.T, f func(t *testing.T, bin string, version int)) {
	for i, api := range realAPIs {
		t.Run(api.name, func(t *testing.T) {
			bin := os.Getenv(api.env)
			if bin == "" {
				t.Skipf("no Data Plane API %s binary here; set %s=/path/to/dataplaneapi (%s) to run against the real API (CI does, from ../shared/bin via the Makefile)", api.name, api.env, api.want)
			}
			if _, err := os.Stat(bin); err != nil {
				t.Skipf("%s=%s: %v", api.env, bin, err)
			}
			if _, err := os.Stat(haproxyBin); err != nil {
				t.Skipf("%s is set but %s is missing (apt-get install haproxy)", api.env, haproxyBin)
			}
			f(t, bin, i+2)
		})
	}
}

// realStack is a real HAProxy 2.6 with a real Data Plane API in front of it,
// both started here on loopback and stopped with the test.
type realStack struct {
	base     string
	c        *dataplaneapi.Client
	svcPorts []int
	dir      string
	// rt sits between the driver's client and the real API: it counts the
	// requests and can act before one is sent (see hookTransport).
	rt *hookTransport
}

func startRealStack(t *testing.T, bin string, apiVersion int) *realStack {
	t.Helper()
	return startRealStackWith(t, bin, apiVersion, startDaemonHAProxy)
}

// startDaemonHAProxy starts HAProxy (master-worker, daemon) on cfgPath with
// its master socket at master, and stops it with the test.
func startDaemonHAProxy(t *testing.T, dir, cfgPath, master string) {
	t.Helper()
	pidFile := filepath.Join(dir, "haproxy.pid")
	if out, err := exec.Command(haproxyBin, "-W", "-D", "-S", master, "-f", cfgPath, "-p", pidFile).CombinedOutput(); err != nil {
		t.Fatalf("start haproxy: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(strings.Split(string(b), "\n")[0])); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
}

// startRealStackWith is startRealStack with HAProxy started by start.
func startRealStackWith(t *testing.T, bin string, apiVersion int, start func(t *testing.T, dir, cfgPath, master string)) *realStack {
	t.Helper()
	dir := t.TempDir()
	svcPorts := []int{freePort(t), freePort(t), freePort(t), freePort(t)}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	state := filepath.Join(dir, "server-state")
	admin := filepath.Join(dir, "admin.sock")
	master := filepath.Join(dir, "master.sock")
	write(t, cfgPath, fmt.Sprintf(`global
    maxconn 2000
    stats socket %s mode 600 level admin expose-fd listeners
    server-state-file %s

defaults
    mode tcp
    load-server-state-from-file global
    timeout connect 1s
    timeout client 1m
    timeout server 1m

backend legacy-app
    mode tcp
    server app1 127.0.9.1:8080 check
`, admin, state))
	start(t, dir, cfgPath, master)
	base := dpapitest.StartReal(t, dpapitest.Real{Bin: bin, Dir: dir, ConfigPath: cfgPath, HAProxyBin: haproxyBin,
		StatsSocket: admin, MasterSocket: master, StateFile: state, Port: freePort(t)})

	rt := &hookTransport{next: http.DefaultTransport}
	c, err := dataplaneapi.New(base, dataplaneapi.Options{Timeout: 10 * time.Second, HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitUntil(t, 30*time.Second, func() bool { _, err := c.GetVersion(ctx); return err == nil })
	if v, err := c.APIVersion(ctx); err != nil || v != apiVersion {
		t.Fatalf("detected API version %d (%v), want %d", v, err, apiVersion)
	}
	return &realStack{base: base, c: c, svcPorts: svcPorts, dir: dir, rt: rt}
}

// TestRealDataPlaneAPI runs the target scenarios against each real Data
// Plane API (2.9.x and 3.x) in front of a real HAProxy 2.6.
func TestRealDataPlaneAPI(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		testRealTarget(t, rs)
	})
}

func testRealTarget(t *testing.T, rs *realStack) {
	c, svcPorts := rs.c, rs.svcPorts
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 30 * time.Second, ReloadPollInterval: 100 * time.Millisecond})

	onLoopback := func(svcs []services.Service) []services.Service {
		for i := range svcs {
			svcs[i].IP = "127.0.0.1"
			svcs[i].Port = svcPorts[i%4]
		}
		return svcs
	}
	apply := func(name string, desired []services.Service) (res resultView) {
		t.Helper()
		r, err := tg.Apply(ctx, desired)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := tg.Diff(ctx, desired)
		if err != nil || len(again) != 0 {
			t.Fatalf("%s: not converged: %+v %v", name, again, err)
		}
		return resultView{reloaded: r.Reloaded, result: r.ReloadResult, changes: len(r.Changes), state: r.StatePreserved}
	}

	r := apply("create", onLoopback(cluster("pg-live", 1, 3, 1)))
	if !r.reloaded || r.result != "succeeded" || r.changes != 4 {
		t.Errorf("create: %+v", r)
	}
	if r.state == nil || !*r.state {
		t.Errorf("create: state preserved = %v, want true", r.state)
	}
	rs.rt.reset(nil)
	if r := apply("no change", onLoopback(cluster("pg-live", 1, 3, 1))); r.changes != 0 || r.reloaded {
		t.Errorf("no change: %+v", r)
	}
	// Read once: the apply with nothing changed and the Diff after it each
	// asked for the version only.
	if got := rs.rt.requests(); len(got) != 2 || !strings.HasSuffix(got[0], "/configuration/version") {
		t.Errorf("an apply with nothing changed (and a diff) sent %d requests, want 2 version reads: %v", len(got), got)
	}
	// Another writer gives a server an option the driver's parser does not
	// know (cookie): the switchover's PUT of that server is built on a GET
	// of it, so the option survives.
	v, err := c.GetVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := c.GetServer(ctx, "pg-live-replica", "pg-live-2")
	if err != nil {
		t.Fatal(err)
	}
	srv.Cookie = "c2"
	if _, err := c.ReplaceServer(ctx, "pg-live-replica", srv, dataplaneapi.AtVersion(v)); err != nil {
		t.Fatal(err)
	}
	if r := apply("switchover", onLoopback(cluster("pg-live", 1, 3, 2))); !r.reloaded || r.result != "succeeded" {
		t.Errorf("switchover: %+v", r)
	}
	if text, _, err := c.GetRawConfig(ctx); err != nil || !strings.Contains(text, "cookie c2") || !strings.Contains(text, "server pg-live-2 ") {
		t.Errorf("an option the driver does not manage was lost: %v\n%s", err, text)
	}
	w := onLoopback(cluster("pg-live", 1, 3, 2))
	w[1].Servers[2].Weight = 10
	if r := apply("weight", w); r.reloaded || r.changes != 1 {
		t.Errorf("weight-only: %+v (want no reload)", r)
	}
	// Force the new primary UP through the runtime endpoint (nothing
	// listens here, so its checks keep it DOWN until then).
	waitUntil(t, 30*time.Second, func() bool {
		rs, err := c.GetRuntimeServer(ctx, "pg-live-primary", "pg-live-2")
		return err == nil && rs.OperationalState == "down"
	})
	fu := onLoopback(cluster("pg-live", 1, 3, 2))
	fu[1].Servers[2].Weight = 10
	for i := range fu[0].Servers {
		fu[0].Servers[i].ForceUp = fu[0].Servers[i].Name == "pg-live-2"
	}
	res, err := tg.Apply(ctx, fu)
	if err != nil || len(res.Changes) != 1 || res.Changes[0].Kind != "force_up" || res.Reloaded {
		t.Errorf("force up: %+v %v", res, err)
	}
	// Service settings (GET of the object, whole-object PUT; on v3 fields
	// only v6 knows survive it).
	set := onLoopback(cluster("pg-live", 1, 3, 2))
	set[1].Servers[2].Weight = 10
	set[0].Maxconn = 4000
	set[1].Check = "/replica"
	if r := apply("settings", set); !r.reloaded || r.changes != 2 {
		t.Errorf("settings: %+v", r)
	}
	// The raw path with a low threshold.
	rawTarget := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{RawThreshold: 3, ReloadPollInterval: 100 * time.Millisecond})
	back := onLoopback(cluster("pg-live", 1, 3, 1))
	if res, err := rawTarget.Apply(ctx, back); err != nil || res.ReloadResult != "succeeded" {
		t.Fatalf("raw: %+v %v", res, err)
	}
	if ch, err := tg.Diff(ctx, back); err != nil || len(ch) != 0 {
		t.Fatalf("raw path did not converge: %+v %v", ch, err)
	}
	text, _, err := c.GetRawConfig(ctx)
	if err != nil || !strings.Contains(text, "backend legacy-app") || !strings.Contains(text, "server app1 127.0.9.1:8080") {
		t.Errorf("foreign backend lost: %v\n%s", err, text)
	}
}

type resultView struct {
	reloaded bool
	result   string
	changes  int
	state    *bool
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePort is freeport.Get.
func freePort(t *testing.T) int { t.Helper(); return freeport.Get(t) }

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		<-tick.C
	}
}

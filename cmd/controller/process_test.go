package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// These tests run the real controller binary as separate processes against a
// real in-process etcd and the Data Plane API double: controller HA with
// kill -9, SIGHUP reloads, and the status and diff commands.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func controllerBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgsvc-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "controller")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

const procInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.0.11: { pg_seq: 1, pg_role: primary }
        127.0.0.12: { pg_seq: 2, pg_role: replica }
        127.0.0.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars:
        pg_cluster: pg-test
%s
`

var testHosts = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

type proc struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	mu     *sync.Mutex
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startController runs the binary with a config written for it; it is
// killed by PID when the test ends.
func startController(t *testing.T, name, dir, etcdURL, apiURL, inventory string, election bool, extra ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`inventory: %s
listen: %s
etcd: {endpoints: [%s]}
dataplaneapi: [{url: %q}]
controller: {debounce: 5ms, resync_interval: 2s, stale_after: 3s}
election: {enabled: %t, ttl: 2, identity: %s}
log: {level: info, format: json}
`, inventory, addr, etcdURL, apiURL, election, name)
	path := filepath.Join(dir, name+".yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, addr: addr, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(controllerBin(t), append([]string{"run", "--config", path}, extra...)...)
	p.cmd.Stderr = lockedWriter{p.mu, p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs())
		}
	})
	return p
}

func status(p *proc) (controller.Status, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.addr + "/status")
	if err != nil {
		return controller.Status{}, err
	}
	defer resp.Body.Close()
	var st controller.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func backups(api *dpapitest.Server, backend string) string {
	for _, b := range api.Config().Backends {
		if b.Model.Name == backend {
			var out []string
			for _, s := range b.Servers {
				if s.Backup == "enabled" {
					out = append(out, s.Name)
				}
			}
			return strings.Join(out, ",")
		}
	}
	return "(no backend)"
}

// leaders returns the instances that say they lead.
func leaders(ps []*proc) []*proc {
	var out []*proc
	for _, p := range ps {
		if p.cmd.ProcessState != nil {
			continue
		}
		if st, err := status(p); err == nil && st.Leader != nil && st.Leader.IsLeader {
			out = append(out, p)
		}
	}
	return out
}

func TestControllerHA(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d controllers", n), func(t *testing.T) {
			st := newStack(t)
			srv, cli, api, dir, inv := st.srv, st.cli, st.api, st.dir, st.inv
			var ps []*proc
			for i := 1; i <= n; i++ {
				ps = append(ps, startController(t, fmt.Sprintf("c%d", i), dir, srv.ClientURL, api.URL(), inv, true))
			}
			waitUntil(t, "every controller answering and exactly one leader", 20*time.Second, func() bool {
				for _, p := range ps {
					if _, err := status(p); err != nil {
						return false // not listening yet
					}
				}
				return len(leaders(ps)) == 1
			})
			waitUntil(t, "the leader applies", 20*time.Second, func() bool { return backups(api, "pg-test-replica") == "pg-test-1" })
			old := leaders(ps)[0]
			for _, p := range ps {
				st, err := status(p)
				if err != nil {
					t.Fatal(err)
				}
				if st.Leader.Leader != old.name {
					t.Errorf("%s says the leader is %q, want %q", p.name, st.Leader.Leader, old.name)
				}
				if p != old && st.Targets[0].State != "standby" {
					t.Errorf("%s is not the leader but its target is %q", p.name, st.Targets[0].State)
				}
			}

			// kill -9 the leader: its lease is not revoked, it expires.
			if err := old.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = old.cmd.Wait()
			took := waitUntil(t, "a new leader after kill -9", 20*time.Second, func() bool {
				l := leaders(ps)
				return len(l) == 1 && l[0] != old
			})
			t.Logf("RESULT controller HA (%d instances): new leader %s %.1fs after kill -9 of %s (lease TTL 2s)", n, leaders(ps)[0].name, took.Seconds(), old.name)
			etcdtest.PutPatroni(t, cli, "pg-test", testHosts, "pg-test-3", 2)
			waitUntil(t, "the new leader applies the switchover", 20*time.Second, func() bool { return backups(api, "pg-test-replica") == "pg-test-3" })
		})
	}
}

func TestSIGHUPAndCommands(t *testing.T) {
	st := newStack(t)
	srv, cli, api, dir, inv := st.srv, st.cli, st.api, st.dir, st.inv
	p := startController(t, "c1", dir, srv.ClientURL, api.URL(), inv, false)
	waitUntil(t, "ready", 20*time.Second, func() bool { st, err := status(p); return err == nil && st.Ready })

	t.Run("status command", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"status", "--url", "http://" + p.addr}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		for _, want := range []string{"READY", "cluster pg-test", "leader pg-test-1", "pg-test-replica", "backup", "in_sync"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("status output lacks %q:\n%s", want, out.String())
			}
		}
		out.Reset()
		if code := run([]string{"status", "--url", "http://" + p.addr, "--format", "json"}, &out, &errb); code != 0 || !json.Valid(out.Bytes()) {
			t.Errorf("json status: exit %d, valid %v", code, json.Valid(out.Bytes()))
		}
		out.Reset()
		if code := run([]string{"status", "--url", "http://" + p.addr, "--cluster", "pg-test"}, &out, &errb); code != 0 ||
			!strings.Contains(out.String(), "cluster pg-test") {
			t.Errorf("status --cluster pg-test: exit %d: %s %s", code, out.String(), errb.String())
		}
		out.Reset()
		errb.Reset()
		if code := run([]string{"status", "--url", "http://" + p.addr, "--cluster", "pg-nope"}, &out, &errb); code != 1 ||
			!strings.Contains(errb.String(), "404") || !strings.Contains(errb.String(), "no cluster pg-nope in the plan") {
			t.Errorf("status --cluster pg-nope: exit %d, stderr %q; want 1 and the 404 naming pg-nope", code, errb.String())
		}
	})

	t.Run("diff command", func(t *testing.T) {
		cfg := filepath.Join(dir, "c1.yml")
		var out, errb bytes.Buffer
		if code := run([]string{"diff", "--config", cfg}, &out, &errb); code != 0 {
			t.Fatalf("in sync: exit %d, want 0: %s %s", code, out.String(), errb.String())
		}
		// Patroni moves the leader while this controller is stopped: drift.
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		defer func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }()
		etcdtest.PutPatroni(t, cli, "pg-test", testHosts, "pg-test-2", 2)
		out.Reset()
		if code := run([]string{"diff", "--config", cfg}, &out, &errb); code != 2 {
			t.Fatalf("drift: exit %d, want 2: %s %s", code, out.String(), errb.String())
		}
		if !strings.Contains(out.String(), "pg-test-replica/pg-test-2") || !strings.Contains(out.String(), "backup false -> true") {
			t.Errorf("diff output does not name the change:\n%s", out.String())
		}
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		waitUntil(t, "controller applies the move", 20*time.Second, func() bool { return backups(api, "pg-test-replica") == "pg-test-2" })
		// The old primary stays fenced (forced DOWN in write services, a
		// runtime state the file does not carry) for fence_hold after the
		// leader key moved; diff compares with the plan without the fence,
		// so it is in sync once that is over.
		waitUntil(t, "diff in sync after the move", 20*time.Second, func() bool {
			out.Reset()
			return run([]string{"diff", "--config", cfg}, &out, &errb) == 0
		})
	})

	t.Run("SIGHUP", func(t *testing.T) {
		waitUntil(t, "ready before the reload", 20*time.Second, func() bool { st, err := status(p); return err == nil && st.Ready })
		// A bad inventory is rejected and the running one kept.
		if err := os.WriteFile(inv, []byte(fmt.Sprintf(procInventory, "        pg_services: [{name: standby, port: 5435, selector: \"[? \"}]")), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Process.Signal(syscall.SIGHUP)
		waitUntil(t, "bad inventory rejected in the log", 10*time.Second, func() bool {
			return strings.Contains(p.logs(), "inventory reload rejected")
		})
		if st, err := status(p); err != nil || !st.Ready || len(st.Clusters[0].Services) != 4 || st.Inventory != inv {
			t.Fatalf("after a bad SIGHUP the running state must be kept: ready=%v services=%d err=%v", st.Ready, len(st.Clusters[0].Services), err)
		}
		// A good one adds the standby service.
		if err := os.WriteFile(inv, []byte(fmt.Sprintf(procInventory, "        pg_services: [{name: standby, port: 5435, selector: \"[]\", backup: \"[? pg_role == `primary`]\", check: /read-only-sync}]")), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Process.Signal(syscall.SIGHUP)
		waitUntil(t, "standby service created after SIGHUP", 10*time.Second, func() bool { return backups(api, "pg-test-standby") == "pg-test-2" })
	})
}

func TestDryRun(t *testing.T) {
	st := newStack(t)
	srv, api, dir, inv := st.srv, st.api, st.dir, st.inv
	p := startController(t, "dry", dir, srv.ClientURL, api.URL(), inv, false, "--dry-run")
	waitUntil(t, "dry run computed the pending changes", 20*time.Second, func() bool {
		st, err := status(p)
		return err == nil && st.DryRun && len(st.Targets) == 1 && st.Targets[0].State == "dry_run" && len(st.Targets[0].PendingChanges) == 4
	})
	waitUntil(t, "dry run logged the plan", 10*time.Second, func() bool { return strings.Contains(p.logs(), "dry run: would change") })
	if w := api.Writes(); len(w) != 0 {
		t.Errorf("a dry run wrote to the Data Plane API: %+v", w)
	}
}

func TestWatchInventory(t *testing.T) {
	st := newStack(t)
	srv, api, dir, inv := st.srv, st.api, st.dir, st.inv
	p := startController(t, "w", dir, srv.ClientURL, api.URL(), inv, false, "--watch-inventory")
	waitUntil(t, "ready", 20*time.Second, func() bool { st, err := status(p); return err == nil && st.Ready })
	if err := os.WriteFile(inv, []byte(fmt.Sprintf(procInventory, "        pg_services: [{name: standby, port: 5435, selector: \"[]\", backup: \"[? pg_role == `primary`]\", check: /read-only-sync}]")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "standby service created after the file changed (no signal)", 15*time.Second, func() bool { return backups(api, "pg-test-standby") == "pg-test-1" })
}

// stack is what every process test starts from: a real etcd holding
// pg-test's Patroni keys (leader pg-test-1), the Data Plane API double and
// the inventory file.
type stack struct {
	srv      *etcdtest.Server
	cli      *clientv3.Client
	api      *dpapitest.Server
	dir, inv string
}

func newStack(t *testing.T) stack {
	t.Helper()
	st := stack{srv: etcdtest.Start(t), api: dpapitest.NewServer(t), dir: t.TempDir()}
	st.cli = st.srv.Client(t)
	etcdtest.PutPatroni(t, st.cli, "pg-test", testHosts, "pg-test-1", 1)
	st.inv = filepath.Join(st.dir, "pigsty.yml")
	if err := os.WriteFile(st.inv, []byte(fmt.Sprintf(procInventory, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	return st
}

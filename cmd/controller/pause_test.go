package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
)

const pauseInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.2.11: { pg_seq: 1, pg_role: primary }
        127.0.2.12: { pg_seq: 2, pg_role: replica }
        127.0.2.13: { pg_seq: 3, pg_role: replica }
      vars:
        pg_cluster: pg-test
        pg_default_services:
          - { name: primary, port: %d, ip: 127.0.2.10, dest: postgres, check: /primary, selector: "[]" }
          - { name: replica, port: %d, ip: 127.0.2.10, dest: postgres, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]" }
`

// TestPausedLeaderDropsStaleApply: two controller processes (election on,
// real in-process etcd) drive one real HAProxy 2.6 with the direct driver.
// The leader is SIGSTOPped inside its apply (while `haproxy -c` checks the
// config of a switchover); the other takes over and applies two newer
// switchovers; on SIGCONT the paused one re-checks its lease before writing
// and drops its stale work: HAProxy keeps the newest state (issue 12 row 4).
func TestPausedLeaderDropsStaleApply(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: this test runs in CI, where .ci/run installs Debian's haproxy 2.6")
	}
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	hosts := []string{"127.0.2.11", "127.0.2.12", "127.0.2.13"}
	etcdtest.PutPatroni(t, cli, "pg-test", hosts, "pg-test-1", 1)
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	primaryPort, replicaPort := freePort(t), freePort(t)
	if err := os.WriteFile(inv, []byte(fmt.Sprintf(pauseInventory, primaryPort, replicaPort)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath, stats, master, state := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "admin.sock"),
		filepath.Join(dir, "master.sock"), filepath.Join(dir, "server-state")
	initial := haproxycfg.Render(nil, haproxycfg.Options{StatsSocket: stats, ServerStateFile: state, Maxconn: 2000, NoStrictLimits: true})
	if err := os.WriteFile(cfgPath, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hp, err := haproxy.StartProcess(ctx, bin, cfgPath, master, filepath.Join(dir, "haproxy.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hp.Stop() })
	rt := &haproxy.Runtime{Socket: stats, MasterSocket: master, Timeout: 2 * time.Second}
	replicaBackups := func() string {
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

	// c1's haproxy binary is a wrapper that, while HOLD exists, marks that
	// the apply reached `haproxy -c` and waits there.
	hold, mark := filepath.Join(dir, "HOLD"), filepath.Join(dir, "MARK")
	wrapper := filepath.Join(dir, "haproxy-c1")
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = -c ] && [ -e %s ]; then touch %s; while [ -e %s ]; do sleep 0.05; done; fi\nexec %s \"$@\"\n",
		hold, mark, hold, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(name, haproxyBin string) *proc {
		return startDirectController(t, name, dir, srv.ClientURL, inv, cfgPath, stats, master, state, haproxyBin)
	}
	c1 := start("c1", wrapper)
	waitUntil(t, "c1 leads and applies", 20*time.Second, func() bool {
		st, err := status(c1)
		return err == nil && st.Leader != nil && st.Leader.IsLeader && replicaBackups() == "pg-test-1"
	})
	c2 := start("c2", bin)
	waitUntil(t, "c2 is a standby", 20*time.Second, func() bool {
		st, err := status(c2)
		return err == nil && st.Leader != nil && !st.Leader.IsLeader && st.Leader.Leader == "c1"
	})

	// Switchover to pg-test-2: c1 starts applying it and is frozen inside.
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	etcdtest.PutPatroni(t, cli, "pg-test", hosts, "pg-test-2", 2)
	waitUntil(t, "c1 is inside its apply (haproxy -c)", 20*time.Second, func() bool { _, err := os.Stat(mark); return err == nil })
	reloadsBefore := strings.Count(c1.logs(), `"msg":"reloaded haproxy"`)
	if err := c1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = c1.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()

	// c2 takes over and applies; then a newer switchover to pg-test-3.
	waitUntil(t, "c2 leads and applies pg-test-2", 20*time.Second, func() bool {
		st, err := status(c2)
		return err == nil && st.Leader != nil && st.Leader.IsLeader && replicaBackups() == "pg-test-2"
	})
	etcdtest.PutPatroni(t, cli, "pg-test", hosts, "pg-test-3", 3)
	waitUntil(t, "c2 applies pg-test-3", 20*time.Second, func() bool { return replicaBackups() == "pg-test-3" })

	// c1 resumes inside its apply of pg-test-2: it must drop it.
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	if err := c1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	waitUntil(t, "c1 ends its paused apply", 20*time.Second, func() bool {
		return strings.Contains(c1.logs(), "apply dropped") || strings.Count(c1.logs(), `"msg":"reloaded haproxy"`) > reloadsBefore
	})
	// Whatever c1 did after, HAProxy keeps the newest state (c2 re-applies
	// every resync, so look at once and a little later).
	if got := replicaBackups(); got != "pg-test-3" {
		t.Errorf("after c1 resumed, replica backups %q, want pg-test-3 (the stale apply was installed)", got)
	}
	if !strings.Contains(c1.logs(), "apply dropped") {
		t.Error("c1 did not log that it dropped its apply")
	}
	if n := strings.Count(c1.logs(), `"msg":"reloaded haproxy"`); n != reloadsBefore {
		t.Errorf("c1 reloaded HAProxy %d times after it resumed", n-reloadsBefore)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	addr := freeAddr(t)
	var port int
	_, _ = fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &port)
	return port
}

// startDirectController runs the binary with the direct driver and the
// election on; it is killed by PID when the test ends.
func startDirectController(t *testing.T, name, dir, etcdURL, inventory, cfgPath, stats, master, state, haproxyBin string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`inventory: %s
listen: %s
etcd: {endpoints: [%s]}
direct: [{config_path: %s, stats_socket: %s, master_socket: %s, server_state_file: %s, haproxy_bin: %s, no_strict_limits: true}]
controller: {debounce: 5ms, resync_interval: 2s, stale_after: 3s}
election: {enabled: true, ttl: 2, identity: %s}
log: {level: info, format: json}
`, inventory, addr, etcdURL, cfgPath, stats, master, state, haproxyBin, name)
	path := filepath.Join(dir, name+".yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, addr: addr, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(controllerBin(t), "run", "--config", path)
	p.cmd.Stderr = lockedWriter{p.mu, p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs())
		}
	})
	return p
}

package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/internal/freeport"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// directInventory puts pg-test on 127.0.1.11-13 with its services on
// 127.0.1.10 (so it never collides with the demo or the end-to-end suite),
// fast health checks, and the dest as the plain postgres port.
const directInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.1.11: { pg_seq: 1, pg_role: primary }
        127.0.1.12: { pg_seq: 2, pg_role: replica }
        127.0.1.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars:
        pg_cluster: pg-test
        pg_port: %d
        pgbouncer_port: %d
        patroni_port: %d
        pg_default_services:
          - { name: primary, port: %d, ip: 127.0.1.10, dest: default, check: /primary, selector: "[]", options: "%s" }
          - { name: replica, port: %d, ip: 127.0.1.10, dest: default, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` || pg_role == ` + "`offline`" + ` ]", options: "%s" }
          - { name: offline, port: %d, ip: 127.0.1.10, dest: postgres, check: /replica, selector: "[? pg_role == ` + "`offline`" + ` || pg_offline_query ]", backup: "[? pg_role == ` + "`replica`" + ` && !pg_offline_query]", options: "%s" }
`

const fastChecks = "inter 100ms fastinter 100ms downinter 100ms rise 1 fall 1 on-marked-down shutdown-sessions maxconn 3000 maxqueue 128 weight 100"

// fakeMember is a Patroni-like member: a REST endpoint answering the health
// checks for its current role, and TCP listeners for postgres and pgbouncer
// that greet every connection with the member's name.
type fakeMember struct {
	name string
	mu   sync.Mutex
	role string // primary or replica
}

func (m *fakeMember) setRole(r string) { m.mu.Lock(); m.role = r; m.mu.Unlock() }

func (m *fakeMember) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	role := m.role
	m.mu.Unlock()
	ok := false
	switch r.URL.Path {
	case "/primary", "/":
		ok = role == "primary"
	case "/replica":
		ok = role == "replica"
	case "/read-only":
		ok = true
	}
	if ok {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s (taken by something else on this machine?): %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func startFakeMember(t *testing.T, name, addr string, pgPort, bouncerPort, restPort int, role string) *fakeMember {
	m := &fakeMember{name: name, role: role}
	rest := listen(t, fmt.Sprintf("%s:%d", addr, restPort))
	srv := &http.Server{Handler: m, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(rest) }()
	t.Cleanup(func() { srv.Close() })
	for _, p := range []int{pgPort, bouncerPort} {
		ln := listen(t, fmt.Sprintf("%s:%d", addr, p))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(name + "\n"))
				c.Close()
			}
		}()
	}
	return m
}

func freePort(t *testing.T) int { t.Helper(); return freeport.Get(t) }

// whoAnswers connects to addr and returns the member name it greets with.
func whoAnswers(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestSwitchoverThroughHAProxy: real etcd + a real HAProxy 2.6 driven by the
// direct driver. A switchover written into etcd as Patroni writes it changes
// HAProxy's live backends (read from its stats socket) and the traffic.
func TestSwitchoverThroughHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: this test runs in CI, where .ci/run installs Debian's haproxy 2.6")
	}
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	primaryPort, replicaPort, offlinePort := freePort(t), freePort(t), freePort(t)
	members := map[string]*fakeMember{}
	for i, role := range []string{"primary", "replica", "replica"} {
		name := fmt.Sprintf("pg-test-%d", i+1)
		members[name] = startFakeMember(t, name, fmt.Sprintf("127.0.1.1%d", i+1), pgPort, bouncerPort, restPort, role)
	}

	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)

	dir := t.TempDir()
	text := fmt.Sprintf(directInventory, pgPort, bouncerPort, restPort, primaryPort, fastChecks, replicaPort, fastChecks, offlinePort, fastChecks)
	inv, d, rt := startDirectHAProxy(t, dir, bin, text, 20*time.Second)

	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}}, Direct: []config.Direct{d}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	backupsLive := func(backend string) string {
		rows, err := rt.ShowStat(context.Background())
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, r := range rows {
			if r.Proxy == backend && r.Type == haproxy.TypeServer {
				out = append(out, fmt.Sprintf("%s:%t", r.Name, r.Backup))
			}
		}
		return strings.Join(out, ",")
	}
	primary := fmt.Sprintf("127.0.1.10:%d", primaryPort)

	eventually(t, "initial backends live in HAProxy", func() bool {
		return backupsLive("pg-test-replica") == "pg-test-1:true,pg-test-2:false,pg-test-3:false" &&
			backupsLive("pg-test-offline") == "pg-test-3:false,pg-test-2:true"
	})
	eventually(t, "writes reach pg-test-1", func() bool { return whoAnswers(primary) == "pg-test-1" })
	eventually(t, "target in sync", func() bool { return getStatus(t, addr).Ready })
	st := getStatus(t, addr)
	if p := st.Targets[0].StatePreserved; p == nil || !*p {
		t.Errorf("the direct target must report server state preserved across reloads: %+v", st.Targets[0])
	}

	// Switchover pg-test-1 -> pg-test-2, as Patroni does it: roles flip, then the keys.
	members["pg-test-1"].setRole("replica")
	members["pg-test-2"].setRole("primary")
	patroniKeys(t, cli, "pg-test-2", 2)
	defer func() {
		if t.Failed() {
			b, _ := json.MarshalIndent(getStatus(t, addr).Targets, "", "  ")
			t.Logf("targets at failure: %s", b)
			t.Logf("live: replica %s; offline %s", backupsLive("pg-test-replica"), backupsLive("pg-test-offline"))
		}
	}()
	eventually(t, "replica and offline backends follow the switchover", func() bool {
		return backupsLive("pg-test-replica") == "pg-test-1:false,pg-test-2:true,pg-test-3:false" &&
			backupsLive("pg-test-offline") == "pg-test-3:false,pg-test-1:true"
	})
	eventually(t, "writes reach pg-test-2", func() bool { return whoAnswers(primary) == "pg-test-2" })
	replica := fmt.Sprintf("127.0.1.10:%d", replicaPort)
	seen := map[string]int{}
	for i := 0; i < 12; i++ {
		seen[whoAnswers(replica)]++
	}
	if seen["pg-test-2"] > 0 || seen["pg-test-1"] == 0 {
		t.Errorf("replica service after switchover reached %v: want the old primary serving reads and never the new primary", seen)
	}

	// etcd goes away: nothing is torn down, status says stale.
	srv.Stop()
	eventually(t, "status reports the DCS view stale", func() bool {
		st := getStatus(t, addr)
		return !st.Ready && st.Clusters[0].Frozen != ""
	})
	if got := backupsLive("pg-test-replica"); got != "pg-test-1:false,pg-test-2:true,pg-test-3:false" {
		t.Errorf("backends changed while etcd was down: %s", got)
	}
	if whoAnswers(primary) != "pg-test-2" {
		t.Error("primary service stopped serving while etcd was down")
	}
	srv.Restart(t)
	eventually(t, "ready again after etcd is back", func() bool { return getStatus(t, addr).Ready })
}

package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// The two inventory nodes with an HAProxy + Data Plane API each: nodeA is the
// only member of pg-a (its services live on its own HAProxy), nodeB is the
// `proxy` group that pg-b and pg-c delegate to (pg_service_provider). The
// members of pg-b and pg-c (127.0.0.51-53) run no HAProxy: Pigsty puts no
// service there, and no target must be made for them.
const (
	nodeA = "127.0.0.41"
	nodeB = "127.0.0.42"
)

// sharedPort returns a port free on every host, with listeners holding it.
func sharedPort(t *testing.T, hosts ...string) (int, []net.Listener) {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		first, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{first}
		for _, h := range hosts[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if len(ls) == len(hosts) {
			return port, ls
		}
		for _, l := range ls {
			l.Close()
		}
	}
	t.Fatalf("no port free on all of %v", hosts)
	return 0, nil
}

// freeSharedPort returns a port free on every host (released again).
func freeSharedPort(t *testing.T, hosts ...string) int {
	port, ls := sharedPort(t, hosts...)
	for _, l := range ls {
		l.Close()
	}
	return port
}

// backends reads an HAProxy's backends through its Data Plane API as
// "backend: server:backup,..." lines, sorted.
func backends(ctx context.Context, c *dataplaneapi.Client) ([]string, error) {
	bs, _, err := c.GetBackends(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range bs {
		servers, _, err := c.GetServers(ctx, b.Name)
		if err != nil {
			return nil, err
		}
		var ss []string
		for _, s := range servers {
			ss = append(ss, fmt.Sprintf("%s:%t", s.Name, s.Backup == "enabled"))
		}
		out = append(out, b.Name+": "+strings.Join(ss, ","))
	}
	sort.Strings(out)
	return out, nil
}

// twoNodeScenario runs the controller with one dataplaneapi URL template
// against the two nodes' Data Plane APIs (listening on apiPort of nodeA and
// nodeB) and checks each HAProxy gets exactly its clusters, and that a
// switchover in a delegated cluster reaches only the provider node. running,
// when set, reads the backends the running HAProxy of a node serves.
func twoNodeScenario(t *testing.T, apiPort int, wait time.Duration, running func(node string) []string) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	etcdtest.PutPatroni(t, cli, "pg-a", []string{nodeA}, "pg-a-1", 1)
	etcdtest.PutPatroni(t, cli, "pg-b", []string{"127.0.0.51", "127.0.0.52"}, "pg-b-1", 1)
	etcdtest.PutPatroni(t, cli, "pg-c", []string{"127.0.0.53"}, "pg-c-1", 1)

	// pg-a and pg-b both use port p1: they never share a node.
	p1 := freeSharedPort(t, nodeA, nodeB)
	p2, p3 := freeSharedPort(t, nodeB), freeSharedPort(t, nodeB)
	for p2 == p1 || p3 == p1 || p3 == p2 {
		p2, p3 = freeSharedPort(t, nodeB), freeSharedPort(t, nodeB)
	}
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	write(t, inv, fmt.Sprintf(`all:
  children:
    proxy:
      hosts: { %[1]s: {} }
    pg-a:
      hosts: { %[2]s: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_default_services: [{ name: primary, port: %[3]d, ip: %[2]s, dest: postgres, check: /primary, selector: "[]" }]
    pg-b:
      hosts:
        127.0.0.51: { pg_seq: 1, pg_role: primary }
        127.0.0.52: { pg_seq: 2, pg_role: replica }
      vars:
        pg_cluster: pg-b
        pg_service_provider: proxy
        pg_default_services:
          - { name: primary, port: %[3]d, ip: %[1]s, dest: postgres, check: /primary, selector: "[]" }
          - { name: replica, port: %[4]d, ip: %[1]s, dest: postgres, check: /read-only, selector: "[]", backup: "[? pg_role == `+"`primary`"+` ]" }
    pg-c:
      hosts: { 127.0.0.53: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-c
        pg_service_provider: proxy
        pg_default_services: [{ name: primary, port: %[5]d, ip: %[1]s, dest: postgres, check: /primary, selector: "[]" }]
`, nodeB, nodeA, p1, p2, p3))
	pass := filepath.Join(dir, "dataplaneapi.pass")
	write(t, pass, "adminpwd\n")
	cfg := &config.Config{File: "controller.yml", Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: fmt.Sprintf("http://admin@{host}:%d", apiPort), PasswordFile: pass}}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	clients := map[string]*dataplaneapi.Client{}
	for _, n := range []string{nodeA, nodeB} {
		c, err := dataplaneapi.New(fmt.Sprintf("http://admin:adminpwd@%s:%d", n, apiPort), dataplaneapi.Options{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		clients[n] = c
	}
	want := map[string][]string{
		nodeA: {"pg-a-primary: pg-a-1:false"},
		nodeB: {"pg-b-primary: pg-b-1:false,pg-b-2:false", "pg-b-replica: pg-b-1:true,pg-b-2:false", "pg-c-primary: pg-c-1:false"},
	}
	has := func(node string) string {
		got, err := backends(ctx, clients[node])
		if err != nil {
			return err.Error()
		}
		return strings.Join(got, "\n")
	}
	waitFor(t, wait, "each HAProxy gets exactly its clusters", func() bool {
		return has(nodeA) == strings.Join(want[nodeA], "\n") && has(nodeB) == strings.Join(want[nodeB], "\n")
	}, func() string { return "node A:\n" + has(nodeA) + "\nnode B:\n" + has(nodeB) })
	waitFor(t, wait, "two targets, both in sync", func() bool {
		st := getStatus(t, addr)
		return st.Ready && len(st.Targets) == 2 && st.Targets[0].InSync && st.Targets[1].InSync
	}, func() string { return fmt.Sprintf("%+v", getStatus(t, addr).Targets) })
	st := getStatus(t, addr)
	for i, n := range []string{nodeA, nodeB} {
		if !strings.Contains(st.Targets[i].Name, n) || strings.Contains(st.Targets[i].Name, "adminpwd") {
			t.Errorf("target %d is %q, want the API on %s without its password", i, st.Targets[i].Name, n)
		}
	}
	if running != nil {
		waitFor(t, wait, "the running HAProxies serve exactly their clusters", func() bool {
			return strings.Join(running(nodeA), " ") == "pg-a-primary" &&
				strings.Join(running(nodeB), " ") == "pg-b-primary pg-b-replica pg-c-primary"
		}, func() string { return fmt.Sprintf("node A %v, node B %v", running(nodeA), running(nodeB)) })
	}

	// A switchover in pg-b changes the provider node only.
	versionA, err := clients[nodeA].GetVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	etcdtest.PutPatroni(t, cli, "pg-b", []string{"127.0.0.51", "127.0.0.52"}, "pg-b-2", 2)
	want[nodeB][1] = "pg-b-replica: pg-b-1:false,pg-b-2:true"
	waitFor(t, wait, "the provider node follows pg-b's switchover", func() bool {
		return has(nodeB) == strings.Join(want[nodeB], "\n")
	}, func() string { return has(nodeB) })
	if v, err := clients[nodeA].GetVersion(ctx); err != nil || v != versionA {
		t.Errorf("node A's configuration changed (version %d -> %d, %v) for a switchover of a cluster it does not carry", versionA, v, err)
	}
	if got := has(nodeA); got != strings.Join(want[nodeA], "\n") {
		t.Errorf("node A after pg-b's switchover:\n%s", got)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; now:\n%s", what, d, state())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInventoryTargetsTwoDataPlaneAPIs: one dataplaneapi URL template drives
// two Data Plane API doubles (checked against the real 2.9.9 exchanges), one
// per node that Pigsty's placement gives services.
// TestInventoryTargetsTwoRealHAProxies runs the same against real ones.
func TestInventoryTargetsTwoDataPlaneAPIs(t *testing.T) {
	port, ls := sharedPort(t, nodeA, nodeB)
	for _, l := range ls {
		dpapitest.NewServer(t, dpapitest.WithListener(l))
	}
	twoNodeScenario(t, port, 15*time.Second, nil)
}

const haproxyBin = "/usr/sbin/haproxy"

// TestInventoryTargetsTwoRealHAProxies: the same scenario against two real
// HAProxy 2.6 + Data Plane API 2.9 pairs on 127.0.0.41 and 127.0.0.42; the
// running HAProxies' backends are read from their stats sockets.
func TestInventoryTargetsTwoRealHAProxies(t *testing.T) {
	for _, v := range []struct{ name, env, version string }{
		{"v2", "DATAPLANEAPI_BIN", "2.9.x"},
		{"v3", "DATAPLANEAPI_V3_BIN", "3.x"},
	} {
		t.Run(v.name, func(t *testing.T) {
			bin := os.Getenv(v.env)
			if bin == "" {
				t.Skipf("no Data Plane API %s binary here; `make unit` sets %s from ../shared/bin, or set %s=/path/to/dataplaneapi to run against two real ones; TestInventoryTargetsTwoDataPlaneAPIs runs the same scenario against the double", v.version, v.env, v.env)
			}
			if _, err := os.Stat(haproxyBin); err != nil {
				t.Skipf("%s is set but %s is missing (apt-get install haproxy)", v.env, haproxyBin)
			}
			twoRealHAProxies(t, bin)
		})
	}
}

func twoRealHAProxies(t *testing.T, bin string) {
	port := freeSharedPort(t, nodeA, nodeB)
	sockets := map[string]string{}
	for _, node := range []string{nodeA, nodeB} {
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "haproxy.cfg")
		state := filepath.Join(dir, "server-state")
		admin := filepath.Join(dir, "admin.sock")
		master := filepath.Join(dir, "master.sock")
		sockets[node] = admin
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
`, admin, state))
		pidFile := filepath.Join(dir, "haproxy.pid")
		if out, err := exec.Command(haproxyBin, "-W", "-D", "-S", master, "-f", cfgPath, "-p", pidFile).CombinedOutput(); err != nil {
			t.Fatalf("start haproxy for %s: %v\n%s", node, err, out)
		}
		t.Cleanup(func() {
			if b, err := os.ReadFile(pidFile); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(strings.Split(string(b), "\n")[0])); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		})
		dpapitest.StartReal(t, dpapitest.Real{Bin: bin, Dir: dir, ConfigPath: cfgPath, HAProxyBin: haproxyBin,
			StatsSocket: admin, MasterSocket: master, StateFile: state, Host: node, Port: port})
	}
	running := func(node string) []string {
		c, err := net.DialTimeout("unix", sockets[node], time.Second)
		if err != nil {
			return []string{err.Error()}
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("show backend\n")); err != nil {
			return []string{err.Error()}
		}
		b, _ := io.ReadAll(c)
		var out []string
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") && line != "MASTER" {
				out = append(out, line)
			}
		}
		sort.Strings(out)
		return out
	}
	twoNodeScenario(t, port, 60*time.Second, running)
}

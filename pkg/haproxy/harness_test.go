package haproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// testDefaultServer makes checks fast so tests converge in well under a second.
const testDefaultServer = "inter 100ms fastinter 100ms downinter 100ms rise 2 fall 2 on-marked-down shutdown-sessions maxconn 3000 maxqueue 128 weight 100"

func requireHAProxy(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr == nil {
			return "/usr/sbin/haproxy"
		}
		t.Skip("haproxy binary not found: these tests run where HAProxy 2.6 is installed (CI: apt-get install haproxy)")
	}
	return bin
}

// member is a fake cluster member: a TCP listener standing for pgbouncer
// that counts accepted connections, and a Patroni REST double answering
// OPTIONS on the role endpoints with 200/503 for its current role.
type member struct {
	name     string
	ip       string
	port     int
	restPort int
	role     atomic.Value // "primary", "replica"
	accepted atomic.Int64
	ln       net.Listener
	srv      *http.Server
}

func newMember(t testing.TB, name, ip, role string) *member {
	t.Helper()
	m := &member{name: name, ip: ip}
	m.role.Store(role)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("member %s: %v", name, err)
	}
	m.ln = ln
	m.port = ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.accepted.Add(1)
			_, _ = c.Write([]byte(name + "\n"))
			_ = c.Close()
		}
	}()
	rln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("member %s rest: %v", name, err)
	}
	m.restPort = rln.Addr().(*net.TCPAddr).Port
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serveREST), ReadHeaderTimeout: time.Second}
	go func() { _ = m.srv.Serve(rln) }()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = m.srv.Close()
	})
	return m
}

func (m *member) setRole(r string) { m.role.Store(r) }

func (m *member) serveREST(w http.ResponseWriter, r *http.Request) {
	role := m.role.Load().(string)
	ok := false
	switch r.URL.Path {
	case "/primary", "/leader", "/read-write":
		ok = role == "primary"
	case "/replica":
		ok = role == "replica"
	case "/read-only", "/":
		ok = role == "primary" || role == "replica"
	}
	if ok {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

func (m *member) server(weight int, backup bool) services.Server {
	return services.Server{Name: m.name, Address: m.ip, Port: m.port, CheckPort: m.restPort, Weight: weight, Backup: backup, Selected: !backup}
}

// freePort returns a port free on ip right now.
func freePort(t testing.TB, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// rig is one running HAProxy with a Direct driver on it.
type rig struct {
	dir    string
	opts   Options
	proc   *Process
	direct *Direct
	rt     *Runtime
}

// startRig writes a config with no services, starts HAProxy in
// master-worker mode and stops it by PID at cleanup.
func startRig(t testing.TB) *rig {
	t.Helper()
	dir, opts := rigFiles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := StartProcess(ctx, opts.HAProxyBin, opts.ConfigPath, opts.MasterSocket, filepath.Join(dir, "haproxy.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop haproxy: %v", err)
		}
	})
	r := &rig{dir: dir, opts: opts, proc: p}
	r.newDirect(t)
	return r
}

// newDirect makes r's driver for r.opts.
func (r *rig) newDirect(t testing.TB) {
	t.Helper()
	var log = zaptest.NewLogger(t)
	if _, ok := t.(*testing.B); ok {
		log = nil
	}
	d := NewDirect(r.opts, log)
	// Before HAProxy stops (cleanups run last first): the state file
	// refresh still wanted is made, none after the test.
	t.Cleanup(func() { _ = d.Close() })
	r.direct, r.rt = d, d.Runtime()
}

// rigFiles makes a rig's directory (removed at cleanup) and options, and
// writes a config with no services there.
func rigFiles(t testing.TB) (string, Options) {
	t.Helper()
	bin := requireHAProxy(t)
	// UNIX socket paths are limited to 108 bytes: t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "hx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts := Options{
		ConfigPath:      filepath.Join(dir, "haproxy.cfg"),
		StatsSocket:     filepath.Join(dir, "stats.sock"),
		MasterSocket:    filepath.Join(dir, "master.sock"),
		ServerStateFile: filepath.Join(dir, "server-state"),
		HAProxyBin:      bin,
		Maxconn:         2000,
		NoStrictLimits:  true,
		ReloadTimeout:   15 * time.Second,
	}
	cfg := haproxycfg.Render(nil, haproxycfg.Options{StatsSocket: opts.StatsSocket, ServerStateFile: opts.ServerStateFile, Maxconn: opts.Maxconn, NoStrictLimits: true})
	if err := os.WriteFile(opts.ConfigPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, opts
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %s", what, timeout, msg)
		}
		<-tick.C
	}
}

func (r *rig) stat(t testing.TB) map[string]StatRow {
	t.Helper()
	rows, err := r.rt.ShowStat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]StatRow{}
	for _, row := range rows {
		out[row.Proxy+"/"+row.Name] = row
	}
	return out
}

func (r *rig) reloads(t testing.TB) int {
	t.Helper()
	p, err := r.rt.ShowProc(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p.Reloads
}

// waitStatus waits until each backend/server has the wanted up-ness.
func (r *rig) waitStatus(t testing.TB, want map[string]bool) {
	t.Helper()
	eventually(t, 10*time.Second, "server states", func() string {
		st := r.stat(t)
		for k, up := range want {
			row, ok := st[k]
			if !ok {
				return k + " missing"
			}
			if row.Up() != up || (up && row.Status != "UP") {
				return fmt.Sprintf("%s is %q (%s)", k, row.Status, row.CheckStatus)
			}
		}
		return ""
	})
}

// dialer connects through a frontend until stopped, counting failures; the
// members count which of them accepted.
type dialer struct {
	addr   string
	stop   chan struct{}
	wg     sync.WaitGroup
	ok     atomic.Int64
	failed atomic.Int64
	once   sync.Once
}

func startDialer(addr string) *dialer {
	d := &dialer{addr: addr, stop: make(chan struct{})}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		buf := make([]byte, 64)
		for {
			select {
			case <-d.stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				d.failed.Add(1)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(time.Second))
			if n, _ := c.Read(buf); n > 0 {
				d.ok.Add(1)
			} else {
				d.failed.Add(1)
			}
			_ = c.Close()
		}
	}()
	return d
}

// Stop ends dialing and waits for the goroutine; it may be called twice.
func (d *dialer) Stop() { d.once.Do(func() { close(d.stop) }); d.wg.Wait() }

func addr(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

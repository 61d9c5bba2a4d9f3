package dpapitest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Real describes a running HAProxy (master-worker, admin stats socket,
// server-state file) for a real Data Plane API to manage.
type Real struct {
	// Bin is the Data Plane API binary: 2.9.x (DATAPLANEAPI_BIN) or 3.x
	// (DATAPLANEAPI_V3_BIN); both read this configuration format.
	Bin string
	// Dir holds the API's config, reload script, transactions and log.
	Dir          string
	ConfigPath   string // the haproxy.cfg HAProxy runs (the API rewrites it)
	HAProxyBin   string
	StatsSocket  string
	MasterSocket string
	StateFile    string
	// Host and Port the API listens on (127.0.0.1 and a free port when unset).
	Host string
	Port int
}

// StartReal starts the real Data Plane API in front of an HAProxy that is
// already running, with the reload script dataplaneapi-v2.md asks for: dump
// `show servers state` into the state file, then reload through the 2.6
// master socket. It returns the API's base URL with its credentials and
// stops the API (by PID) when the test ends.
func StartReal(t testing.TB, r Real) string {
	t.Helper()
	host, port := r.Host, r.Port
	if host == "" {
		host = "127.0.0.1"
	}
	if port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	reload := filepath.Join(r.Dir, "reload.sh")
	script := ReloadScript(r.StateFile, r.StatsSocket, r.MasterSocket)
	if err := os.WriteFile(reload, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	yml := filepath.Join(r.Dir, "dataplaneapi.yml")
	cfg := fmt.Sprintf(`config_version: 2
name: pgsvc-test
dataplaneapi:
  host: %s
  port: %d
  user:
    - name: admin
      password: adminpwd
      insecure: true
  transaction:
    transaction_dir: %s
haproxy:
  config_file: %s
  haproxy_bin: %s
  reload:
    reload_delay: 1
    reload_strategy: custom
    reload_cmd: %s
    restart_cmd: %s
`, host, port, filepath.Join(r.Dir, "txn"), r.ConfigPath, r.HAProxyBin, reload, reload)
	if err := os.WriteFile(yml, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(r.Dir, "dataplaneapi.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	api := exec.Command(r.Bin, "-f", yml)
	api.Dir = r.Dir
	api.Stdout, api.Stderr = logf, logf
	if err := api.Start(); err != nil {
		t.Fatalf("start dataplaneapi: %v", err)
	}
	t.Cleanup(func() {
		_ = api.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = api.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = api.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("dataplaneapi log:\n%s", b)
		}
	})
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	base := "http://admin:adminpwd@" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, v := range []string{"v2", "v3"} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/"+v+"/services/haproxy/configuration/version", nil)
			req.SetBasicAuth("admin", "adminpwd")
			var resp *http.Response
			resp, err = http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return base
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dataplaneapi did not answer within 30s (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ReloadScript is the Data Plane API's reload command for HAProxy 2.6: it
// dumps `show servers state` into state, then asks the master socket to
// reload, and waits for the master to finish it: 2.6's master answers
// "reload" with nothing and reloads asynchronously, so the script reads
// the master's reload counters (`show proc`: "<reloads> [failed: N]", N
// counting failures since the last success) and exits 1 when HAProxy
// refused the new file (e.g. a bind that fails, which `haproxy -c` cannot
// see): the API then reports the reload failed and puts its previous file
// back. Python because socat may be missing; /usr/bin/python3 comes with
// Patroni.
func ReloadScript(state, stats, master string) string {
	return fmt.Sprintf(`#!/bin/sh
/usr/bin/python3 - <<'PY'
import socket, sys, time
`+pyCLI+`def master_reloads():
    for line in cli(%[3]q, "show proc;quit").decode().splitlines():
        f = line.replace("[failed:", "").replace("]", "").split()
        if len(f) >= 4 and f[1] == "master":
            return int(f[2]), int(f[3])
    raise RuntimeError("no master in show proc")
open(%[1]q, "wb").write(cli(%[2]q, "show servers state"))
before = master_reloads()[0]
cli(%[3]q, "reload")
deadline = time.time() + 20
while time.time() < deadline:
    time.sleep(0.05)
    try:
        reloads, failed = master_reloads()
    except Exception:
        continue  # the master is re-executing
    if reloads > before:
        if failed > 0:
            sys.stderr.write("HAProxy refused the new configuration: reload failed, the previous workers keep serving\n")
            sys.exit(1)
        sys.exit(0)
sys.stderr.write("HAProxy's master did not finish the reload within 20 s\n")
sys.exit(1)
PY
`, state, stats, master)
}

// AsyncReloadScript is ReloadScript without the wait: like Debian's
// `systemctl reload haproxy`, it exits 0 as soon as the master was asked to
// reload, whether or not HAProxy then loads the file.
func AsyncReloadScript(state, stats, master string) string {
	return fmt.Sprintf(`#!/bin/sh
/usr/bin/python3 - <<'PY'
import socket
`+pyCLI+`open(%q, "wb").write(cli(%q, "show servers state"))
cli(%q, "reload")
PY
`, state, stats, master)
}

// DelayedReloadScript is AsyncReloadScript with the master asked to
// reload delay after the script exited 0 (a master slow to load a large
// file, while the old worker keeps answering the runtime socket): a
// detached child asks it. The state is dumped before the script exits.
func DelayedReloadScript(state, stats, master string, delay time.Duration) string {
	return fmt.Sprintf(`#!/bin/sh
/usr/bin/python3 - <<'PY'
import os, socket, time
`+pyCLI+`open(%q, "wb").write(cli(%q, "show servers state"))
if os.fork() == 0:
    os.setsid()
    for fd in (0, 1, 2):
        try: os.close(fd)
        except Exception: pass
    time.sleep(%f)
    try: cli(%q, "reload")
    except Exception: pass
    os._exit(0)
PY
`, state, stats, delay.Seconds(), master)
}

// pyCLI is a Python function that sends one command to an HAProxy socket
// and returns its whole answer.
const pyCLI = `def cli(path, cmd):
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(path); s.sendall(cmd.encode() + b"\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
    s.close(); return out
`

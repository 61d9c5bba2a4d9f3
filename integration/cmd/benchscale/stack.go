package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/internal/freeport"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// freePort returns a loopback port nothing listens on, below the kernel's
// ephemeral range, never the same twice (freeport.Fresh).
func freePort() (int, error) { return freeport.Fresh() }

// child is a process this command started; stop ends it by PID.
type child struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func startChild(name, dir string, bin string, args ...string) (*child, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to 15 s, then SIGKILL.
func (c *child) stop() {
	if c == nil {
		return
	}
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	c.log.Close()
}

// etcdServer is a real etcd: the Debian binary as a child process, or the
// embedded server (go.etcd.io/etcd/server/v3/embed) in this process.
type etcdServer struct {
	url   string
	proc  *child
	embed *embed.Etcd
}

func startEtcd(ctx context.Context, bin, dir string) (*etcdServer, error) {
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &etcdServer{url: fmt.Sprintf("http://127.0.0.1:%d", cport)}
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	data := filepath.Join(dir, "etcd")
	if bin == "embed" {
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir = "bench", data
		cu, _ := url.Parse(s.url)
		pu, _ := url.Parse(peer)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = "bench=" + peer
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.LogLevel = "error"
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			e.Close()
			return nil, errors.New("embedded etcd not ready within 30s")
		}
		s.embed = e
		return s, nil
	}
	s.proc, err = startChild("etcd", dir, bin, "--name", "bench", "--data-dir", data,
		"--listen-client-urls", s.url, "--advertise-client-urls", s.url,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench="+peer)
	if err != nil {
		return nil, err
	}
	cli, err := s.client()
	if err != nil {
		s.stop()
		return nil, err
	}
	defer cli.Close()
	err = waitFor(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		if s.proc.exited() {
			return false, fmt.Errorf("etcd exited (see %s)", s.proc.log.Name())
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Get(cctx, "/")
		return err == nil, nil
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return s, nil
}

func (s *etcdServer) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{s.url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallSendMsgSize: 64 << 20, MaxCallRecvMsgSize: 256 << 20})
}

func (s *etcdServer) stop() {
	if s == nil {
		return
	}
	if s.embed != nil {
		s.embed.Close()
	}
	s.proc.stop()
}

// waitFor polls cond every interval until it is true, it fails, or d ends.
func waitFor(ctx context.Context, d, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}

// dataplaneAPI starts the real Data Plane API in front of the running
// HAProxy, as pkg/dataplaneapi/dpapitest.StartReal does for the tests: the
// reload script dumps `show servers state` into the state file, then reloads
// through the 2.6 master socket. version is "v2" or "v3" (its URL prefix).
func startDataplaneAPI(ctx context.Context, bin, version, dir, cfgPath, haproxyBin, stats, master, state string, reloadDelay int) (*child, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	reload := filepath.Join(dir, "reload.sh")
	script := dpapitest.ReloadScript(state, stats, master)
	if err := os.WriteFile(reload, []byte(script), 0o755); err != nil {
		return nil, "", err
	}
	yml := filepath.Join(dir, "dataplaneapi.yml")
	cfg := fmt.Sprintf(`config_version: 2
name: pgsvc-bench
dataplaneapi:
  host: 127.0.0.1
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
    reload_delay: %d
    reload_strategy: custom
    reload_cmd: %s
    restart_cmd: %s
`, port, filepath.Join(dir, "txn"), cfgPath, haproxyBin, reloadDelay, reload, reload)
	if err := os.WriteFile(yml, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	c, err := startChild("dataplaneapi", dir, bin, "-f", yml)
	if err != nil {
		return nil, "", err
	}
	probe := fmt.Sprintf("http://127.0.0.1:%d/%s/services/haproxy/configuration/version", port, version)
	err = waitFor(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if c.exited() {
			return false, fmt.Errorf("dataplaneapi exited (see %s)", c.log.Name())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, probe, nil)
		req.SetBasicAuth("admin", "adminpwd")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		c.stop()
		return nil, "", fmt.Errorf("dataplaneapi %s: %s: %w", bin, probe, err)
	}
	return c, fmt.Sprintf("http://127.0.0.1:%d", port), nil
}

// procStatus returns VmRSS and VmHWM (peak) of pid in MB.
func procStatus(pid int) (rss, hwm float64) {
	mb := procStatusMB(pid, "VmRSS:", "VmHWM:")
	return mb[0], mb[1]
}

// procRSS returns VmRSS of pid and its file-backed part (RssFile) in MB.
func procRSS(pid int) (rss, file float64) {
	mb := procStatusMB(pid, "VmRSS:", "RssFile:")
	return mb[0], mb[1]
}

// procStatusMB returns the named kB fields of pid's /proc status in MB, in
// the order asked (0 for one it lacks, or all when it cannot be read).
func procStatusMB(pid int, fields ...string) []float64 {
	out := make([]float64, len(fields))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		for i, name := range fields {
			if f[0] == name {
				kb, _ := strconv.ParseFloat(f[1], 64)
				out[i] = kb / 1024
			}
		}
	}
	return out
}

// procCPU returns the CPU time (user + system) pid has used.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// After the command: state is field 3, utime 14, stime 15 (1-based).
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// raiseFileLimit lifts this process's soft RLIMIT_NOFILE to its hard limit;
// HAProxy inherits it (at 1,000 clusters it wants ~42k descriptors: with a
// lower hard limit it runs with `no strict-limits`).
func raiseFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return r.Cur, err
	}
	return r.Cur, nil
}

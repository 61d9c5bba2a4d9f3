package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdBin is the etcd binary StartProcess runs (Debian's etcd-server,
// installed by `make deps`); ETCD_BIN overrides it.
func EtcdBin() string {
	if b := os.Getenv("ETCD_BIN"); b != "" {
		return b
	}
	return "/usr/bin/etcd"
}

// Process is a real etcd server process on free loopback ports, so a test
// can freeze it (SIGSTOP) as an operator or a stalled disk would.
type Process struct {
	ClientURL string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// StartProcess runs EtcdBin in a temporary directory; it is killed when the
// test ends. The test is skipped (saying why) when the binary is missing.
func StartProcess(tb testing.TB) *Process {
	tb.Helper()
	bin := EtcdBin()
	if _, err := os.Stat(bin); err != nil {
		tb.Skipf("no etcd binary at %s (set ETCD_BIN; `make deps` installs Debian's etcd-server): %v", bin, err)
	}
	dir := tb.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(tb))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(tb))
	cmd := exec.Command(bin, "--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer, "--log-level", "error")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Process{ClientURL: client, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.exited
	})
	cli := p.Client(tb)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return p
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			tb.Fatalf("etcd process not serving within 20s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the etcd process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Freeze stops the process (SIGSTOP): connections stay open, nothing answers.
func (p *Process) Freeze(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatal(err)
	}
}

// Thaw resumes a frozen process (SIGCONT).
func (p *Process) Thaw(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		tb.Fatal(err)
	}
}

// Client returns a client of the process, closed when the test ends.
func (p *Process) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}
